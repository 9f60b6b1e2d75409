"""Foundations every layer uses: the batch type, config parsing, checkpoints, model loading, metrics, tiny models."""
