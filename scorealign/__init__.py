"""scorealign: align language models on sequence-level scores, in any language."""

__version__ = "0.1.0"
