"""Reward sources: the ``RewardSource`` protocol (TRL's reward-function signature), callables,
Python files (sandboxed), reward models, weighted sums, and the language-fidelity reward.

The names below are loaded on first use (PEP 562), so that ``python -m
scorealign.rewards.sandbox`` (the reward worker) starts without importing torch.
"""

__all__ = ["CallableReward", "FileReward", "ModelReward", "RewardSource", "WeightedSum",
           "reward_details", "reward_from_spec", "rewards_from_specs", "score_batch", "score_rows"]


def __getattr__(name: str):
    if name in __all__:
        from . import sources

        return getattr(sources, name)
    raise AttributeError(f"module 'scorealign.rewards' has no attribute {name!r}")
