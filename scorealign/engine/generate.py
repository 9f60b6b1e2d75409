"""One sampled completion per prompt row from a local model or hub id, for the evaluation and
data commands (eval-safety, eval-winrate, synth-prefs). A thin layer over ``tools.sample_rows``
(the training sampler, uniforms seeded per prompt row), so results do not depend on batch size.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch

from ..core.config import GENERATION_KEYS
from ..core.models import load_causal_lm, quiet_transformers
from ..data.formats import Row, completion_text, render_prompt
from .rollout import eos_token_ids, pad_token_id, sample, tokenize_prompts


def generate_completions(model_path: str, rows: list[Row], cfg) -> tuple[list[Row], int]:
    """``rows`` (each with ``prompt``) -> (rows + ``completion`` string, blank ones dropped).

    ``cfg`` is any config with the ``GENERATION_KEYS`` fields. Output rows keep every input
    field; ``completion`` is always plain text (the assistant message's content for chats).
    """
    from transformers import AutoTokenizer

    quiet_transformers()
    sample_cfg = SimpleNamespace(model=model_path, k=1,
                              **{key: getattr(cfg, key) for key in GENERATION_KEYS})
    model = load_causal_lm(model_path, sample_cfg, trainable=False)
    tokenizer = AutoTokenizer.from_pretrained(model_path, trust_remote_code=cfg.trust_remote_code)
    out, dropped = sample_rows(model, tokenizer, rows, sample_cfg)
    return [{**r, "completion": completion_text(r)} for r in out], dropped


SAMPLE_FIELDS = ("prompt", "completion", "sample_index", "truncated")  # win over input columns


def row_uniforms(seed: int, row_index: int, k: int, max_new_tokens: int) -> torch.Tensor:
    """Sampling uniforms of one prompt row, [k, max_new_tokens], from its own seeded generator."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + row_index)
    return torch.rand(k, max_new_tokens, generator=gen)


def sample_rows(model, tokenizer, rows: list[Row], cfg) -> tuple[list[Row], int]:
    """k samples per prompt row -> (output rows, number of blank completions dropped).

    ``cfg``: any config with k, batch_size, seed, max_prompt_tokens, max_new_tokens, temperature
    and top_p (``SampleConfig``, or the generation keys of the evaluation commands).

    Conversational prompts get the completion as ``[{"role": "assistant", "content": ...}]`` (the
    TRL format ``data.load_scored`` expects). Blank completions (EOS first) are dropped, since
    every consumer rejects them; ``sample_index`` keeps the original index.
    """
    eos, pad = eos_token_ids(tokenizer, model), pad_token_id(tokenizer)
    out, dropped = [], 0
    for start in range(0, len(rows), cfg.batch_size):
        chunk = rows[start:start + cfg.batch_size]
        chat = [not isinstance(r["prompt"], str) for r in chunk]
        texts = [render_prompt(tokenizer, r["prompt"]) for r in chunk]
        ids, mask = tokenize_prompts(tokenizer, texts, cfg.max_prompt_tokens, [not c for c in chat])
        ids, mask = ids.repeat_interleave(cfg.k, 0), mask.repeat_interleave(cfg.k, 0)  # [b*k, P]
        uniforms = torch.cat([row_uniforms(cfg.seed, start + i, cfg.k, cfg.max_new_tokens)
                              for i in range(len(chunk))])                          # [b*k, T]
        comp_ids, comp_mask, _, truncated, _ = sample(model, ids, mask, uniforms, eos, pad,
                                                      cfg.temperature, cfg.top_p)
        decoded = tokenizer.batch_decode(torch.where(comp_mask.bool(), comp_ids, pad),
                                         skip_special_tokens=True)
        for j, text in enumerate(decoded):
            row, is_chat = chunk[j // cfg.k], chat[j // cfg.k]
            if not text.strip():
                dropped += 1
                continue
            completion = [{"role": "assistant", "content": text}] if is_chat else text
            out.append({"prompt": row["prompt"], "completion": completion,
                        "sample_index": j % cfg.k, "truncated": bool(truncated[j]),
                        **{k: v for k, v in row.items() if k not in SAMPLE_FIELDS}})
    return out, dropped
