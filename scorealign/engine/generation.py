"""Generation backends: the ``Generator`` protocol, its two local implementations and the one
function that picks a backend for a model (``generator_for``).

A generator samples one completion per row of a tokenized, left-padded batch by inverse CDF
from uniforms drawn per ROW (``uniforms[b, t]`` picks the t-th token of row b), so a prompt's
samples do not depend on which other prompts share its batch or process. It returns the
sampling-time log-probs of the tempered policy, so no extra forward pass is needed for them.

Local backends run the same decode loop (``decode``) over a ``StepDecoder`` (prefill, then one
token per step with a KV cache):
  lean           ``decoder.LeanDecoder``: static cache, fused projections (Llama, Qwen2, Mistral)
  transformers   the model's own forward and KV cache (any causal LM)
Another backend (a served engine on a GPU, say) is one class with ``name``, ``accepts`` and
``generate``, added with ``register_backend`` from its own module; nothing else changes.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

import torch
import torch.nn.functional as F

from .decoder import LeanDecoder, lean_decoder_accepts
from .tensors import position_ids

Tensor = torch.Tensor


class Generation(NamedTuple):
    """What a generator returns for B rows and C = the longest completion's length."""

    completion_ids: Tensor     # [B, C] long, pad_id after a row's EOS
    completion_mask: Tensor    # [B, C] long, 1 up to and including a row's EOS
    logprobs: Tensor           # [B, C] log-softmax(logits / temperature) at the sampled tokens
    truncated: Tensor          # [B] bool: no EOS within max_new_tokens
    entropy: Tensor            # [B] mean per-token entropy of the tempered distribution


class Generator(Protocol):
    """A generation backend (an extension point: see the module docstring)."""

    name: str

    def accepts(self, model) -> bool:
        """True if this backend can sample from ``model``."""

    def generate(self, model, prompt_ids: Tensor, prompt_mask: Tensor, uniforms: Tensor,
                 eos_ids: list[int], pad_id: int, temperature: float, top_p: float) -> Generation:
        """prompt_ids, prompt_mask [B, P] left-padded; uniforms [B, max_new_tokens] in [0, 1)."""


class StepDecoder(Protocol):
    """A KV-cached forward for ``decode``: next-token logits after the prompt, then per token."""

    def prefill(self, prompt_ids: Tensor) -> Tensor:
        """prompt_ids [B, P] -> logits [B, V] at the last prompt position."""

    def step(self, ids: Tensor, slot: int) -> Tensor:
        """ids [B] at position slot ``slot`` -> logits [B, V]."""


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


def cache_positions(prompt_mask: Tensor, max_new: int) -> Tensor:
    """Rotary position of every cache slot: [B, P] left-padded mask -> [B, P + max_new]."""
    pos = position_ids(prompt_mask)                                            # [B, P]
    steps = torch.arange(max_new, device=prompt_mask.device)
    return torch.cat([pos, pos[:, -1:] + 1 + steps], 1)


def decode(decoder: StepDecoder, prompt_ids: Tensor, uniforms: Tensor, eos_ids: list[int],
           pad_id: int, temperature: float, top_p: float) -> Generation:
    """The token loop: sample, record, stop rows at EOS. Outputs are preallocated; the only
    per-step host sync is the "all rows done" check."""
    B, max_new = uniforms.shape
    P, device = prompt_ids.shape[1], prompt_ids.device
    eos = torch.tensor(eos_ids, dtype=torch.long, device=device)
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
    return Generation(tokens[:, :n], completion_mask, logps[:, :n], ~done, entropies / n_tokens)


class HFDecoder:
    """``StepDecoder`` on the transformers forward with its own KV cache (any causal LM)."""

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


class TransformersGenerator:
    """The transformers forward and KV cache: every causal LM."""

    name = "transformers"

    @staticmethod
    def accepts(model) -> bool:
        return True

    def generate(self, model, prompt_ids, prompt_mask, uniforms, eos_ids, pad_id, temperature,
                 top_p) -> Generation:
        positions = cache_positions(prompt_mask, uniforms.shape[1])           # [B, P + T]
        return decode(HFDecoder(model, prompt_mask, positions), prompt_ids, uniforms, eos_ids,
                      pad_id, temperature, top_p)


class LeanGenerator:
    """``decoder.LeanDecoder``: Llama/Qwen2/Mistral (plain or LoRA projections), same tokens and
    log-probs as the transformers forward (``tests/test_decoder.py``), less per-step overhead."""

    name = "lean"

    @staticmethod
    def accepts(model) -> bool:
        return lean_decoder_accepts(model)

    def generate(self, model, prompt_ids, prompt_mask, uniforms, eos_ids, pad_id, temperature,
                 top_p) -> Generation:
        P, T = prompt_ids.shape[1], uniforms.shape[1]
        decoder = LeanDecoder.build(model, prompt_mask, cache_positions(prompt_mask, T), P + T)
        return decode(decoder, prompt_ids, uniforms, eos_ids, pad_id, temperature, top_p)


BACKENDS: list[Generator] = [LeanGenerator(), TransformersGenerator()]   # first that accepts


def register_backend(generator: Generator) -> None:
    """Put ``generator`` first: it serves every model it ``accepts`` (replacing one of the same
    name)."""
    BACKENDS[:] = [generator] + [g for g in BACKENDS if g.name != generator.name]


def generator_for(model) -> Generator:
    """The generation backend of ``model``: the first of ``BACKENDS`` that accepts it."""
    return next(g for g in BACKENDS if g.accepts(model))


@torch.inference_mode()
def sample(model, prompt_ids: Tensor, prompt_mask: Tensor, uniforms: Tensor, eos_ids: list[int],
           pad_id: int, temperature: float = 1.0, top_p: float = 1.0) -> Generation:
    """One completion per row of a tokenized batch through ``model``'s backend
    (``generator_for``): [B, P], [B, P], uniforms [B, max_new_tokens] -> ``Generation``."""
    return generator_for(model).generate(model, prompt_ids, prompt_mask, uniforms, eos_ids,
                                         pad_id, temperature, top_p)
