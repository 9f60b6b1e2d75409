"""The training loop (``loop.train``), its config and its batch sources."""

from .config import TrainConfig
from .loop import train

__all__ = ["TrainConfig", "train"]
