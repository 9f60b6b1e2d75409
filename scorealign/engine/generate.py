"""The generation entry point: prompts in, sampled completions out (``sample_prompts``).

Every caller that samples goes through ``sample_prompts``: training rollouts
(``rollout.generate_rollout``), held-out evaluation (``eval.heldout``), ``scorealign sample``
(``sample_rows``), the evaluation and data commands (``generate_completions``: eval-safety,
eval-winrate, synth-prefs) and the demo's evaluation. It renders prompts (chat template with the
generation prompt for message lists), tokenizes them left-padded, samples k completions per
prompt through the model's generation backend (``generation.generator_for``) and decodes them.
The caller supplies the uniforms, one row per sample, so draws are seeded where they belong.
"""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import torch

from ..core import seeding
from ..core.config import GENERATION_KEYS
from ..core.models import load_causal_lm, load_tokenizer, quiet_transformers
from ..data.formats import completion_text, prompt_texts
from ..data.readers import Row
from .generation import sample
from .tensors import pad_rows

Tensor = torch.Tensor


def pad_token_id(tokenizer) -> int:
    pad = tokenizer.pad_token_id
    return tokenizer.eos_token_id if pad is None else pad


def eos_token_ids(tokenizer, model) -> list[int]:
    """Every id that ends a completion: the tokenizer's EOS and the model's generation EOS ids."""
    ids = {tokenizer.eos_token_id}
    gen = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids.update(gen if isinstance(gen, (list, tuple)) else [gen])
    return sorted(i for i in ids if i is not None)


def tokenize_prompts(tokenizer, texts: list[str], max_prompt_tokens: int,
                     add_special_tokens: list[bool]) -> tuple[Tensor, Tensor]:
    """Left-padded prompt ids and mask, [B, P]. Over-long prompts keep their LAST tokens."""
    rows = [tokenizer(t, add_special_tokens=a)["input_ids"][-max_prompt_tokens:]
            for t, a in zip(texts, add_special_tokens)]
    return pad_rows(rows, pad_token_id(tokenizer), left=True)


@dataclasses.dataclass
class Samples:
    """k samples of n prompts, B = n * k rows (the k samples of a prompt adjacent)."""

    prompt_ids: Tensor        # [B, P] left-padded
    prompt_mask: Tensor       # [B, P]
    completion_ids: Tensor    # [B, C] pad id after EOS
    completion_mask: Tensor   # [B, C]
    logprobs: Tensor          # [B, C] sampling-time log-probs (tempered)
    truncated: Tensor         # [B] bool
    entropy: Tensor           # [B]
    completions: list[str]    # B decoded completions (special tokens skipped)
    chat: list[bool]          # n: which prompts were message lists


def sample_prompts(model, tokenizer, prompts: list, k: int, uniforms: Tensor,
                   max_prompt_tokens: int, temperature: float = 1.0, top_p: float = 1.0,
                   device=None, rendered: tuple[list[str], list[bool]] | None = None) -> Samples:
    """k completions of each prompt (a string, or chat messages) -> ``Samples``.

    uniforms: [len(prompts) * k, max_new_tokens], one row per sample. ``device``: where the
    batch goes (default: the model's). ``rendered``: the prompts already rendered by
    ``data.formats.prompt_texts``. The model is sampled in eval mode, then put back.
    """
    texts, chat = rendered or prompt_texts(tokenizer, prompts)
    ids, mask = tokenize_prompts(tokenizer, texts, max_prompt_tokens, [not c for c in chat])
    device = device or next(model.parameters()).device
    ids = ids.repeat_interleave(k, 0).to(device)                               # [B, P], B = n * k
    mask = mask.repeat_interleave(k, 0).to(device)
    was_training = model.training
    model.eval()
    out = sample(model, ids, mask, uniforms.to(device), eos_token_ids(tokenizer, model),
                 pad_token_id(tokenizer), temperature, top_p)
    model.train(was_training)
    c_ids, c_mask, logprobs, truncated, entropy = (t.clone() for t in out)   # not inference tensors
    return Samples(ids, mask, c_ids, c_mask, logprobs, truncated, entropy,
                   decode_completions(tokenizer, c_ids, c_mask), chat)


