"""Siamese networks for image similarity, built on PyTorch Lightning and Hydra."""

__version__ = "0.1.0"
