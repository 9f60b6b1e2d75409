"""Tiny causal LMs built locally: random weights from a config, a tokenizer trained with
`tokenizers` on generated text, saved with ``save_pretrained`` (safetensors) so that every user of
them goes through the real ``from_pretrained`` loading path. Nothing is downloaded."""

from __future__ import annotations

import random
from pathlib import Path

import torch

SPECIAL_TOKENS = ["<|pad|>", "<|bos|>", "<|eos|>", "<|user|>", "<|assistant|>", "<|system|>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|eos|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
TOY_WORDS = ("yes no cat dog sun moon red blue tree house one two three four water fire "
             "hello world good bad big small run walk eat read write open close up down").split()
ARCHITECTURES = ("llama", "gpt2", "gpt_neox", "qwen2")


def toy_corpus(n_lines: int = 2000, seed: int = 0, words: tuple[str, ...] = TOY_WORDS) -> list[str]:
    """Deterministic generated text: random sentences over a small word list."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(words) for _ in range(rng.randint(3, 12))) for _ in range(n_lines)]


def build_tokenizer(out_dir: str | Path, texts: list[str] | None = None, vocab_size: int = 96,
                    pad_to: int | None = None):
    """Train a byte-level BPE tokenizer on ``texts`` and save it (with a chat template).

    Its alphabet is the bytes seen in ``texts`` (kept small on purpose, so that a random tiny
    model emits each word often enough to learn from); other characters are dropped on encoding.
    ``pad_to``: fill the vocabulary up to this many ids with filler tokens (``w00000``, ...), so
    that a model with a real-size vocabulary (49152 for SmolLM2) decodes every id it samples
    (a BPE trained on the toy corpus stops far below that; unknown ids would decode to "").
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  show_progress=False)  # alphabet: the corpus's bytes only
    tok.train_from_iterator(texts if texts is not None else toy_corpus(), trainer=trainer)
    if pad_to is not None and pad_to > tok.get_vocab_size():
        tok = filled_vocabulary(tok, pad_to)
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<|pad|>", bos_token="<|bos|>",
                                 eos_token="<|eos|>")
    hf.chat_template = CHAT_TEMPLATE
    hf.save_pretrained(str(out_dir))
    return hf


def filled_vocabulary(tok, size: int):
    """``tok`` (a trained byte-level BPE) with filler entries `` w00000``, ... appended to its
    vocabulary up to ``size`` ids: ordinary vocabulary entries (no merge produces them, so
    encoding is unchanged), not added tokens, which would make loading take seconds."""
    import json

    from tokenizers import Tokenizer

    state = json.loads(tok.to_str())
    vocab = state["model"]["vocab"]
    start = len(vocab)
    vocab.update({f"\u0120w{i:05d}": start + i for i in range(size - tok.get_vocab_size())})
    return Tokenizer.from_str(json.dumps(state))


def model_config(arch: str, vocab_size: int, hidden: int = 32, layers: int = 2, heads: int = 4,
                 max_positions: int = 256, pad_id: int = 0, bos_id: int = 1, eos_id: int = 2):
    """A transformers config for a tiny model of architecture ``arch`` (one of ARCHITECTURES)."""
    from transformers import GPT2Config, GPTNeoXConfig, LlamaConfig, Qwen2Config

    ids = dict(pad_token_id=pad_id, bos_token_id=bos_id, eos_token_id=eos_id, vocab_size=vocab_size)
    if arch == "gpt2":
        return GPT2Config(n_embd=hidden, n_layer=layers, n_head=heads, n_positions=max_positions,
                          resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, **ids)
    common = dict(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                  intermediate_size=2 * hidden, max_position_embeddings=max_positions, **ids)
    if arch == "llama":
        return LlamaConfig(num_key_value_heads=heads // 2, tie_word_embeddings=True, **common)
    if arch == "qwen2":
        return Qwen2Config(num_key_value_heads=heads // 2, tie_word_embeddings=True, **common)
    if arch == "gpt_neox":
        return GPTNeoXConfig(hidden_dropout=0.0, attention_dropout=0.0, **common)
    raise ValueError(f"unknown tiny architecture {arch!r}; choose one of {ARCHITECTURES}")


def build_tiny_model(out_dir: str | Path, arch: str = "llama", hidden: int = 32, layers: int = 2,
                     heads: int = 4, vocab_size: int = 96, texts: list[str] | None = None,
                     seed: int = 0) -> Path:
    """Build tokenizer + random-weight model of ``arch`` into ``out_dir``; return the path.

    Load it back with ``AutoModelForCausalLM.from_pretrained(path)`` and
    ``AutoTokenizer.from_pretrained(path)``.
    """
    from transformers import AutoModelForCausalLM, GenerationConfig

    out_dir = Path(out_dir)
    tok = build_tokenizer(out_dir, texts, vocab_size)
    ids = tok.convert_tokens_to_ids(["<|pad|>", "<|bos|>", "<|eos|>"])
    config = model_config(arch, len(tok), hidden, layers, heads, pad_id=ids[0], bos_id=ids[1],
                          eos_id=ids[2])
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    model.generation_config = GenerationConfig(pad_token_id=ids[0], bos_token_id=ids[1],
                                               eos_token_id=ids[2])
    model.save_pretrained(str(out_dir), safe_serialization=True)
    return out_dir


def toy_prompts(n: int = 256, seed: int = 0) -> list[str]:
    """Prompts of the built-in toy task (a few random words each), for `algo` smoke runs."""
    rng = random.Random(seed + 1)
    return [" ".join(rng.choice(TOY_WORDS) for _ in range(rng.randint(2, 5))) for _ in range(n)]
