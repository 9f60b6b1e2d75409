"""`scorealign synth-prefs`: multilingual preference pairs by the recipe of arXiv 2407.02552.

Step 1  translate each source-language prompt into every target language (a ``translator``).
Step 2  every policy answers every translated prompt. A policy is ``direct:MODEL`` (answers the
        translated prompt: "in-language") or ``translate:MODEL`` (answers the source prompt, then
        the answer is translated: "English-then-translated").
Step 3  every candidate is scored by the reward source (row fields: ``language``,
        ``source_prompt``, ``policy``) and judged by the language-fidelity gate.
Step 4  per (prompt, language): among candidates that pass the gate, chosen = best score,
        rejected = worst; the pair is kept when chosen - rejected >= ``min_margin`` and > 0.
Step 5  rows in TRL's preference format (``prompt, chosen, rejected``) plus provenance, written
        atomically as JSONL.

Deviation from the paper: it contrasts a strong in-language model with a weaker model's
translated English answer and ranks them with a reward model; here the policies, their strategy
and the reward source are all configurable, and pairs come from the best/worst gated candidates.

Translators (``translator_from_spec``): ``py:mod:fn`` / ``file:path.py:fn`` naming
``translate(texts, source_lang, target_lang) -> list[str]``, or ``seq2seq:PATH`` for an
``AutoModelForSeq2SeqLM`` (Marian-style, one model per direction: ``{src}`` and ``{tgt}`` in PATH
are replaced by the language codes, e.g. ``seq2seq:Helsinki-NLP/opus-mt-{src}-{tgt}``). Models
that need a target-language token (NLLB, M2M100) should be wrapped in a callable.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Callable

import torch

from ..core.config import (
    RewardSourcesBlock,
    SamplingBlock,
    SandboxBlock,
    config_from_argv,
    to_dict,
)
from ..core.models import load_pretrained
from ..data.formats import load_prompts, write_jsonl
from ..data.readers import Row, row_location
from ..errors import ConfigError, DataError, one_line
from ..rewards.language import LanguageFidelity, normalize_language
from ..rewards.sandbox import DEFAULT_LIMITS, sandbox_limits
from ..rewards.sources import load_user_function, rewards_from_config, score_rows

STRATEGIES = ("direct", "translate")


@dataclasses.dataclass(frozen=True)
class SynthConfig(SandboxBlock, RewardSourcesBlock, SamplingBlock):
    """`scorealign synth-prefs`: translate prompts, sample several policies, keep gated pairs."""

    prompts: str = ""  # source-language prompt rows (.jsonl/.json/.parquet/.csv, dir or hub id; string prompts)
    prompt_field: str = "prompt"  # column holding the prompt
    source_language: str = "en"  # language of the prompts
    target_languages: tuple[str, ...] = ("fr",)  # languages to build pairs in (codes or names)
    translator: str = ""  # py:mod:fn | file:path.py:fn (translate(texts, src, tgt) -> list[str]) | seq2seq:PATH ({src}/{tgt} filled in)
    policies: tuple[str, ...] = ()  # two or more direct:MODEL (answers the translated prompt) | translate:MODEL (answer translated)
    rewards: tuple[str, ...] = ()  # score sources: py:mod:fn | file:path.py:fn | model:path | builtin:name[:arg]
    language_gate: bool = True  # drop candidates not judged to be in the target language
    allow_undetermined: bool = False  # let candidates too short to judge pass the gate
    min_words: int = 3  # fewer words than this: the language is undetermined
    min_margin: float = 0.0  # keep a pair when score(chosen) - score(rejected) >= min_margin (and > 0)
    source_dataset: str = ""  # provenance: name of the source data (default: the prompts path)
    license: str = "unknown"  # provenance: licence tag of the source data, copied into every row
    max_new_tokens: int = 128  # completion (and translation) length limit
    batch_size: int = 16  # prompts per generation / translation / reward call
    output: str = "prefs.jsonl"  # TRL preference JSONL: prompt, chosen, rejected + provenance fields

    def __post_init__(self):
        super().__post_init__()
        for key in ("prompts", "translator", "rewards"):
            if not getattr(self, key):
                raise ConfigError(f"{key}: required")
        if len(self.policies) < 2:
            raise ConfigError("policies: give two or more, as direct:MODEL or translate:MODEL")
        for spec in self.policies:
            strategy, _, model = spec.partition(":")
            if strategy not in STRATEGIES or not model:
                raise ConfigError(f"policies: {spec!r} must be direct:MODEL or translate:MODEL")
        for key in ("source_language", "target_languages"):
            values = getattr(self, key)
            try:
                [normalize_language(v) for v in ([values] if isinstance(values, str) else values)]
            except ValueError as e:
                raise ConfigError(f"{key}: {e}") from None


# ------------------------------------------------------------------------------ translators


class Seq2SeqTranslator:
    """An ``AutoModelForSeq2SeqLM`` per direction, greedy decoding; loaded on first use."""

    def __init__(self, path: str, max_new_tokens: int = 256, batch_size: int = 16,
                 trust_remote_code: bool = False) -> None:
        self.path, self.max_new_tokens, self.batch_size = path, max_new_tokens, batch_size
        self.trust_remote_code, self.name = trust_remote_code, f"seq2seq:{path}"
        self._loaded: dict[str, tuple[Any, Any]] = {}

    def __call__(self, texts: list[str], source_lang: str, target_lang: str) -> list[str]:
        from transformers import AutoModelForSeq2SeqLM

        path = self.path.replace("{src}", source_lang).replace("{tgt}", target_lang)
        if path not in self._loaded:
            model, tokenizer = load_pretrained(AutoModelForSeq2SeqLM, path, "translation model",
                                               self.trust_remote_code)
            self._loaded[path] = model.eval(), tokenizer
        model, tokenizer = self._loaded[path]
        out = []
        with torch.inference_mode():
            for s in range(0, len(texts), self.batch_size):
                enc = tokenizer(texts[s:s + self.batch_size], return_tensors="pt", padding=True,
                                truncation=True)
                ids = model.generate(**enc, do_sample=False, num_beams=1,
                                     max_new_tokens=self.max_new_tokens)
                out += tokenizer.batch_decode(ids, skip_special_tokens=True)
        return out


def translator_from_spec(spec: str, cfg: SynthConfig | None = None) -> Callable[..., list[str]]:
    """``py:``/``file:`` callables or ``seq2seq:PATH`` (module docstring)."""
    if spec.startswith("seq2seq:") and spec[len("seq2seq:"):]:
        return Seq2SeqTranslator(spec[len("seq2seq:"):], cfg.max_new_tokens if cfg else 256,
                                 cfg.batch_size if cfg else 16, bool(cfg and cfg.trust_remote_code))
    if not spec.startswith(("py:", "file:")):
        raise ConfigError(f"unknown translator {spec!r}; use py:mod:fn, file:path.py:fn or "
                          "seq2seq:PATH")
    source = load_user_function(spec, sandbox_limits(cfg) if cfg else DEFAULT_LIMITS)
    return CallableTranslator(source.fn, source.name)


@dataclasses.dataclass(frozen=True)
class CallableTranslator:
    """``fn(texts, source_lang, target_lang) -> list[str]`` with a name for messages."""

    fn: Callable[[list[str], str, str], list[str]]
    name: str

    def __call__(self, texts: list[str], source_lang: str, target_lang: str) -> list[str]:
        return self.fn(texts, source_lang, target_lang)


def translate(translator, texts: list[str], source: str, target: str) -> list[str]:
    """``texts`` translated (identity when the languages agree); checks the result's shape."""
    if source == target or not texts:
        return list(texts)
    name = getattr(translator, "name", repr(translator))
    try:
        out = translator(list(texts), source, target)
    except Exception as e:
        raise ConfigError(f"translator {name!r} raised {one_line(e)} ({source}->{target})") from e
    if not isinstance(out, (list, tuple)) or len(out) != len(texts) or not all(
            isinstance(t, str) for t in out):
        raise ConfigError(f"translator {name!r} must return {len(texts)} strings ({source}->{target})")
    return list(out)


