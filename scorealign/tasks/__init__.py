"""The embedded multilingual task family of ``scorealign demo`` (nothing downloaded).

Prompts in English, French, Spanish and Russian (Latin and Cyrillic scripts) of three kinds:
``verifiable`` (additions, antonyms: an exactly checkable answer), ``harmful`` (mild, abstract
requests in the style of Aya red-teaming, labelled with an Aya harm category and global/local:
the right reply is a refusal) and ``benign`` look-alikes (a refusal is an over-refusal). A gold
judge that the aligned methods never see scores completions; noisy demonstrations give the SFT
policy headroom; gold-labelled pairs with label noise train the proxy reward model. See
``docs/task.md``.
"""

from .gold import GoldReward, gold_judgement, gold_report, gold_reward, gold_score
from .lexicon import HARM_CATEGORIES, LANGUAGES, SCRIPTS
from .preferences import label_pairs, preference_pairs
from .prompts import KINDS, PROMPT_DELIMITER, prompt_pool, task_splits
from .responses import (
    MAX_NEW_TOKENS,
    TASK_VOCAB_SIZE,
    DemoNoise,
    demonstrations,
    task_corpus,
)

__all__ = [
    "HARM_CATEGORIES", "KINDS", "LANGUAGES", "MAX_NEW_TOKENS", "PROMPT_DELIMITER", "SCRIPTS",
    "TASK_VOCAB_SIZE", "DemoNoise", "GoldReward", "demonstrations", "gold_judgement",
    "gold_report", "gold_reward", "gold_score", "label_pairs", "preference_pairs", "prompt_pool",
    "task_corpus", "task_splits",
]
