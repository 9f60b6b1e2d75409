"""Sequence classifiers over prompt + completion: the text they read, its tokenisation, and the
reward source built on them. Reward-model training (``recipes.reward_model``), scoring
(:class:`ModelReward`) and classifier harm judges (``eval.judge``) share these, so every one of
them sees the same strings and the same right-padded batches.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from ..core.models import load_pretrained
from ..errors import ConfigError

logger = logging.getLogger(__name__)


def set_right_padding(tokenizer, model, name: str) -> None:
    """Right padding with the pad token (EOS when there is none), told to the model's config, so a
    sequence classifier reads its score at the last real token."""
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ConfigError(f"reward model {name}: tokenizer has no pad or eos token")
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    model.config.pad_token_id = tokenizer.pad_token_id


def load_classifier(path: str, what: str, trust_remote_code: bool = False, **kwargs):
    """(``AutoModelForSequenceClassification``, right-padding tokenizer) from ``path``;
    ``kwargs`` go to ``from_pretrained`` (e.g. ``num_labels=1`` for a new score head)."""
    from transformers import AutoModelForSequenceClassification

    model, tokenizer = load_pretrained(AutoModelForSequenceClassification, path, what,
                                       trust_remote_code, **kwargs)
    set_right_padding(tokenizer, model, repr(path))
    return model, tokenizer


def reward_text(tokenizer, prompt: str | list[dict],
                completion: str | list[dict]) -> tuple[str, bool]:
    """The text a reward model scores for (prompt, completion), and whether to add special tokens.

    A string prompt is followed by the completion; a chat prompt gets the completion as an
    assistant turn (a completion given as messages is appended as is) and is rendered with the
    chat template, or joined with newlines when the tokenizer has none.
    """
    if isinstance(prompt, str):
        return prompt + completion, True
    tail = completion if isinstance(completion, list) else [{"role": "assistant", "content": completion}]
    messages = list(prompt) + list(tail)
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False), False  # template adds specials
    return "\n".join(str(m["content"]) for m in messages), True


def reward_batch(tokenizer, prompts: list, completions: list,
                 max_length: int | None = None) -> dict[str, torch.Tensor]:
    """The ``reward_text`` of each (prompt, completion), tokenized (each cut to ``max_length``
    tokens when given) and right-padded into one batch: ``input_ids``, ``attention_mask`` [N, L]."""
    rows = []
    for prompt, completion in zip(prompts, completions):
        text, special = reward_text(tokenizer, prompt, completion)
        enc = tokenizer(text, add_special_tokens=special, truncation=max_length is not None,
                        max_length=max_length)
        rows.append({"input_ids": list(enc["input_ids"])})
    return tokenizer.pad(rows, padding=True, return_tensors="pt")


@torch.inference_mode()
def classifier_logits(model, tokenizer, prompts: list, completions: list, batch_size: int,
                      max_length: int | None = None) -> torch.Tensor:
    """Logits of every (prompt, completion), ``batch_size`` rows per forward pass: [N, labels]."""
    device = next(model.parameters()).device
    out = []
    for s in range(0, len(completions), batch_size):
        batch = reward_batch(tokenizer, prompts[s:s + batch_size], completions[s:s + batch_size],
                             max_length)
        out.append(model(**{k: v.to(device) for k, v in batch.items()}).logits.float().cpu())
    return torch.cat(out) if out else torch.zeros(0, model.config.num_labels)


class ModelReward:
    """A Hugging Face sequence-classification model; score = ``logits[:, 0]`` of prompt+completion.

    Models are expected to have ``num_labels == 1``; with more labels the first logit is used.
    """

    def __init__(self, path_or_id: str, batch_size: int = 16, device: str = "cpu",
                 trust_remote_code: bool = False, max_length: int | None = None) -> None:
        if batch_size < 1:
            raise ConfigError(f"reward model batch_size must be >= 1, got {batch_size}")
        self.path = str(path_or_id)
        self.name = f"model:{self.path}"
        self.batch_size, self.device, self.max_length = batch_size, device, max_length
        self.model, self.tokenizer = load_classifier(self.path, "reward model", trust_remote_code)
        if getattr(self.model.config, "num_labels", 1) != 1:
            logger.warning("reward model %r has num_labels=%s; using logits[:, 0]",
                           self.path, self.model.config.num_labels)
        self.model.to(self.device).eval()

    def format_text(self, prompt: str | list[dict], completion: str) -> tuple[str, bool]:
        """The text scored for one row, and whether the tokenizer should add special tokens."""
        return reward_text(self.tokenizer, prompt, completion)

    def __call__(self, prompts: list, completions: list[str], **row_fields: Any) -> list[float]:
        return classifier_logits(self.model, self.tokenizer, prompts, completions,
                                 self.batch_size, self.max_length)[:, 0].tolist()

    def __repr__(self) -> str:
        return f"ModelReward({self.path!r})"