# ------------------------------------------------------------------------------ steps 1-4


def candidates_for(cfg: SynthConfig, rows: list[Row], translator) -> list[Row]:
    """Steps 1-2: one candidate row per (prompt, target language, policy)."""
    from ..engine.generate import generate_completions

    src = normalize_language(cfg.source_language)
    targets = [normalize_language(t) for t in cfg.target_languages]
    sources = [r["prompt"] for r in rows]
    translated = {t: translate(translator, sources, src, t) for t in targets}       # step 1
    out = []
    for policy in cfg.policies:                                                     # step 2
        strategy, _, model = policy.partition(":")
        if strategy == "translate":
            answers = _answers(generate_completions(model, rows, cfg)[0], len(rows))
        for t in targets:
            if strategy == "direct":
                in_lang = [{**r, "prompt": translated[t][i]} for i, r in enumerate(rows)]
                texts = _answers(generate_completions(model, in_lang, cfg)[0], len(rows))
            else:
                texts = _translate_some(translator, answers, src, t)
            out += [{"prompt": translated[t][i], "completion": c, "source_prompt": sources[i],
                     "language": t, "policy": policy, "prompt_index": i,
                     "_file": rows[i].get("_file"), "_line": rows[i].get("_line")}
                    for i, c in enumerate(texts) if c is not None]
    return out


def _answers(generated: list[Row], n: int) -> list[str | None]:
    """Completions by prompt index (None where the sampler dropped a blank completion)."""
    by_index: list[str | None] = [None] * n
    for row in generated:
        by_index[row["prompt_index"]] = row["completion"]
    return by_index


