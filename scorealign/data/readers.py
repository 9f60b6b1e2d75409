"""Reading dataset sources into rows tagged with where they came from.

``load_rows`` returns a list of ``Row``: a plain dict holding the row's fields plus two private
keys, ``_file`` (the source name) and ``_line`` (1-based line for JSONL files, 1-based row for
every other source). Unreadable or malformed sources raise :class:`scorealign.errors.DataError`
with a one-line message naming the file and line (``data.jsonl line 3: invalid JSON (...)``).

Sources: ``.jsonl``/``.ndjson``, ``.json`` (a list of objects, an object of columns, or JSON
lines), ``.parquet``, ``.csv``/``.tsv``, a directory written by ``Dataset.save_to_disk`` or
holding such files, else a Hugging Face hub id loaded with ``datasets.load_dataset``. The
formats' fields (``prompt``, ``chosen``/``rejected``, ``messages``, ...) are checked in
``formats.py``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable

from ..errors import DataError

Row = dict[str, Any]

PRIVATE_KEYS = ("_file", "_line")
_LINE_SUFFIXES = {".jsonl", ".ndjson"}
_FILE_SUFFIXES = _LINE_SUFFIXES | {".json", ".parquet", ".csv", ".tsv"}
_SPLIT_NAMES = {"train", "test", "validation", "valid", "val", "dev", "eval"}
_TEXT_FIELDS = ("prompt", "completion", "chosen", "rejected", "completion_a", "completion_b")


def row_location(row: Row) -> str:
    """``'data.jsonl line 3'`` (JSONL) or ``'data.csv row 3'`` (anything else) for ``row``."""
    file = str(row.get("_file", "<rows>"))
    word = "line" if Path(file).suffix.lower() in _LINE_SUFFIXES else "row"
    return f"{file} {word} {row.get('_line', '?')}"


def row_error(row: Row, message: str) -> DataError:
    """DataError ``'<file> line <n>: <message>'`` for ``row``."""
    return DataError(f"{row_location(row)}: {message}")


def kind_of(value: Any) -> str:
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
            raise row_error({"_file": name, "_line": number},
                        f"expected a JSON object, got {kind_of(record)}")
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
        raise DataError(f"{name}: expected a list of objects or an object of columns, got {kind_of(data)}")
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
