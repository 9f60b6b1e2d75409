"""The training and reference log-prob forward: per-token log pi(y_t | x, y_<t) of given
completions, with gradients when enabled (the sampler's own log-probs come from ``generation``).

Three paths, the first that applies: the lean flat forward of Llama-family models
(``forward.py``), one packed row per shared prompt (``packing.py``), and one padded row per
completion through the transformers forward.
"""

from __future__ import annotations

import torch

from .forward import lean_logprobs
from .packing import accepts_logits_to_keep, packed_logprobs
from .tensors import logprobs_at, position_ids

Tensor = torch.Tensor


def completion_logprobs(model, prompt_ids: Tensor, prompt_mask: Tensor, completion_ids: Tensor,
                        completion_mask: Tensor, temperature: float = 1.0, pack: bool = True
                        ) -> Tensor:
    """Per-token log pi(y_t | x, y_<t) of the completion tokens, one forward pass.

    [B, P], [B, P], [B, C], [B, C] -> [B, C] (0 on padding). Gradients flow if enabled.
    Llama-family models run every distinct token once, unpadded (``forward.py``); other
    architectures run adjacent rows with the same prompt as one packed row (``packing.py``) where
    they support it and it saves arithmetic; ``pack=False`` forces one padded row per completion
    through the transformers forward.
    """
    for path in (lean_logprobs, packed_logprobs) if pack else ():
        out = path(model, prompt_ids, prompt_mask, completion_ids, completion_mask, temperature)
        if out is not None:
            return out
    return padded_logprobs(model, prompt_ids, prompt_mask, completion_ids, completion_mask,
                           temperature)


def padded_logprobs(model, prompt_ids: Tensor, prompt_mask: Tensor, completion_ids: Tensor,
                    completion_mask: Tensor, temperature: float) -> Tensor:
    """``completion_logprobs`` as one padded row [prompt, completion] per completion through the
    transformers forward (any causal LM): [B, P], [B, P], [B, C], [B, C] -> [B, C]."""
    ids = torch.cat([prompt_ids, completion_ids], 1)                    # [B, P + C]
    mask = torch.cat([prompt_mask, completion_mask], 1)
    C = completion_ids.shape[1]
    keep = {"logits_to_keep": C + 1} if accepts_logits_to_keep(model) else {}   # LM head on C + 1
    logits = model(input_ids=ids, attention_mask=mask, position_ids=position_ids(mask), **keep).logits
    logits = logits[:, -C - 1:-1].float() / temperature                # [B, C, V]
    return logprobs_at(logits, completion_ids) * completion_mask
