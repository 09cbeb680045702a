"""Using a trained checkpoint: embedding images, a gallery index, search and identify, export."""
