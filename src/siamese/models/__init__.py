"""The trained model (the embedder on a backbone), its losses and miners, and the Lightning module that trains it."""
