"""Image sources, splits, pair sampling, transforms and the Lightning data module."""
