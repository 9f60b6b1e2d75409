"""Loading datasets in TRL's formats, with errors that name file, line and field.

Every loader returns a list of ``Row`` (``readers.load_rows``: the row's fields plus ``_file`` and
``_line``) checked for its format: ``load_prompts`` (``prompt`` or ``messages``),
``load_preferences`` (``prompt``/``chosen``/``rejected``, explicit or implicit prompt),
``load_scored`` (``prompt``/``completion``/``score``) and ``load_sft`` (``prompt``/``completion``
or ``messages``). Bad user input raises :class:`scorealign.errors.DataError` with a one-line
message such as ``data.jsonl line 3: missing field 'chosen'``. Sources and file formats:
``readers.py``.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

from ..core.io import atomic_write_text
from ..core.tiny import toy_prompts
from ..errors import DataError
from .readers import PRIVATE_KEYS, Row, kind_of, load_rows, row_error, row_location

Prompt = str | list[dict]

NO_CHAT_TEMPLATE = ("tokenizer has no chat template; conversational prompts need one "
                    "(set tokenizer.chat_template or use plain-string prompts)")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _check_messages(row: Row, field: str, messages: list) -> list[dict]:
    """Every entry must be ``{"role": str, "content": str}``; the list must not be empty."""
    if not messages:
        raise row_error(row, f"field '{field}' is empty")
    for number, message in enumerate(messages, 1):
        if not isinstance(message, dict):
            raise row_error(row, f"field '{field}' message {number} is not an object ({_short(message)})")
        for key in ("role", "content"):
            if not isinstance(message.get(key), str):
                raise row_error(row, f"field '{field}' message {number} has no string '{key}'")
    return messages


def _check_text(row: Row, field: str, value: Any, conversational: bool | None = None) -> Prompt:
    """A non-blank string or a non-empty message list (``conversational`` forces one of them)."""
    if value is None:
        raise row_error(row, f"missing field '{field}'")
    if isinstance(value, str) and conversational is not True:
        if not value.strip():
            raise row_error(row, f"field '{field}' is empty")
        return value
    if isinstance(value, list) and conversational is not False:
        _check_messages(row, field, value)
        if not any(message["content"].strip() for message in value):
            raise row_error(row, f"field '{field}' is empty")
        return value
    wanted = {None: "a string or a list of chat messages", True: "a list of chat messages (as "
              "the prompt is)", False: "a string (as the prompt is)"}
    raise row_error(row, f"field '{field}' must be {wanted[conversational]}, got {kind_of(value)}")


def _require_user_turn(row: Row, field: str, prompt: Prompt) -> Prompt:
    """A conversational prompt must hold a user turn (a system turn alone asks nothing)."""
    if isinstance(prompt, list) and not any(m["role"] == "user" for m in prompt):
        roles = ", ".join(m["role"] for m in prompt)
        raise row_error(row, f"field '{field}' has no user turn before the final assistant turn "
                             f"(roles: {roles})")
    return prompt


def _split_last_assistant(row: Row, messages: Any) -> tuple[list[dict], list[dict]]:
    """``messages`` -> (all turns before the final assistant turn, [final assistant turn])."""
    messages = _check_text(row, "messages", messages, conversational=True)
    if messages[-1]["role"] != "assistant":
        raise row_error(row, f"field 'messages' must end with an assistant turn (last role is "
                         f"'{messages[-1]['role']}')")
    if len(messages) < 2:
        raise row_error(row, "field 'messages' has no turns before the final assistant turn")
    if not messages[-1]["content"].strip():
        raise row_error(row, "field 'messages' has an empty final assistant turn")
    return _require_user_turn(row, "messages", messages[:-1]), messages[-1:]


def _parse_score(row: Row, field: str) -> float:
    """``row[field]`` as a finite float (numbers and numeric strings; booleans are rejected)."""
    value = row.get(field)
    if value is None:
        raise row_error(row, f"missing field '{field}'")
    try:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ValueError
        score = float(value)
    except (ValueError, OverflowError):
        raise row_error(row, f"field '{field}' is not a number ({_short(value)})") from None
    if not math.isfinite(score):
        raise row_error(row, f"field '{field}' is not finite ({score})")
    return score


def load_prompts(source: str | os.PathLike, field: str = "prompt", split: str = "train") -> list[Row]:
    """Prompt rows for online training: each result row holds ``prompt`` plus all other fields.

    The prompt comes from ``field``; when ``field == "prompt"`` and a row has ``messages``
    instead, the prompt is those messages without a final assistant turn. A prompt is a
    non-blank string or a non-empty list of ``{"role", "content"}`` messages.
    """
    out = []
    for row in load_rows(source, split):
        if row.get(field) is None and field == "prompt" and row.get("messages") is not None:
            messages = _check_text(row, "messages", row["messages"], conversational=True)
            if messages[-1]["role"] == "assistant":
                messages = messages[:-1]
            if not messages:
                raise row_error(row, "field 'messages' has no turns before the final assistant turn")
            prompt = _check_text(row, "messages", messages, conversational=True)
        else:
            prompt = _check_text(row, field, row.get(field))
        prompt = _require_user_turn(row, field if row.get(field) is not None else "messages",
                                    prompt)
        out.append({**row, "prompt": prompt})
    return out


def _implicit_prompt(row: Row, chosen: Any, rejected: Any) -> tuple[list, list, list]:
    """Split full ``chosen``/``rejected`` conversations into (shared prefix, rest, rest)."""
    for field, value in (("chosen", chosen), ("rejected", rejected)):
        if not isinstance(value, list):
            raise row_error(row, f"missing field 'prompt' (needed when '{field}' is {kind_of(value)}; "
                             "only conversational rows can have an implicit prompt)")
    shared = 0
    while shared < min(len(chosen), len(rejected)) and chosen[shared] == rejected[shared]:
        shared += 1
    if shared == 0:
        raise row_error(row, "missing field 'prompt' ('chosen' and 'rejected' share no leading messages)")
    return chosen[:shared], chosen[shared:], rejected[shared:]


def load_preferences(source: str | os.PathLike, split: str = "train") -> list[Row]:
    """Preference pairs for DPO/IPO/reward models, in TRL's standard, conversational and
    implicit-prompt formats; each result row holds ``prompt``, ``chosen`` and ``rejected``.

    Conversational rows keep ``chosen``/``rejected`` as message lists; implicit-prompt rows
    (full conversations, no ``prompt``) use the shared leading messages as the prompt.
    """
    out = []
    for row in load_rows(source, split):
        chosen = _check_text(row, "chosen", row.get("chosen"))
        rejected = _check_text(row, "rejected", row.get("rejected"))
        if row.get("prompt") is None:
            prompt, chosen, rejected = _implicit_prompt(row, chosen, rejected)
        else:
            prompt = _check_text(row, "prompt", row["prompt"])
        conversational = isinstance(prompt, list)
        chosen = _check_text(row, "chosen", chosen, conversational)
        rejected = _check_text(row, "rejected", rejected, conversational)
        out.append({**row, "prompt": prompt, "chosen": chosen, "rejected": rejected})
    return out


_PAIR_KEYS = ("completion_a", "score_a", "completion_b", "score_b")


def load_scored(source: str | os.PathLike, split: str = "train") -> list[Row]:
    """Scored completions for offline CoPG, always returned in long format.

    Rows are either ``prompt, completion, score`` or the pair format ``prompt, completion_a,
    score_a, completion_b, score_b``; a pair row becomes two rows sharing its ``_line``.
    ``score`` is converted to a finite float.
    """
    out = []
    for row in load_rows(source, split):
        prompt = _check_text(row, "prompt", row.get("prompt"))
        conversational = isinstance(prompt, list)
        if row.get("completion") is None and row.get("completion_a") is not None:
            base = {k: v for k, v in row.items() if k not in _PAIR_KEYS}
            for suffix in ("_a", "_b"):
                completion = _check_text(row, "completion" + suffix, row.get("completion" + suffix),
                                         conversational)
                score = _parse_score(row, "score" + suffix)
                out.append({**base, "prompt": prompt, "completion": completion, "score": score})
        else:
            completion = _check_text(row, "completion", row.get("completion"), conversational)
            out.append({**row, "prompt": prompt, "completion": completion,
                        "score": _parse_score(row, "score")})
    return out


def is_blank(value: Any) -> bool:
    """A whitespace-only string, or messages whose contents are all whitespace."""
    if isinstance(value, str):
        return not value.strip()
    return isinstance(value, list) and all(isinstance(m, dict) and isinstance(m.get("content"), str)
                                           and not m["content"].strip() for m in value)


def load_sft(source: str | os.PathLike, split: str = "train", blank_ok: bool = False) -> list[Row]:
    """Supervised rows with ``prompt`` and ``completion``.

    Rows are ``prompt/completion`` (strings, or message lists for both) or ``messages``, where
    the prompt is every turn but the last and the completion is ``[last assistant turn]``.
    ``blank_ok``: a blank completion is kept as it is (evaluation: a model that said nothing).
    """
    out = []
    for row in load_rows(source, split):
        if row.get("prompt") is None and row.get("messages") is not None:
            prompt, completion = _split_last_assistant(row, row["messages"])
        else:
            prompt = _check_text(row, "prompt", row.get("prompt"))
            completion = row.get("completion")
            if not (blank_ok and completion is not None and is_blank(completion)):
                completion = _check_text(row, "completion", completion, isinstance(prompt, list))
        out.append({**row, "prompt": prompt, "completion": completion})
    return out


def render_prompt(tokenizer: Any, prompt: Prompt) -> str:
    """A string prompt unchanged; messages through the tokenizer's chat template, with the
    generation prompt appended. Raises DataError when the tokenizer has no chat template."""
    if isinstance(prompt, str):
        return prompt
    if not getattr(tokenizer, "chat_template", None):
        raise DataError(NO_CHAT_TEMPLATE)
    return tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)


def group_by_prompt(rows: Sequence[Row], key: str = "prompt") -> list[list[Row]]:
    """Rows grouped by ``row[key]`` in first-seen order; message lists compare by JSON dump."""
    groups: dict[tuple[str, str], list[Row]] = {}
    for row in rows:
        if key not in row:
            raise row_error(row, f"missing field '{key}'")
        value = row[key]
        group_key = (("str", value) if isinstance(value, str)
                     else ("json", json.dumps(value, sort_keys=True, default=str)))
        groups.setdefault(group_key, []).append(row)
    return list(groups.values())


def row_fields(rows: Sequence[Row], exclude: Iterable[str] = ("prompt",)) -> dict[str, list]:
    """Extra columns as keyword lists (TRL's reward-function convention): one list per key with
    one entry per row, ``None`` where a row lacks the key; ``_file``/``_line`` are dropped."""
    skip = set(exclude) | set(PRIVATE_KEYS)
    keys = list(dict.fromkeys(k for row in rows for k in row if k not in skip))
    return {k: [row.get(k) for row in rows] for k in keys}


def load_prompt_rows(cfg, dataset: str | None = None) -> list[dict]:
    """Prompt rows from ``dataset`` (default ``cfg.dataset``; 'toy' = the built-in toy prompts)."""
    dataset = dataset or cfg.dataset
    if dataset == "toy":
        return [{"prompt": p} for p in toy_prompts(256, cfg.seed)]
    return load_prompts(dataset, cfg.prompt_field, cfg.dataset_split)


def prompt_texts(tokenizer, prompts: list) -> tuple[list[str], list[bool]]:
    """Render prompts to text (chat template for message lists); flag which were chats."""
    return [render_prompt(tokenizer, p) for p in prompts], [not isinstance(p, str) for p in prompts]


def write_jsonl(path: str | Path, rows: list[Row]) -> None:
    """Rows minus ``_file``/``_line`` as JSON lines, atomically (non-JSON values become str)."""
    lines = [json.dumps({k: v for k, v in row.items() if k not in PRIVATE_KEYS},
                        ensure_ascii=False, default=str) for row in rows]
    atomic_write_text(Path(path), "".join(line + "\n" for line in lines))


def completion_text(row: Row) -> str:
    """The text a reward source scores: the completion string, or the content of a
    conversational completion's single assistant message."""
    completion = row["completion"]
    if isinstance(completion, str):
        return completion
    if len(completion) != 1 or completion[0]["role"] != "assistant":
        roles = [m["role"] for m in completion]
        raise DataError(f"{row_location(row)}: field 'completion' must be one assistant message "
                        f"to be scored, got roles {roles}")
    return completion[0]["content"]
