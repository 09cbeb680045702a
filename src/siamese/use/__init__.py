"""Using a trained checkpoint: loading it, embedding files, a gallery index, search and identify, export, prediction."""
