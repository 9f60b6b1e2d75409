"""Rollouts: sample k completions per prompt and compute sequence log-probs.

The sampler is a plain KV-cached loop rather than ``model.generate``: it returns the sampling-time
log-probs of the tempered policy (so no extra forward pass is needed for them), and it samples by
inverse CDF from uniforms drawn per ROW, so a prompt's samples do not depend on which other prompts
share its batch or process (1 process and 2 data-parallel processes see the same completions).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..core.batch import Rollout
from .decoder import LeanDecoder
from .logprobs import completion_logprobs
from .tensors import pad_rows, position_ids

Tensor = torch.Tensor


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


def sample_tokens(probs: Tensor, uniforms: Tensor, top_p: float) -> Tensor:
    """Inverse-CDF sampling from probabilities [B, V] with one uniform per row [B] -> [B] ids."""
    if top_p < 1.0:
        sorted_p, order = probs.sort(dim=-1, descending=True)
        sorted_p = sorted_p * ((sorted_p.cumsum(-1) - sorted_p) < top_p)   # nucleus
        cdf = sorted_p.cumsum(-1)
        pick = torch.searchsorted(cdf, (uniforms * cdf[:, -1]).unsqueeze(1), right=True)
        return order.gather(1, pick.clamp(max=probs.shape[1] - 1)).squeeze(1)
    cdf = probs.cumsum(-1)
    pick = torch.searchsorted(cdf, (uniforms * cdf[:, -1]).unsqueeze(1), right=True)
    return pick.clamp(max=probs.shape[1] - 1).squeeze(1)


class HFDecoder:
    """The transformers forward with its own KV cache: the sampler's fallback for any model."""

    def __init__(self, model, prompt_mask: Tensor, positions: Tensor):
        self.model, self.positions, self.mask, self.cache = model, positions, prompt_mask, None

    def prefill(self, prompt_ids: Tensor) -> Tensor:
        P = prompt_ids.shape[1]
        out = self.model(input_ids=prompt_ids, attention_mask=self.mask,
                         position_ids=self.positions[:, :P], use_cache=True)
        self.cache = out.past_key_values
        return out.logits[:, -1]

    def step(self, ids: Tensor, slot: int) -> Tensor:
        self.mask = torch.cat([self.mask, torch.ones_like(self.mask[:, :1])], dim=1)
        out = self.model(input_ids=ids[:, None], attention_mask=self.mask,
                         position_ids=self.positions[:, slot:slot + 1],
                         past_key_values=self.cache, use_cache=True)
        self.cache = out.past_key_values
        return out.logits[:, -1]


@torch.inference_mode()
def sample(model, prompt_ids: Tensor, prompt_mask: Tensor, uniforms: Tensor, eos_ids: list[int],
           pad_id: int, temperature: float = 1.0, top_p: float = 1.0):
    """Sample one completion per row with a KV cache; stop rows at EOS.

    prompt_ids, prompt_mask: [B, P] left-padded; uniforms: [B, max_new_tokens] in [0, 1).
    Returns completion_ids [B, C], completion_mask [B, C], logprobs [B, C] (log-softmax of
    logits / temperature at the sampled tokens), truncated [B] bool, entropy [B].
    Llama-family models run on ``decoder.LeanDecoder`` (static cache, fused projections); others
    on the transformers forward. Outputs are preallocated; the only per-step host sync is the
    "all rows done" check.
    """
    B, max_new = uniforms.shape
    P, device = prompt_ids.shape[1], prompt_ids.device
    eos = torch.tensor(eos_ids, dtype=torch.long, device=device)
    pos = position_ids(prompt_mask)                                          # [B, P]
    positions = torch.cat([pos, pos[:, -1:] + 1 + torch.arange(max_new, device=device)], 1)
    decoder = (LeanDecoder.build(model, prompt_mask, positions, P + max_new)
               or HFDecoder(model, prompt_mask, positions))
    tokens = torch.full((B, max_new), pad_id, dtype=torch.long, device=device)   # [B, C]
    alive_steps = torch.zeros(B, max_new, dtype=torch.bool, device=device)
    logps, entropies = torch.zeros(B, max_new, device=device), torch.zeros(B, device=device)
    done = torch.zeros(B, dtype=torch.bool, device=device)
    logits, n = decoder.prefill(prompt_ids), max_new
    for t in range(max_new):
        logp = F.log_softmax(logits.float() / temperature, dim=-1)           # [B, V]
        probs = logp.exp()
        tok = sample_tokens(probs, uniforms[:, t], top_p)
        alive = ~done
        tokens[:, t] = torch.where(alive, tok, pad_id)
        logps[:, t] = torch.where(alive, logp.gather(1, tok[:, None]).squeeze(1), 0.0)
        entropies -= (probs * logp).sum(-1) * alive
        alive_steps[:, t] = alive
        done = done | torch.isin(tok, eos)
        if t == max_new - 1 or bool(done.all()):
            n = t + 1
            break
        logits = decoder.step(tokens[:, t], P + t)
    completion_mask = alive_steps[:, :n].long()                               # [B, C]
    n_tokens = completion_mask.sum(1).clamp(min=1)
    return tokens[:, :n], completion_mask, logps[:, :n], ~done, entropies / n_tokens


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