def _translate_some(translator, texts: list[str | None], src: str, tgt: str) -> list[str | None]:
    keep = [i for i, t in enumerate(texts) if t is not None]
    done = translate(translator, [texts[i] for i in keep], src, tgt)
    out: list[str | None] = [None] * len(texts)
    for i, text in zip(keep, done):
        out[i] = text if text.strip() else None
    return out


def build_pairs(cfg: SynthConfig, candidates: list[Row], scores: list[float],
                verdicts: list[str]) -> tuple[list[Row], dict[str, int]]:
    """Step 4: best vs worst gated candidate per (prompt, language) -> (pairs, counts)."""
    allowed = {"match", "undetermined"} if cfg.allow_undetermined else {"match"}
    groups: dict[tuple[int, str], list[tuple[float, Row, str]]] = {}
    stats = {"candidates": len(candidates), "failed_gate": 0, "too_few_candidates": 0,
             "below_margin": 0, "kept": 0}
    for row, score, verdict in zip(candidates, scores, verdicts):
        groups.setdefault((row["prompt_index"], row["language"]), [])
        if cfg.language_gate and verdict not in allowed:
            stats["failed_gate"] += 1
            continue
        groups[(row["prompt_index"], row["language"])].append((score, row, verdict))
    pairs = []
    for (_, lang), group in groups.items():
        if len(group) < 2:
            stats["too_few_candidates"] += 1
            continue
        group.sort(key=lambda x: -x[0])                        # stable: ties keep policy order
        (best, chosen, v_c), (worst, rejected, v_r) = group[0], group[-1]
        if best - worst < cfg.min_margin or best <= worst:
            stats["below_margin"] += 1
            continue
        pairs.append(provenance(cfg, chosen, rejected, best, worst, v_c, v_r))
    stats["kept"] = len(pairs)
    return pairs, stats


def provenance(cfg: SynthConfig, chosen: Row, rejected: Row, best: float, worst: float,
               verdict_chosen: str, verdict_rejected: str) -> Row:
    """One output row: TRL preference fields, then where it came from."""
    return {"prompt": chosen["prompt"], "chosen": chosen["completion"],
            "rejected": rejected["completion"], "language": chosen["language"],
            "source_language": normalize_language(cfg.source_language),
            "source_prompt": chosen["source_prompt"], "chosen_policy": chosen["policy"],
            "rejected_policy": rejected["policy"], "chosen_score": best, "rejected_score": worst,
            "chosen_language_verdict": verdict_chosen,
            "rejected_language_verdict": verdict_rejected, "translator": cfg.translator,
            "reward": "+".join(cfg.rewards), "source_dataset": cfg.source_dataset or cfg.prompts,
            "source_line": chosen.get("_line"), "license": cfg.license}


def run_synth_prefs(cfg: SynthConfig, translator=None, reward=None) -> tuple[Path, dict[str, int]]:
    """Steps 1-5; ``translator``/``reward`` objects override the config's specs."""
    t0 = time.perf_counter()
    rows = [{**r, "prompt_index": i} for i, r in enumerate(load_prompts(cfg.prompts, cfg.prompt_field))]
    for row in rows:
        if not isinstance(row["prompt"], str):
            raise DataError(f"{row_location(row)}: field '{cfg.prompt_field}' must be a string "
                            "(chat prompts are not translated)")
    reward = reward or rewards_from_config(cfg)
    translator = translator or translator_from_spec(cfg.translator, cfg)
    candidates = candidates_for(cfg, rows, translator)                                  # 1-2
    scores = [r["score"] for r in score_rows(reward, candidates, cfg.batch_size, "fail")[0]]  # 3
    gate = LanguageFidelity(min_words=cfg.min_words)
    verdicts = [v.status for v in gate.judge([r["completion"] for r in candidates],
                                             language=[r["language"] for r in candidates])]
    pairs, stats = build_pairs(cfg, candidates, scores, verdicts)                       # 4
    write_jsonl(cfg.output, pairs)                                                      # 5
    print(f"built {stats['kept']} preference pairs from {len(rows)} prompts x "
          f"{len(cfg.target_languages)} languages x {len(cfg.policies)} policies in "
          f"{time.perf_counter() - t0:.1f} s ({stats['failed_gate']} candidates failed the "
          f"language gate, {stats['too_few_candidates']} groups had < 2 candidates, "
          f"{stats['below_margin']} below the margin); wrote {cfg.output}")
    return Path(cfg.output), {**stats, "config": to_dict(cfg)}


def main(argv: list[str]) -> int:
    """``scorealign synth-prefs CONFIG.yaml [--key value ...]``."""
    cfg = config_from_argv(SynthConfig, argv, "scorealign synth-prefs CONFIG.yaml [--key value ...]")
    if cfg is not None:
        run_synth_prefs(cfg)
    return 0