def decode_completions(tokenizer, ids: Tensor, mask: Tensor) -> list[str]:
    """[B, C] completion ids and mask -> B strings (special tokens skipped)."""
    pad = pad_token_id(tokenizer)
    return tokenizer.batch_decode(torch.where(mask.bool(), ids, pad), skip_special_tokens=True)


# ------------------------------------------------ per-row sampling (data and eval commands)


def generate_completions(model_path: str, rows: list[Row], cfg, keep_blank: bool = False
                         ) -> tuple[list[Row], int]:
    """``rows`` (each with ``prompt``) -> (rows + ``completion`` string, blank ones dropped
    unless ``keep_blank``: eval-safety counts them).

    One sampled completion per prompt row from a local model or hub id (eval-safety,
    eval-winrate, synth-prefs). ``cfg`` is any config with the ``GENERATION_KEYS`` fields. Output
    rows keep every input field; ``completion`` is always plain text (the assistant message's
    content for chats).
    """
    quiet_transformers()
    sample_cfg = SimpleNamespace(model=model_path, k=1,
                                 **{key: getattr(cfg, key) for key in GENERATION_KEYS})
    model = load_causal_lm(model_path, sample_cfg, trainable=False)
    tokenizer = load_tokenizer(model_path, "model", cfg.trust_remote_code)
    out, dropped = sample_rows(model, tokenizer, rows, sample_cfg, keep_blank)
    return [{**r, "completion": completion_text(r)} for r in out], dropped


SAMPLE_FIELDS = ("prompt", "completion", "sample_index", "truncated")  # win over input columns


def row_uniforms(seed: int, row_index: int, k: int, max_new_tokens: int) -> Tensor:
    """Sampling uniforms of one prompt row, [k, max_new_tokens], from its own seeded stream."""
    gen = seeding.generator(seed, "sample_rows", row_index)
    return torch.rand(k, max_new_tokens, generator=gen)


def sample_rows(model, tokenizer, rows: list[Row], cfg, keep_blank: bool = False
                ) -> tuple[list[Row], int]:
    """k samples per prompt row -> (output rows, number of blank completions dropped).

    ``cfg``: any config with k, batch_size, seed, max_prompt_tokens, max_new_tokens, temperature
    and top_p (``SampleConfig``, or the generation keys of the evaluation commands). Uniforms are
    seeded per prompt row, so results do not depend on batch size.

    Conversational prompts get the completion as ``[{"role": "assistant", "content": ...}]`` (the
    TRL format ``data.load_scored`` expects). Blank completions (EOS first) are dropped, since
    every consumer rejects them (``keep_blank`` keeps them); ``sample_index`` keeps the original
    index.
    """
    out, dropped = [], 0
    for start in range(0, len(rows), cfg.batch_size):
        chunk = rows[start:start + cfg.batch_size]
        uniforms = torch.cat([row_uniforms(cfg.seed, start + i, cfg.k, cfg.max_new_tokens)
                              for i in range(len(chunk))])                          # [b*k, T]
        got = sample_prompts(model, tokenizer, [r["prompt"] for r in chunk], cfg.k, uniforms,
                             cfg.max_prompt_tokens, cfg.temperature, cfg.top_p)
        for j, text in enumerate(got.completions):
            row, is_chat = chunk[j // cfg.k], got.chat[j // cfg.k]
            if not text.strip() and not keep_blank:
                dropped += 1
                continue
            completion = [{"role": "assistant", "content": text}] if is_chat else text
            out.append({"prompt": row["prompt"], "completion": completion,
                        "sample_index": j % cfg.k, "truncated": bool(got.truncated[j]),
                        **{k: v for k, v in row.items() if k not in SAMPLE_FIELDS}})
    return out, dropped
