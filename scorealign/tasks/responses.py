"""Responses to task rows, in any of the four languages: right ones, and the kinds of wrong ones
(wrong answer, wrong language, harmful compliance, over-refusal); noisy SFT demonstrations made
from them; and the text corpus a task tokenizer is trained on.

Completions start with a space (``" The answer is 7."``), so that the prompt's delimiter and the
first word are separate tokens.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from .lexicon import (
    ANTONYM_PAIRS,
    BENIGN_TEMPLATES,
    COMPLIANCES,
    LANGUAGES,
    NUMBER_ANSWERS,
    PERSONS,
    REFUSALS,
    WORD_ANSWERS,
)
from .prompts import Row, parse_id, prompt_pool, slot_forms

COMPLETION_PREFIX = " "
MAX_WRONG_OFFSET = 3  # wrong sums are the right sum +- 1..3
TASK_VOCAB_SIZE = 1024  # BPE vocabulary for task_corpus: the 614 task words mostly whole
MAX_NEW_TOKENS = 16  # fits every reply form (<= 15 tokens at TASK_VOCAB_SIZE) plus EOS


@dataclass(frozen=True)
class DemoNoise:
    """Rates of the mistakes in demonstrations (each drawn independently per demonstration)."""

    wrong_answer: float = 0.25        # verifiable rows: a wrong number / wrong antonym
    wrong_language: float = 0.25      # any row: the response is in another language
    harmful_compliance: float = 0.4   # harmful rows: a vague compliant reply instead of a refusal
    over_refusal: float = 0.3         # benign rows: a refusal instead of a helpful reply


def drift_language(language: str, rng: random.Random) -> str:
    """The wrong language a response drifts to: English, or (for English prompts) fr/es/ru."""
    return rng.choice(LANGUAGES[1:]) if language == "en" else "en"


def refusal(language: str, rng: random.Random) -> str:
    return rng.choice(REFUSALS[language])


def compliance(language: str, rng: random.Random) -> str:
    return rng.choice(COMPLIANCES[language])


def _antonym_words(slot: str, language: str) -> tuple[str, str]:
    """(asked word, its opposite) of an antonym slot ``'pair.direction'`` in ``language``."""
    pair, direction = (int(x) for x in slot.split("."))
    words = ANTONYM_PAIRS[pair][language]
    return words[direction], words[1 - direction]


def _benign_answer(template: str, slot: str, language: str, rng: random.Random) -> str:
    slot_type, _, answers, _ = BENIGN_TEMPLATES[template]
    forms = slot_forms(language, slot_type, slot if slot != "-" else "0")
    return rng.choice(answers[language]).format(**forms)


def right_response(row: Row, language: str, rng: random.Random) -> str:
    """The right response to ``row`` written in ``language`` (the row's own for a perfect reply)."""
    _, kind, template, slot = parse_id(row["id"])
    if kind == "harmful":
        return refusal(language, rng)
    if kind == "benign":
        return _benign_answer(template, slot, language, rng)
    if template.startswith("add"):
        return rng.choice(NUMBER_ANSWERS[language]).format(n=row["answer"])
    return rng.choice(WORD_ANSWERS[language]).format(n=_antonym_words(slot, language)[1])


def wrong_response(row: Row, language: str, rng: random.Random) -> str:
    """An on-topic but wrong response: a near-miss sum, another antonym, or (benign) the helpful
    reply to a different benign request. Harmful rows have no "wrong answer": a compliance."""
    _, kind, template, slot = parse_id(row["id"])
    if kind == "harmful":
        return compliance(language, rng)
    if kind == "benign":
        other = rng.choice([t for t in BENIGN_TEMPLATES if t != template])
        other_slot = slot if BENIGN_TEMPLATES[other][0] == "person" and slot != "-" else "0"
        return _benign_answer(other, other_slot, language, rng)
    if template.startswith("add"):
        right = int(row["answer"])
        offset = rng.randint(1, MAX_WRONG_OFFSET)
        wrong = right - offset if right - offset >= 0 and rng.random() < 0.5 else right + offset
        return rng.choice(NUMBER_ANSWERS[language]).format(n=wrong)
    opposite = _antonym_words(slot, language)[1]
    others = [w for pair in ANTONYM_PAIRS for w in pair[language] if w != opposite]
    return rng.choice(WORD_ANSWERS[language]).format(n=rng.choice(others))


def noisy_response(row: Row, rng: random.Random, noise: DemoNoise) -> str:
    """One demonstration response for ``row`` under ``noise`` (see :class:`DemoNoise`)."""
    language = row["language"]
    if rng.random() < noise.wrong_language:
        language = drift_language(language, rng)
    kind = row["kind"]
    if kind == "verifiable" and rng.random() < noise.wrong_answer:
        return wrong_response(row, language, rng)
    if kind == "harmful" and rng.random() < noise.harmful_compliance:
        return compliance(language, rng)
    if kind == "benign" and rng.random() < noise.over_refusal:
        return refusal(language, rng)
    return right_response(row, language, rng)


def demonstrations(rows: list[Row], seed: int = 0, noise: DemoNoise = DemoNoise(),
                   per_prompt: int = 1) -> list[dict]:
    """Noisy SFT data: ``per_prompt`` ``{"prompt", "completion", "id"}`` rows per task row."""
    rng = random.Random(seed)
    return [{"prompt": row["prompt"],
             "completion": COMPLETION_PREFIX + noisy_response(row, rng, noise), "id": row["id"]}
            for row in rows for _ in range(per_prompt)]


def response_strings(language: str, max_number: int = 21) -> list[str]:
    """Every response surface form in ``language`` (all answers, refusals, compliances)."""
    out = [f.format(n=n) for f in NUMBER_ANSWERS[language] for n in range(max_number + 1)]
    out += [f.format(n=w) for f in WORD_ANSWERS[language] for pair in ANTONYM_PAIRS
            for w in pair[language]]
    out += list(REFUSALS[language]) + list(COMPLIANCES[language])
    for slot_type, _, answers, _ in BENIGN_TEMPLATES.values():
        fills = PERSONS[language] if slot_type == "person" else [{}]
        out += [a.format(**f) for a in answers[language] for f in fills]
    return out


def all_language_strings(language: str) -> list[str]:
    """Every prompt and response the generator writes in ``language`` (the gold vocabulary)."""
    prompts = [r["prompt"] for rows in prompt_pool().values() for r in rows
               if r["language"] == language]
    return prompts + response_strings(language)


def task_corpus(seed: int = 0, max_operand: int = 9, repeats: int = 8) -> list[str]:
    """Tokenizer training text: every prompt followed by a right response, a wrong one and a
    refusal, then every response surface form of every language ``repeats`` times (so refusals,
    compliances and benign replies, rare among prompts, still get whole-word merges)."""
    rng = random.Random(seed)
    lines = []
    for row in (r for rows in prompt_pool(max_operand).values() for r in rows):
        for response in (right_response(row, row["language"], rng),
                         wrong_response(row, row["language"], rng), refusal(row["language"], rng)):
            lines.append(row["prompt"] + COMPLETION_PREFIX + response)
    lines += [COMPLETION_PREFIX + s for lang in LANGUAGES
              for s in response_strings(lang, 2 * max_operand + MAX_WRONG_OFFSET)] * repeats
    rng.shuffle(lines)
    return lines
