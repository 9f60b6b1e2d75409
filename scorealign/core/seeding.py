"""Every random draw of a run, from one seed: named streams through ``numpy.random.SeedSequence``.

``generator(seed, "rollout", step)`` is the torch generator of the sampling uniforms of ``step``;
``python_rng(seed, "prompt_order", epoch)`` the Python RNG that shuffles the prompts of an epoch.
The stream name and the integers after it (step, epoch, rank, row index...) are hashed together
with the seed, so two streams never share draws (the hand-made ``seed * 1_000_003 + i`` formulas
they replace could collide), and a draw depends only on its own coordinates: the same step of a
resumed run, or the same prompt row in a larger batch, gets the same numbers.
"""

from __future__ import annotations

import random
import zlib

import numpy as np
import torch

STREAMS = (
    "prompt_order",      # train: permutation of the prompts (or offline groups) per pass, by epoch
    "rollout",           # train: sampling uniforms of a step's rollout, by step
    "replay",            # train: draws from the replay buffer, by step and rank
    "minibatch",         # train: shuffle of a batch into minibatches, by step and epoch
    "heldout",           # eval_every: the fixed sampling uniforms of each eval prompt, by index
    "sample_rows",       # scorealign sample / eval commands: uniforms of one prompt row, by index
    "reward_model",      # scorealign reward-model: train/eval split and epoch order
)


def seed_for(seed: int, stream: str, *ids: int) -> int:
    """A 63-bit seed for the draws of ``stream`` at coordinates ``ids`` of a run seeded ``seed``."""
    if stream not in STREAMS:
        raise ValueError(f"unknown random stream {stream!r} (declare it in seeding.STREAMS)")
    entropy = [seed % 2**64, zlib.crc32(stream.encode())] + [i % 2**64 for i in ids]
    state = np.random.SeedSequence(entropy).generate_state(2, dtype=np.uint32)
    return int(state[0]) << 31 ^ int(state[1])


def generator(seed: int, stream: str, *ids: int) -> torch.Generator:
    """A CPU torch generator for ``stream`` at ``ids`` (draw on CPU, then move: same numbers on
    every device)."""
    return torch.Generator().manual_seed(seed_for(seed, stream, *ids))


def python_rng(seed: int, stream: str, *ids: int) -> random.Random:
    """A ``random.Random`` for ``stream`` at ``ids``."""
    return random.Random(seed_for(seed, stream, *ids))
