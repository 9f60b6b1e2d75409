"""One sampled completion per prompt row from a local model or hub id, for the evaluation and
data commands (eval-safety, eval-winrate, synth-prefs). A thin layer over ``tools.sample_rows``
(the training sampler, uniforms seeded per prompt row), so results do not depend on batch size.
"""

from __future__ import annotations

from scorealign.data import Row
from scorealign.models import load_causal_lm, quiet_transformers
from scorealign.tools import SampleConfig, completion_text, sample_rows

GENERATION_KEYS = ("trust_remote_code", "dtype", "max_prompt_tokens", "max_new_tokens",
                   "temperature", "top_p", "batch_size", "seed")


def generate_completions(model_path: str, rows: list[Row], cfg) -> tuple[list[Row], int]:
    """``rows`` (each with ``prompt``) -> (rows + ``completion`` string, blank ones dropped).

    ``cfg`` is any config with the ``GENERATION_KEYS`` fields. Output rows keep every input
    field; ``completion`` is always plain text (the assistant message's content for chats).
    """
    from transformers import AutoTokenizer

    quiet_transformers()
    sample_cfg = SampleConfig(model=model_path, k=1,
                              **{key: getattr(cfg, key) for key in GENERATION_KEYS})
    model = load_causal_lm(model_path, sample_cfg, trainable=False)
    tokenizer = AutoTokenizer.from_pretrained(model_path, trust_remote_code=cfg.trust_remote_code)
    out, dropped = sample_rows(model, tokenizer, rows, sample_cfg)
    return [{**r, "completion": completion_text(r)} for r in out], dropped
