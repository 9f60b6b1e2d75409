"""Rollouts: k sampled completions per prompt with their sampling and reference log-probs.

The thin entry of the sampler for the training loop. ``sample`` is a tokenized batch through the
model's generation backend (``generation.py``: the ``Generator`` protocol and ``generator_for``);
``generate_rollout`` is prompts through the generation entry point (``generate.sample_prompts``)
plus the reference model's log-probs (``logprobs.completion_logprobs``). The names other layers
import from here are re-exported.
"""

from __future__ import annotations

import torch

from ..core.batch import Rollout
from .decoder import LeanDecoder
from .generate import eos_token_ids, pad_token_id, sample_prompts, tokenize_prompts
from .generation import Generation, Generator, LeanGenerator, generator_for, sample
from .logprobs import completion_logprobs
from .tensors import pad_rows, position_ids

Tensor = torch.Tensor

__all__ = ["Generation", "Generator", "LeanDecoder", "LeanGenerator", "completion_logprobs",
           "eos_token_ids", "generate_rollout", "generator_for", "pad_rows", "pad_token_id",
           "position_ids", "sample", "tokenize_prompts"]


def generate_rollout(policy, ref_model, tokenizer, prompts: list, texts: list[str] | None, k: int,
                     uniforms: Tensor, max_prompt_tokens: int, temperature: float, top_p: float,
                     chat: list[bool] | None = None) -> Rollout:
    """Rollout for ``prompts``: k samples each, plus reference log-probs.

    uniforms: [len(prompts) * k, max_new_tokens], one row per sample. ``texts`` and ``chat``:
    the prompts as ``data.formats.prompt_texts`` renders them, or None to render them here.
    """
    rendered = (texts, chat) if texts is not None and chat is not None else None
    got = sample_prompts(policy, tokenizer, prompts, k, uniforms, max_prompt_tokens,
                         temperature, top_p, rendered=rendered)
    with torch.inference_mode():
        ref_logprobs = completion_logprobs(ref_model, got.prompt_ids, got.prompt_mask,
                                           got.completion_ids, got.completion_mask, temperature)
    return Rollout(prompt_ids=got.prompt_ids, prompt_mask=got.prompt_mask,
                   completion_ids=got.completion_ids, completion_mask=got.completion_mask,
                   logprobs=got.logprobs, ref_logprobs=ref_logprobs.clone(),
                   truncated=got.truncated, k=k, prompts=[p for p in prompts for _ in range(k)],
                   completions=got.completions, entropy=got.entropy)
