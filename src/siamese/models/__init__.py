"""Backbones, the twin network, the contrastive loss and the Lightning module."""
