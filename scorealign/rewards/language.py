"""Language fidelity: is a completion written in the prompt's language?

Judged offline with ``py3langid`` (a naive-Bayes byte n-gram model shipped inside the wheel,
139 languages, BSD). Each judgement is one of

* ``match``        the text is in the expected language, or in a language of its confusable
                   cluster (see ``CLUSTERS``);
* ``mismatch``     the text is identified as another language (usually English);
* ``undetermined`` too little text to judge once code blocks, inline code and URLs are removed.

Rules, stated once:

1. Codes are normalised (``normalize_language``): case and region are dropped (``pt-BR`` -> pt),
   retired or macro codes mapped (iw->he, in->id, ji->yi, jw->jv, nb->no, fil->tl, zh-* -> zh),
   ISO 639-3 codes and English names accepted (``fra``, ``French``, ``espanol``), and the result
   must be a language the model knows; anything else raises ``ValueError``.
2. Candidates are restricted to the expected language's cluster plus English (a fresh
   ``LanguageIdentifier`` per candidate set: ``set_languages`` on the package's module-level
   identifier would be global state). The common failure this catches is answering in English; a
   German answer to a French prompt is only caught with ``restrict=False`` (all 139 languages).
   When English itself is expected the candidate set is all languages.
3. A prediction inside the expected language's cluster counts as a match: sr/hr/bs (one
   pluricentric language), hi/ur (spoken Hindustani differs mainly by script), id/ms, and
   ru/uk/bg/mk (Cyrillic languages the model confuses on short text).
4. Text with fewer than ``min_words`` words is undetermined; a run of CJK, kana, Hangul or Thai
   characters (written without spaces) counts one word per two characters.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import re
import unicodedata
from typing import Any, Iterable

CLUSTERS: tuple[frozenset[str], ...] = (
    frozenset({"sr", "hr", "bs"}), frozenset({"hi", "ur"}), frozenset({"id", "ms"}),
    frozenset({"ru", "uk", "bg", "mk"}),
)
RETIRED_CODES = {"iw": "he", "in": "id", "ji": "yi", "jw": "jv", "nb": "no", "fil": "tl",
                 "mo": "ro", "sh": "sr", "cmn": "zh"}
# code -> (English names, native names, ISO 639-3 codes); names are matched without accents
LANGUAGES: dict[str, tuple[str, ...]] = {
    "ar": ("arabic", "arabiya", "ara", "arb"), "bg": ("bulgarian", "bul"),
    "bn": ("bengali", "bangla", "ben"), "bs": ("bosnian", "bosanski", "bos"),
    "ca": ("catalan", "catala", "cat"), "cs": ("czech", "cestina", "ces", "cze"),
    "da": ("danish", "dansk", "dan"), "de": ("german", "deutsch", "deu", "ger"),
    "el": ("greek", "ell", "gre"), "en": ("english", "eng"),
    "es": ("spanish", "espanol", "castellano", "spa"), "et": ("estonian", "eesti", "est"),
    "fa": ("persian", "farsi", "fas", "per", "pes"), "fi": ("finnish", "suomi", "fin"),
    "fr": ("french", "francais", "fra", "fre"), "he": ("hebrew", "heb"),
    "hi": ("hindi", "hin"), "hr": ("croatian", "hrvatski", "hrv"),
    "hu": ("hungarian", "magyar", "hun"), "id": ("indonesian", "bahasa indonesia", "ind"),
    "it": ("italian", "italiano", "ita"), "ja": ("japanese", "jpn"),
    "ko": ("korean", "kor"), "lt": ("lithuanian", "lit"), "lv": ("latvian", "lav"),
    "mk": ("macedonian", "mkd", "mac"), "ms": ("malay", "bahasa melayu", "msa", "may", "zsm"),
    "nl": ("dutch", "nederlands", "nld", "dut"), "no": ("norwegian", "norsk", "nor", "nob"),
    "pl": ("polish", "polski", "pol"), "pt": ("portuguese", "portugues", "por"),
    "ro": ("romanian", "romana", "ron", "rum"), "ru": ("russian", "russkiy", "rus"),
    "sk": ("slovak", "slovencina", "slk", "slo"), "sl": ("slovenian", "slovene", "slv"),
    "sr": ("serbian", "srpski", "srp"), "sv": ("swedish", "svenska", "swe"),
    "sw": ("swahili", "kiswahili", "swa", "swh"), "ta": ("tamil", "tam"),
    "te": ("telugu", "tel"), "th": ("thai", "tha"),
    "tl": ("tagalog", "filipino", "tgl", "fil"), "tr": ("turkish", "turkce", "tur"),
    "uk": ("ukrainian", "ukrainska", "ukr"), "ur": ("urdu", "urd"),
    "vi": ("vietnamese", "tieng viet", "vie"), "zh": ("chinese", "mandarin", "zho", "chi"),
}
_ALIASES = {alias: code for code, names in LANGUAGES.items() for alias in names}

_FENCED_CODE = re.compile(r"```.*?(```|$)|~~~.*?(~~~|$)", re.DOTALL)
_INLINE_CODE = re.compile(r"`[^`\n]*`")
_URL = re.compile(r"(https?://|ftp://|www\.)\S+|\S+@\S+\.\w+", re.IGNORECASE)
_NO_SPACE_SCRIPT = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af\u0e00-\u0e7f]+")


@dataclasses.dataclass(frozen=True)
class LanguageVerdict:
    """One judgement: ``status`` in {match, mismatch, undetermined}; ``predicted`` is the
    identified code (None when undetermined); ``confidence`` its probability among candidates."""

    status: str
    expected: str
    predicted: str | None = None
    confidence: float = 0.0


@functools.lru_cache(maxsize=1)
def _full_identifier():
    """The packaged model (npz, no pickle), loaded once per process (~0.6 s)."""
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def supported_languages() -> frozenset[str]:
    """Codes the identifier knows (ISO 639-1 where one exists)."""
    return frozenset(_full_identifier().nb_classes)


@functools.lru_cache(maxsize=64)
def identifier_for(candidates: frozenset[str] | None):
    """A dedicated identifier restricted to ``candidates`` (None: all languages).

    A shallow copy shares the model arrays; ``set_languages`` only rebinds attributes on the copy,
    so neither the cached full model nor py3langid's module-level identifier is changed.
    """
    ident = copy.copy(_full_identifier())
    ident.set_languages(sorted(candidates) if candidates is not None else None)
    return ident


def _ascii_fold(text: str) -> str:
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()


def normalize_language(value: Any) -> str:
    """A language code, name or ISO 639-3 code -> the identifier's code; ValueError if unknown."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"language must be a non-empty string, got {value!r}")
    key = " ".join(_ascii_fold(value).strip().lower().replace("_", "-").split())
    if key.startswith("zh-"):
        key = "zh"
    base = key.split("-")[0] if "-" in key and " " not in key else key
    code = RETIRED_CODES.get(base) or _ALIASES.get(base) or base
    if code not in supported_languages():
        raise ValueError(f"unknown language code {value!r}")
    return code


