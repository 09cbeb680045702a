"""Metrics: of scored pairs, of every pair of a set of images, retrieval, and the k-NN behind them."""
