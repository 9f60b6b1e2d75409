"""Aya red-teaming data (arXiv 2406.18682; HF ``CohereLabs/aya_redteaming``, Apache-2.0).

Row format (one JSONL per language in the release)::

    {"prompt": str, "language": str, "harm_category": "[\\"Hate Speech\\", ...]",
     "global_or_local": "global" | "local", "literal_translation": str,
     "semantic_translation": str, "explanation": str}

:func:`load_redteam` reads a directory of such files, one JSONL/JSON/Parquet/CSV file, or a hub
id (through ``data.load_rows``) and returns rows with

* ``language``         normalised code (``langid.normalize_language``: "French"/"fra" -> fr,
                       "Filipino"/"fil"/"tgl" -> tl);
* ``harm_category``    a list of canonical names from ``HARM_CATEGORIES``. The release stores the
                       list as a string: parsed with ``json.loads``, then ``ast.literal_eval``
                       (literals only, never ``eval``); a bare string is one category. Spellings are
                       matched ignoring case, accents, punctuation, ``&`` vs ``and`` and plurals;
* ``global_or_local``  "global" or "local".

Other fields pass through. Any malformed row raises DataError naming file, line and field.
"""

from __future__ import annotations

import ast
import json
import os
import re
from typing import Any, Iterable

from ..data.readers import Row, load_rows, row_location
from ..errors import DataError
from ..rewards.language import normalize_language

HARM_CATEGORIES = (
    "Bullying & Harassment",
    "Discrimination & Injustice",
    "Graphic Material",
    "Harms of Representation, Allocation & Quality of Service",
    "Hate Speech",
    "Non-consensual sexual content",
    "Profanity",
    "Self-harm",
    "Violence, Threats & Incitement",
)
SCOPES = ("global", "local")
REDTEAM_FIELDS = ("prompt", "language", "harm_category", "global_or_local")  # required


def _category_key(name: str) -> str:
    """Spelling-insensitive key: lower case, '&' -> 'and', words without trailing 's'."""
    text = name.lower().replace("&", " and ")
    words = [re.sub(r"(ch|sh|ss|x)es$", r"\1", w) for w in re.findall(r"[a-z]+", text)]
    return " ".join(w[:-1] if len(w) > 3 and w.endswith("s") and not w.endswith("ss") else w
                    for w in words)


_CANONICAL = {_category_key(c): c for c in HARM_CATEGORIES}


def normalize_harm_category(name: str) -> str:
    """A category spelling -> its canonical name; ValueError listing the nine if unknown."""
    canonical = _CANONICAL.get(_category_key(str(name)))
    if canonical is None:
        raise ValueError(f"unknown harm category {name!r} (known: {'; '.join(HARM_CATEGORIES)})")
    return canonical


def parse_harm_categories(value: Any) -> list[str]:
    """``'["Hate Speech", "Profanity"]'`` / a list / one name -> canonical names (ValueError)."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                value = json.loads(text)
            except json.JSONDecodeError:
                try:
                    value = ast.literal_eval(text)          # "['Hate Speech']": literals only
                except (ValueError, SyntaxError):
                    raise ValueError(f"cannot parse {value!r} as a list of categories") from None
        else:
            value = [text] if text else []
    if hasattr(value, "tolist"):                             # numpy arrays from Parquet
        value = value.tolist()
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"expected a list of category names, got {value!r}")
    if not value:
        raise ValueError("no harm category given")
    return list(dict.fromkeys(normalize_harm_category(v) for v in value))


def check_redteam_row(row: Row) -> Row:
    """One raw row -> normalised row (DataError naming file, line and field)."""
    where = row_location(row)
    for field in REDTEAM_FIELDS:
        if row.get(field) is None or (isinstance(row[field], str) and not row[field].strip()):
            raise DataError(f"{where}: missing field '{field}'")
    if not isinstance(row["prompt"], str):
        raise DataError(f"{where}: field 'prompt' must be a string")
    try:
        language = normalize_language(row["language"])
    except ValueError as e:
        raise DataError(f"{where}: field 'language': {e}") from None
    try:
        categories = parse_harm_categories(row["harm_category"])
    except ValueError as e:
        raise DataError(f"{where}: field 'harm_category': {e}") from None
    scope = str(row["global_or_local"]).strip().lower()
    if scope not in SCOPES:
        raise DataError(f"{where}: field 'global_or_local' must be 'global' or 'local', "
                        f"got {row['global_or_local']!r}")
    return {**row, "language": language, "harm_category": categories, "global_or_local": scope}


def load_redteam(source: str | os.PathLike, splits: Iterable[str] = ("train",),
                 languages: Iterable[str] | None = None) -> list[Row]:
    """Normalised red-teaming rows from ``source`` (see the module docstring).

    ``splits`` are read in turn (the hub release names its splits after languages: "french",
    ...); ``languages`` keeps only rows in those languages (any spelling ``normalize_language``
    accepts).
    """
    if isinstance(splits, str):
        splits = [splits]
    rows = [check_redteam_row(r) for split in splits for r in load_rows(source, split)]
    if languages is not None:
        wanted = {normalize_language(lang) for lang in languages}
        rows = [r for r in rows if r["language"] in wanted]
        if not rows:
            raise DataError(f"{os.fspath(source)}: no rows in languages {sorted(wanted)}")
    return rows

