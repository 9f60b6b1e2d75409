"""Algorithms: pure losses and estimators (``losses``), the registry (``ALGORITHMS``), PPO's critic."""

from . import losses
from .registry import ALGORITHMS, Algorithm

__all__ = ["ALGORITHMS", "Algorithm", "losses"]
