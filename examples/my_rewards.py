"""A reward file for `rewards: ["file:examples/my_rewards.py:brevity"]` (TRL's signature)."""


def brevity(prompts, completions, **row_fields):
    """Prefer completions of about five words."""
    return [-abs(len(c.split()) - 5) for c in completions]
