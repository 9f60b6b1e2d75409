"""Loading datasets in TRL's formats, with errors that name file, line and field.

Every loader returns a list of ``Row``: a plain dict holding the row's fields plus two private
keys, ``_file`` (the source name) and ``_line`` (1-based line for JSONL files, 1-based row for
every other source). Bad user input raises :class:`scorealign.errors.DataError` with a one-line
message such as ``data.jsonl line 3: missing field 'chosen'``.

Sources: ``.jsonl``/``.ndjson``, ``.json`` (a list of objects, an object of columns, or JSON
lines), ``.parquet``, ``.csv``/``.tsv``, a directory written by ``Dataset.save_to_disk`` or
holding such files, else a Hugging Face hub id loaded with ``datasets.load_dataset``.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

from scorealign.errors import DataError

Row = dict[str, Any]
Prompt = str | list[dict]

PRIVATE_KEYS = ("_file", "_line")
_LINE_SUFFIXES = {".jsonl", ".ndjson"}
_FILE_SUFFIXES = _LINE_SUFFIXES | {".json", ".parquet", ".csv", ".tsv"}
_SPLIT_NAMES = {"train", "test", "validation", "valid", "val", "dev", "eval"}
_TEXT_FIELDS = ("prompt", "completion", "chosen", "rejected", "completion_a", "completion_b")
NO_CHAT_TEMPLATE = ("tokenizer has no chat template; conversational prompts need one "
                    "(set tokenizer.chat_template or use plain-string prompts)")


def row_location(row: Row) -> str:
    """``'data.jsonl line 3'`` (JSONL) or ``'data.csv row 3'`` (anything else) for ``row``."""
    file = str(row.get("_file", "<rows>"))
    word = "line" if Path(file).suffix.lower() in _LINE_SUFFIXES else "row"
    return f"{file} {word} {row.get('_line', '?')}"


def _fail(row: Row, message: str) -> DataError:
    return DataError(f"{row_location(row)}: {message}")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _kind(value: Any) -> str:
    """JSON-ish name of a value's type, for messages."""
    names = {str: "a string", bool: "a boolean", int: "a number", float: "a number",
             list: "a list", dict: "an object", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _tag(records: Iterable[Any], name: str, start: int = 1) -> list[Row]:
    """Attach ``_file``/``_line`` (1-based row numbers) to records that must be objects."""
    rows = []
    for number, record in enumerate(records, start):
        if not isinstance(record, dict):
            raise _fail({"_file": name, "_line": number},
                        f"expected a JSON object, got {_kind(record)}")
        rows.append({**record, "_file": name, "_line": number})
    return rows


def _json_error(name: str, line: int, exc: json.JSONDecodeError) -> DataError:
    return DataError(f"{name} line {line}: invalid JSON ({exc.msg}, column {exc.colno})")


def _read_jsonl(path: Path, name: str, by_row: bool = False) -> list[Row]:
    """Parse line by line, skipping blank lines; ``_line`` is the line (or, ``by_row``, row) number."""
    rows: list[Row] = []
    with open(path, encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise _json_error(name, line_no, exc) from None
            rows.extend(_tag([record], name, start=len(rows) + 1 if by_row else line_no))
    return rows


def _read_json(path: Path, name: str) -> list[Row]:
    """A list of objects, an object of equal-length columns, or JSON lines in a ``.json`` file."""
    text = path.read_text(encoding="utf-8")
    if not text.strip():
        return []
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data":  # several top-level values: JSON lines
            return _read_jsonl(path, name, by_row=True)
        raise _json_error(name, exc.lineno, exc) from None
    if isinstance(data, dict) and data and all(isinstance(v, list) for v in data.values()):
        lengths = {key: len(column) for key, column in data.items()}
        if len(set(lengths.values())) > 1:
            raise DataError(f"{name}: columns have different lengths ({lengths})")
        keys = list(data)
        data = [dict(zip(keys, values)) for values in zip(*data.values())]
    if not isinstance(data, list):
        raise DataError(f"{name}: expected a list of objects or an object of columns, got {_kind(data)}")
    return _tag(data, name)


def _read_table(path: Path, name: str) -> list[Row]:
    """Parquet (pyarrow) or CSV/TSV (pandas); missing cells become ``None``."""
    try:
        if path.suffix.lower() == ".parquet":
            import pyarrow.parquet as pq

            records = pq.read_table(path).to_pylist()
        else:
            import pandas as pd

            try:
                frame = pd.read_csv(path, sep="\t" if path.suffix.lower() == ".tsv" else ",",
                                    dtype=dict.fromkeys(_TEXT_FIELDS, str))  # "4" stays text
            except pd.errors.EmptyDataError:
                return []
            records = frame.astype(object).where(frame.notna(), None).to_dict("records")
    except (OSError, ValueError) as exc:  # pyarrow.ArrowInvalid and pandas ParserError are ValueErrors
        raise DataError(f"{name}: cannot read {path.suffix} file ({_first_line(exc)})") from None
    return _tag(records, name)


def _read_file(path: Path, name: str) -> list[Row]:
    suffix = path.suffix.lower()
    if suffix not in _FILE_SUFFIXES:
        raise DataError(f"{name}: unsupported file type '{suffix}' (use .jsonl, .json, .parquet or .csv)")
    try:
        if suffix in _LINE_SUFFIXES:
            return _read_jsonl(path, name)
        if suffix == ".json":
            return _read_json(path, name)
        return _read_table(path, name)
    except UnicodeDecodeError:
        raise DataError(f"{name}: not UTF-8 text") from None


def _split_files(directory: Path, split: str) -> list[Path]:
    """Data files of ``split`` in a directory: named after it, under a folder named after it,
    or, when no file is named after any split, all of them."""
    files = sorted(p for p in directory.rglob("*") if p.is_file() and p.suffix.lower() in _FILE_SUFFIXES)
    named = {}  # path -> split name from its folders or its stem ("train-00000-of-00001")
    for path in files:
        parts = [*path.relative_to(directory).parts[:-1], path.stem.split("-")[0].split("_")[0]]
        named[path] = next((part.lower() for part in parts if part.lower() in _SPLIT_NAMES), None)
    if not any(named.values()):
        return files
    chosen = [path for path, name in named.items() if name == split.lower()]
    if not chosen:
        found = ", ".join(sorted({name for name in named.values() if name}))
        raise DataError(f"{directory}: no data files for split '{split}' (found splits: {found})")
    return chosen


def _read_directory(directory: Path, name: str, split: str) -> list[Row]:
    """A ``save_to_disk`` directory (``Dataset`` or ``DatasetDict``) or a folder of data files."""
    if (directory / "dataset_dict.json").exists() or (directory / "state.json").exists():
        import datasets

        loaded = datasets.load_from_disk(str(directory))
        if isinstance(loaded, datasets.DatasetDict):
            if split not in loaded:
                raise DataError(f"{name}: no split '{split}' (available: {', '.join(loaded)})")
            loaded = loaded[split]
        return _tag(loaded.to_list(), name)
    files = _split_files(directory, split)
    if not files:
        raise DataError(f"{name}: directory holds no .jsonl, .json, .parquet or .csv files")
    return [row for path in files for row in _read_file(path, str(path))]


def _looks_like_path(source: str) -> bool:
    """True when ``source`` cannot be a hub id (``name`` or ``namespace/name``)."""
    return (source.startswith(("/", ".", "~")) or "\\" in source or source.count("/") > 1
            or Path(source).suffix.lower() in _FILE_SUFFIXES)


def _read_hub(source: str, split: str) -> list[Row]:
    import datasets

    not_found = f"dataset '{source}' not found (no such file, and not a Hugging Face dataset id)"
    try:
        loaded = datasets.load_dataset(source, split=split)
    except FileNotFoundError:  # includes datasets.exceptions.DatasetNotFoundError
        raise DataError(not_found) from None
    except Exception as exc:  # network, bad split, bad config: one line for the user
        raise DataError(f"cannot load dataset '{source}' split '{split}': {_first_line(exc)}") from None
    return _tag(loaded.to_list(), source)


def load_rows(source: str | os.PathLike, split: str = "train") -> list[Row]:
    """Load every row of ``source`` (file, directory or hub id) as dicts with ``_file``/``_line``.

    ``split`` picks the split of a ``DatasetDict`` directory, of a folder of split-named files
    (``train.jsonl``, ``test-00000.parquet``, ``train/...``) and of a hub dataset.
    Raises DataError when the source is missing, unreadable, malformed or has no rows.
    """
    name = os.fspath(source)
    path = Path(name).expanduser()
    if path.is_dir():
        rows = _read_directory(path, name, split)
    elif path.is_file():
        rows = _read_file(path, name)
    elif _looks_like_path(name):
        raise DataError(f"dataset '{name}' not found (no such file, and not a Hugging Face dataset id)")
    else:
        rows = _read_hub(name, split)
    if not rows:
        raise DataError(f"{name} has no rows")
    return rows


def _check_messages(row: Row, field: str, messages: list) -> list[dict]:
    """Every entry must be ``{"role": str, "content": str}``; the list must not be empty."""
    if not messages:
        raise _fail(row, f"field '{field}' is empty")
    for number, message in enumerate(messages, 1):
        if not isinstance(message, dict):
            raise _fail(row, f"field '{field}' message {number} is not an object ({_short(message)})")
        for key in ("role", "content"):
            if not isinstance(message.get(key), str):
                raise _fail(row, f"field '{field}' message {number} has no string '{key}'")
    return messages


def _check_text(row: Row, field: str, value: Any, conversational: bool | None = None) -> Prompt:
    """A non-blank string or a non-empty message list (``conversational`` forces one of them)."""
    if value is None:
        raise _fail(row, f"missing field '{field}'")
    if isinstance(value, str) and conversational is not True:
        if not value.strip():
            raise _fail(row, f"field '{field}' is empty")
        return value
    if isinstance(value, list) and conversational is not False:
        _check_messages(row, field, value)
        if not any(message["content"].strip() for message in value):
            raise _fail(row, f"field '{field}' is empty")
        return value
    wanted = {None: "a string or a list of chat messages", True: "a list of chat messages (as "
              "the prompt is)", False: "a string (as the prompt is)"}
    raise _fail(row, f"field '{field}' must be {wanted[conversational]}, got {_kind(value)}")


def _split_last_assistant(row: Row, messages: Any) -> tuple[list[dict], list[dict]]:
    """``messages`` -> (all turns before the final assistant turn, [final assistant turn])."""
    messages = _check_text(row, "messages", messages, conversational=True)
    if messages[-1]["role"] != "assistant":
        raise _fail(row, f"field 'messages' must end with an assistant turn (last role is "
                         f"'{messages[-1]['role']}')")
    if len(messages) < 2:
        raise _fail(row, "field 'messages' has no turns before the final assistant turn")
    if not messages[-1]["content"].strip():
        raise _fail(row, "field 'messages' has an empty final assistant turn")
    return messages[:-1], messages[-1:]


def _parse_score(row: Row, field: str) -> float:
    """``row[field]`` as a finite float (numbers and numeric strings; booleans are rejected)."""
    value = row.get(field)
    if value is None:
        raise _fail(row, f"missing field '{field}'")
    try:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ValueError
        score = float(value)
    except (ValueError, OverflowError):
        raise _fail(row, f"field '{field}' is not a number ({_short(value)})") from None
    if not math.isfinite(score):
        raise _fail(row, f"field '{field}' is not finite ({score})")
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
                raise _fail(row, "field 'messages' has no turns before the final assistant turn")
            prompt = _check_text(row, "messages", messages, conversational=True)
        else:
            prompt = _check_text(row, field, row.get(field))
        out.append({**row, "prompt": prompt})
    return out


def _implicit_prompt(row: Row, chosen: Any, rejected: Any) -> tuple[list, list, list]:
    """Split full ``chosen``/``rejected`` conversations into (shared prefix, rest, rest)."""
    for field, value in (("chosen", chosen), ("rejected", rejected)):
        if not isinstance(value, list):
            raise _fail(row, f"missing field 'prompt' (needed when '{field}' is {_kind(value)}; "
                             "only conversational rows can have an implicit prompt)")
    shared = 0
    while shared < min(len(chosen), len(rejected)) and chosen[shared] == rejected[shared]:
        shared += 1
    if shared == 0:
        raise _fail(row, "missing field 'prompt' ('chosen' and 'rejected' share no leading messages)")
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


def load_sft(source: str | os.PathLike, split: str = "train") -> list[Row]:
    """Supervised rows with ``prompt`` and ``completion``.

    Rows are ``prompt/completion`` (strings, or message lists for both) or ``messages``, where
    the prompt is every turn but the last and the completion is ``[last assistant turn]``.
    """
    out = []
    for row in load_rows(source, split):
        if row.get("prompt") is None and row.get("messages") is not None:
            prompt, completion = _split_last_assistant(row, row["messages"])
        else:
            prompt = _check_text(row, "prompt", row.get("prompt"))
            completion = _check_text(row, "completion", row.get("completion"), isinstance(prompt, list))
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
            raise _fail(row, f"missing field '{key}'")
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