def cluster_of(code: str) -> frozenset[str]:
    """The confusable cluster holding ``code`` (just ``{code}`` outside every cluster)."""
    return next((c for c in CLUSTERS if code in c), frozenset({code}))


def strip_non_prose(text: str) -> str:
    """``text`` without fenced code blocks, inline code, URLs and e-mail addresses."""
    for pattern in (_FENCED_CODE, _INLINE_CODE, _URL):
        text = pattern.sub(" ", text)
    return text


def count_words(text: str) -> int:
    """Whitespace words holding a letter; a no-space-script run counts len // 2 (at least 1)."""
    words = 0
    for token in text.split():
        runs = _NO_SPACE_SCRIPT.findall(token)
        if runs:
            words += sum(max(1, len(r) // 2) for r in runs)
        elif any(ch.isalpha() for ch in token):
            words += 1
    return words


def identify(text: str, candidates: Iterable[str] | None = None) -> tuple[str, float]:
    """(code, probability) of ``text`` among ``candidates`` (normalised; None: all languages)."""
    allowed = None if candidates is None else frozenset(normalize_language(c) for c in candidates)
    return identifier_for(allowed).classify(text)


def judge_language(text: str, expected: str, min_words: int = 3,
                   restrict: bool = True) -> LanguageVerdict:
    """Is ``text`` written in ``expected`` (a normalised code)? See the module docstring."""
    prose = strip_non_prose(text)
    if count_words(prose) < min_words:
        return LanguageVerdict("undetermined", expected)
    cluster = cluster_of(expected)
    candidates = cluster | {"en"} if restrict and expected != "en" else None
    predicted, confidence = identifier_for(candidates).classify(prose)
    status = "match" if predicted in cluster else "mismatch"
    return LanguageVerdict(status, expected, predicted, float(confidence))


class LanguageFidelity:
    """Reward source and filter: 1.0 if a completion is in the expected language, 0.0 if not,
    ``undetermined_score`` when too short to judge.

    The expected language is ``language`` when given (``builtin:language:fr``), else each row's
    ``field`` column (``builtin:language``). Values are normalised with ``normalize_language``;
    an unknown one raises ``ValueError`` naming the field and the batch row (commands that load
    data check the column first with :func:`check_language_field`, naming file and line).
    """

    def __init__(self, language: str | None = None, field: str = "language", min_words: int = 3,
                 undetermined_score: float = 0.5, restrict: bool = True) -> None:
        self.language = normalize_language(language) if language else None
        self.field, self.min_words = field, min_words
        self.undetermined_score, self.restrict = float(undetermined_score), restrict
        self.name = f"language:{self.language}" if self.language else "language"
        _full_identifier()  # fail early (and pay the load) at construction

    def expected_languages(self, n: int, row_fields: dict[str, list]) -> list[str]:
        """One normalised expected code per row."""
        if self.language:
            return [self.language] * n
        if self.field not in row_fields:
            raise ValueError(f"no '{self.field}' field in the rows: give the expected language "
                             f"as builtin:language:CODE or add a '{self.field}' column")
        out = []
        for i, value in enumerate(row_fields[self.field]):
            try:
                out.append(normalize_language(value))
            except ValueError as e:
                raise ValueError(f"row {i}: field '{self.field}': {e}") from None
        return out

    def judge(self, completions: list[str], **row_fields: list) -> list[LanguageVerdict]:
        expected = self.expected_languages(len(completions), row_fields)
        return [judge_language(c, e, self.min_words, self.restrict)
                for c, e in zip(completions, expected)]

    def score(self, verdict: LanguageVerdict) -> float:
        return {"match": 1.0, "mismatch": 0.0}.get(verdict.status, self.undetermined_score)

    def __call__(self, prompts: list, completions: list[str], **row_fields: list) -> list[float]:
        return [self.score(v) for v in self.judge(completions, **row_fields)]

    def __repr__(self) -> str:
        return f"LanguageFidelity({self.name!r})"


def check_language_field(rows: list[dict], field: str = "language") -> list[dict]:
    """Rows with ``field`` normalised in place of the raw value; DataError naming file, line and
    field for a missing or unknown language."""
    from ..data.readers import row_location
    from ..errors import DataError

    out = []
    for row in rows:
        if row.get(field) is None:
            raise DataError(f"{row_location(row)}: missing field '{field}'")
        try:
            out.append({**row, field: normalize_language(row[field])})
        except ValueError as e:
            raise DataError(f"{row_location(row)}: field '{field}': {e}") from None
    return out
