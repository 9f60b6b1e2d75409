"""Gold-labelled preference pairs with label noise, for the proxy (Bradley-Terry) reward model.

Pairs are TRL ``prompt/chosen/rejected`` rows plus ``id`` and ``label_flipped`` (True when label
noise swapped chosen and rejected, so that the pair now prefers the lower gold score). Pairs whose
two completions have the same gold score are never made: the gold judge has no preference there.
"""

from __future__ import annotations

import random

from .gold import gold_score
from .prompts import Row
from .responses import (
    COMPLETION_PREFIX,
    compliance,
    drift_language,
    refusal,
    right_response,
    wrong_response,
)


def candidate_responses(row: Row, rng: random.Random) -> list[str]:
    """Completions of every quality for ``row``: right / wrong / refusal / compliance, each in the
    row's language and in a drifted language."""
    own, other = row["language"], drift_language(row["language"], rng)
    candidates = []
    for language in (own, other):
        candidates += [right_response(row, language, rng), refusal(language, rng)]
        if row["kind"] == "harmful":
            candidates.append(compliance(language, rng))
        else:
            candidates.append(wrong_response(row, language, rng))
    return [COMPLETION_PREFIX + c for c in candidates]


def _pair(row: Row, first: str, second: str, rng: random.Random, label_noise: float) -> dict:
    """The TRL pair of two completions with different gold scores, flipped w.p. ``label_noise``."""
    if gold_score(row, first) < gold_score(row, second):
        first, second = second, first
    flipped = rng.random() < label_noise
    chosen, rejected = (second, first) if flipped else (first, second)
    return {"prompt": row["prompt"], "chosen": chosen, "rejected": rejected, "id": row["id"],
            "label_flipped": flipped}


def preference_pairs(rows: list[Row], seed: int = 0, n: int = 512,
                     label_noise: float = 0.1) -> list[dict]:
    """``n`` pairs: a random row, two of its candidate responses with different gold scores."""
    if not rows:
        raise ValueError("preference_pairs: no rows")
    rng = random.Random(seed)
    pairs = []
    while len(pairs) < n:
        row = rng.choice(rows)
        candidates = candidate_responses(row, rng)
        first, second = rng.sample(candidates, 2)
        if gold_score(row, first) != gold_score(row, second):
            pairs.append(_pair(row, first, second, rng, label_noise))
    return pairs


def label_pairs(rows: list[Row], completions_per_row: list[list[str]], seed: int = 0,
                label_noise: float = 0.1, pairs_per_row: int = 1) -> list[dict]:
    """Pairs from given completions (e.g. k policy samples per row): per row, up to
    ``pairs_per_row`` random pairs of completions whose gold scores differ."""
    if len(rows) != len(completions_per_row):
        raise ValueError(f"label_pairs: {len(rows)} rows but {len(completions_per_row)} "
                         "completion lists")
    rng = random.Random(seed)
    pairs = []
    for row, completions in zip(rows, completions_per_row):
        scores = [gold_score(row, c) for c in completions]
        differing = [(i, j) for i in range(len(completions)) for j in range(i + 1, len(completions))
                     if scores[i] != scores[j]]
        for i, j in rng.sample(differing, min(pairs_per_row, len(differing))):
            pairs.append(_pair(row, completions[i], completions[j], rng, label_noise))
    return pairs
