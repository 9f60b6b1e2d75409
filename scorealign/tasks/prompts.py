"""Prompt rows of the multilingual task: the full deterministic pool, and seeded train/eval splits.

A row is ``{"prompt", "language", "kind", "answer", "harm_category", "global_or_local", "id"}``.
``prompt`` is the question followed by :data:`PROMPT_DELIMITER` (a plain string, no chat
template: the tiny model then sees ~10-25 prompt tokens and no special tokens mid-sequence, and a
delimiter without letters carries no hint of the answer's language). ``id`` is
``language/kind/template/slot`` (e.g. ``fr/verifiable/add.1/3+4``) and is what response
generators read to build answers in any language.
"""

from __future__ import annotations

import random
from typing import Any

from .lexicon import (
    ADDITION_PROMPTS,
    ANTONYM_PAIRS,
    ANTONYM_PROMPTS,
    BENIGN_TEMPLATES,
    HARMFUL_TEMPLATES,
    LANGUAGES,
    PERSONS,
    REGIONS,
)

PROMPT_DELIMITER = " =>"
KINDS = ("verifiable", "harmful", "benign")
KIND_MIX = {"verifiable": 0.5, "harmful": 0.3, "benign": 0.2}
Row = dict[str, Any]


def make_row(language: str, kind: str, template: str, slot: str, question: str,
             answer: str | None = None, harm_category: str | None = None,
             global_or_local: str | None = None) -> Row:
    return {"prompt": question + PROMPT_DELIMITER, "language": language, "kind": kind,
            "answer": answer, "harm_category": harm_category, "global_or_local": global_or_local,
            "id": f"{language}/{kind}/{template}/{slot}"}


def parse_id(row_id: str) -> tuple[str, str, str, str]:
    """``'fr/benign/friendly_joke/3'`` -> ``('fr', 'benign', 'friendly_joke', '3')``."""
    language, kind, template, slot = row_id.split("/", 3)
    return language, kind, template, slot


def slot_forms(language: str, slot_type: str | None, slot: str) -> dict[str, str]:
    """The ``str.format`` arguments of a person/region slot (empty for templates without one)."""
    if slot_type == "person":
        return PERSONS[language][int(slot)]
    if slot_type == "region":
        return {"r": REGIONS[language][int(slot)]}
    return {}


def slot_names(slot_type: str | None) -> list[str]:
    """The slot values of a template: person or region indices, or ``['-']`` for none."""
    if slot_type == "person":
        return [str(i) for i in range(len(PERSONS["en"]))]
    if slot_type == "region":
        return [str(i) for i in range(len(REGIONS["en"]))]
    return ["-"]


def verifiable_rows(language: str, max_operand: int = 9) -> list[Row]:
    """Additions a + b (0 <= a, b <= max_operand) and antonyms, each in two phrasings."""
    rows = []
    for v, template in enumerate(ADDITION_PROMPTS[language]):
        for a in range(max_operand + 1):
            for b in range(max_operand + 1):
                rows.append(make_row(language, "verifiable", f"add.{v}", f"{a}+{b}",
                                     template.format(a=a, b=b), answer=str(a + b)))
    for v, template in enumerate(ANTONYM_PROMPTS[language]):
        for p, pair in enumerate(ANTONYM_PAIRS):
            for d in (0, 1):
                word, opposite = pair[language][d], pair[language][1 - d]
                rows.append(make_row(language, "verifiable", f"antonym.{v}", f"{p}.{d}",
                                     template.format(w=word), answer=opposite))
    return rows


def harmful_rows(language: str) -> list[Row]:
    """Every harmful template with every slot value; the right response is a refusal."""
    rows = []
    for name, (category, scope, slot_type, text) in HARMFUL_TEMPLATES.items():
        for slot in slot_names(slot_type):
            question = text[language].format(**slot_forms(language, slot_type, slot))
            rows.append(make_row(language, "harmful", name, slot, question,
                                 harm_category=category, global_or_local=scope))
    return rows


def benign_rows(language: str) -> list[Row]:
    """Harmless look-alikes; ``answer`` is the key word a helpful reply contains."""
    rows = []
    for name, (slot_type, text, _, key) in BENIGN_TEMPLATES.items():
        for slot in slot_names(slot_type):
            question = text[language].format(**slot_forms(language, slot_type, slot))
            rows.append(make_row(language, "benign", name, slot, question, answer=key[language]))
    return rows


def prompt_pool(max_operand: int = 9) -> dict[str, list[Row]]:
    """Every distinct prompt of the task, by kind, in a fixed order (no randomness)."""
    pool: dict[str, list[Row]] = {kind: [] for kind in KINDS}
    for language in LANGUAGES:
        pool["verifiable"] += verifiable_rows(language, max_operand)
        pool["harmful"] += harmful_rows(language)
        pool["benign"] += benign_rows(language)
    return pool


def _language_balanced_order(rows: list[Row], rng: random.Random) -> list[Row]:
    """Shuffle within each language, then interleave languages, so every prefix is balanced."""
    by_language = {lang: [r for r in rows if r["language"] == lang] for lang in LANGUAGES}
    for group in by_language.values():
        rng.shuffle(group)
    longest = max(len(g) for g in by_language.values())
    return [g[i] for i in range(longest) for g in by_language.values() if i < len(g)]


def _counts(n: int, mix: dict[str, float]) -> dict[str, int]:
    """Split ``n`` into per-kind counts proportional to ``mix`` (largest remainders)."""
    total = sum(mix.values())
    exact = {k: n * mix.get(k, 0.0) / total for k in KINDS}
    counts = {k: int(v) for k, v in exact.items()}
    for k in sorted(KINDS, key=lambda k: counts[k] - exact[k])[: n - sum(counts.values())]:
        counts[k] += 1
    return counts


def task_splits(seed: int = 0, n_train: int = 384, n_eval: int = 128,
                kind_mix: dict[str, float] | None = None,
                max_operand: int = 9) -> tuple[list[Row], list[Row]]:
    """Disjoint (train, eval) rows: per kind, a seeded language-balanced order of the pool; eval
    takes its first prompts and train the next ones. Raises ValueError when a kind's pool is too
    small for the requested sizes."""
    mix = dict(KIND_MIX if kind_mix is None else kind_mix)
    unknown = set(mix) - set(KINDS)
    if unknown:
        raise ValueError(f"kind_mix: unknown kinds {sorted(unknown)}; kinds are {KINDS}")
    rng = random.Random(seed)
    pool = prompt_pool(max_operand)
    train_counts, eval_counts = _counts(n_train, mix), _counts(n_eval, mix)
    train, evaluation = [], []
    for kind in KINDS:
        ordered = _language_balanced_order(pool[kind], rng)
        need = eval_counts[kind] + train_counts[kind]
        if need > len(ordered):
            raise ValueError(f"{kind}: {need} prompts requested (train {train_counts[kind]} + "
                             f"eval {eval_counts[kind]}) but the pool has {len(ordered)}")
        evaluation += ordered[: eval_counts[kind]]
        train += ordered[eval_counts[kind]: need]
    rng.shuffle(train)
    rng.shuffle(evaluation)
    return train, evaluation
