"""Serving a trained model: the HTTP API and the local web page."""
