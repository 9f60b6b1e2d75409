"""Rollouts: sample k completions per prompt and compute sequence log-probs.

``sample`` (a tokenized batch through the model's generation backend) lives in ``generation.py``
with the ``Generator`` protocol and the backends; it is re-exported here with the other names
the loop and the tests import.
"""

from __future__ import annotations

import torch

from ..core.batch import Rollout
from .decoder import LeanDecoder
from .generation import Generation, Generator, LeanGenerator, generator_for, sample
from .logprobs import completion_logprobs
from .tensors import pad_rows, position_ids

Tensor = torch.Tensor
__all__ = ["Generation", "Generator", "LeanDecoder", "LeanGenerator", "completion_logprobs",
           "eos_token_ids", "generate_rollout", "generator_for", "pad_rows", "pad_token_id",
           "position_ids", "sample", "tokenize_prompts"]


def tokenize_prompts(tokenizer, texts: list[str], max_prompt_tokens: int,
                     add_special_tokens: list[bool]) -> tuple[Tensor, Tensor]:
    """Left-padded prompt ids and mask, [B, P]. Over-long prompts keep their LAST tokens."""
    rows = [tokenizer(t, add_special_tokens=a)["input_ids"][-max_prompt_tokens:]
            for t, a in zip(texts, add_special_tokens)]
    return pad_rows(rows, pad_token_id(tokenizer), left=True)


def pad_token_id(tokenizer) -> int:
    pad = tokenizer.pad_token_id
    return tokenizer.eos_token_id if pad is None else pad


def eos_token_ids(tokenizer, model) -> list[int]:
    """Every id that ends a completion: the tokenizer's EOS and the model's generation EOS ids."""
    ids = {tokenizer.eos_token_id}
    gen = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids.update(gen if isinstance(gen, (list, tuple)) else [gen])
    return sorted(i for i in ids if i is not None)


def generate_rollout(policy, ref_model, tokenizer, prompts: list, texts: list[str], k: int,
                     uniforms: Tensor, max_prompt_tokens: int, temperature: float, top_p: float,
                     chat: list[bool]) -> Rollout:
    """Rollout for ``prompts`` (rendered as ``texts``): k samples each, plus reference log-probs.

    uniforms: [len(prompts) * k, max_new_tokens], one row per sample.
    """
    prompt_ids, prompt_mask = tokenize_prompts(tokenizer, texts, max_prompt_tokens,
                                               [not c for c in chat])
    prompt_ids = prompt_ids.repeat_interleave(k, 0)                        # [B, P], B = n * k
    prompt_mask = prompt_mask.repeat_interleave(k, 0)
    was_training = policy.training
    policy.eval()
    ids, mask, logprobs, truncated, entropy = (t.clone() for t in sample(
        policy, prompt_ids, prompt_mask, uniforms, eos_token_ids(tokenizer, policy),
        pad_token_id(tokenizer), temperature, top_p))
    policy.train(was_training)
    with torch.inference_mode():
        ref_logprobs = completion_logprobs(ref_model, prompt_ids, prompt_mask, ids, mask,
                                           temperature)
    completions = tokenizer.batch_decode(torch.where(mask.bool(), ids, pad_token_id(tokenizer)),
                                         skip_special_tokens=True)
    return Rollout(prompt_ids=prompt_ids, prompt_mask=prompt_mask, completion_ids=ids,
                   completion_mask=mask, logprobs=logprobs, ref_logprobs=ref_logprobs.clone(),
                   truncated=truncated, k=k, prompts=[p for p in prompts for _ in range(k)],
                   completions=completions, entropy=entropy)
