"""Language fidelity (scorealign.rewards.language): code normalisation, clusters, stripping, undetermined
short answers, the builtin:language reward, and accuracy on generated sentences."""

from __future__ import annotations

import random

import pytest

from scorealign.errors import DataError
from scorealign.rewards import language as L
from scorealign.rewards.sources import reward_from_spec, score_batch

# Template sentences per language: subject + verb phrase + object + place/time tail, 5-15 words.
WORDS = {
    "en": dict(subj=["my brother", "the teacher", "our neighbours", "this old man", "the children",
                     "a young doctor", "her best friend", "the farmer"],
               verb=["wants to buy", "is looking for", "often reads", "never forgets",
                     "would like to see", "has already found", "carefully prepares"],
               obj=["a new house", "the morning newspaper", "some fresh bread", "a long letter",
                    "the red bicycle", "a good book about history", "their dinner"],
               tail=["near the river", "every weekend", "before the meeting starts",
                     "with his family", "in the small village", "because it is cheaper", ""]),
    "fr": dict(subj=["mon frère", "le professeur", "nos voisins", "ce vieil homme", "les enfants",
                     "une jeune médecin", "sa meilleure amie", "le paysan"],
               verb=["veut acheter", "cherche", "lit souvent", "n'oublie jamais",
                     "voudrait voir", "a déjà trouvé", "prépare avec soin"],
               obj=["une nouvelle maison", "le journal du matin", "du pain frais",
                    "une longue lettre", "le vélo rouge", "un bon livre d'histoire", "leur dîner"],
               tail=["près de la rivière", "chaque week-end", "avant le début de la réunion",
                     "avec sa famille", "dans le petit village", "parce que c'est moins cher", ""]),
    "es": dict(subj=["mi hermano", "el profesor", "nuestros vecinos", "este anciano", "los niños",
                     "una joven médica", "su mejor amiga", "el campesino"],
               verb=["quiere comprar", "está buscando", "lee a menudo", "nunca olvida",
                     "le gustaría ver", "ya ha encontrado", "prepara con cuidado"],
               obj=["una casa nueva", "el periódico de la mañana", "pan fresco", "una carta larga",
                    "la bicicleta roja", "un buen libro de historia", "su cena"],
               tail=["cerca del río", "todos los fines de semana", "antes de que empiece la reunión",
                     "con su familia", "en el pequeño pueblo", "porque es más barato", ""]),
    "ru": dict(subj=["мой брат", "учитель", "наши соседи", "этот старик", "дети",
                     "молодой врач", "её лучшая подруга", "фермер"],
               verb=["хочет купить", "ищет", "часто читает", "никогда не забывает",
                     "хотел бы увидеть", "уже нашёл", "тщательно готовит"],
               obj=["новый дом", "утреннюю газету", "свежий хлеб", "длинное письмо",
                    "красный велосипед", "хорошую книгу по истории", "их ужин"],
               tail=["у реки", "каждые выходные", "перед началом собрания", "со своей семьёй",
                     "в маленькой деревне", "потому что это дешевле", ""]),
}
LANGS = tuple(WORDS)


def sentences(lang: str, n: int = 48, seed: int = 0) -> list[str]:
    """``n`` distinct generated sentences of 5-15 words (two clauses joined half the time)."""
    rng, w, out = random.Random(f"{lang}{seed}"), WORDS[lang], []
    while len(out) < n:
        clause = lambda: " ".join(x for x in (rng.choice(w["subj"]), rng.choice(w["verb"]),  # noqa: E731
                                              rng.choice(w["obj"]), rng.choice(w["tail"])) if x)
        text = clause() + (", " + clause() if rng.random() < 0.5 else "")
        if 5 <= len(text.split()) <= 15 and text not in out:
            out.append(text[0].upper() + text[1:] + ".")
    return out


def test_generated_sentences_are_5_to_15_words():
    for lang in LANGS:
        assert all(5 <= len(s.split()) <= 15 for s in sentences(lang))


def test_identification_and_fidelity_accuracy_at_least_95_percent():
    """Held-out generated sentences: identification among {en, fr, es, ru}, and the fidelity
    verdict (match when the expected language is the true one, mismatch for English text judged
    against fr/es/ru and for fr/es/ru text judged against English)."""
    ident, fidelity = {}, {}
    for lang in LANGS:
        texts = sentences(lang)
        ident[lang] = sum(L.identify(t, LANGS)[0] == lang for t in texts) / len(texts)
        checks = [L.judge_language(t, lang).status == "match" for t in texts]
        others = [x for x in LANGS if x != lang] if lang == "en" else ["en"]
        checks += [L.judge_language(t, o).status == "mismatch" for t in texts for o in others]
        fidelity[lang] = sum(checks) / len(checks)
    print("identification accuracy:", ident, "fidelity accuracy:", fidelity)
    assert all(acc >= 0.95 for acc in ident.values()), ident
    assert all(acc >= 0.95 for acc in fidelity.values()), fidelity


@pytest.mark.parametrize("text", ["Oui", "Bonjour!", "Extraordinairement.", "OK", "Да", "  ",
                                  "```python\nprint('hello world, how are you today')\n```",
                                  "see https://example.com/a/long/path/with/many/words"])
def test_short_or_code_only_text_is_undetermined(text):
    verdict = L.judge_language(text, "fr")
    assert verdict.status == "undetermined" and verdict.predicted is None


def test_code_blocks_and_urls_are_stripped_before_judging():
    text = ("Voici la fonction que vous avez demandée, elle est très simple :\n"
            "```python\ndef add(first_number, second_number):\n    return the sum of both\n```\n"
            "Pour plus de détails, consultez https://docs.python.org/the/english/documentation")
    assert L.judge_language(text, "fr").status == "match"
    assert "def add" not in L.strip_non_prose(text) and "https" not in L.strip_non_prose(text)


@pytest.mark.parametrize("raw, code", [("fr", "fr"), ("FR", "fr"), ("fr-CA", "fr"), ("pt_BR", "pt"),
                                       ("iw", "he"), ("fil", "tl"), ("Filipino", "tl"),
                                       ("english", "en"), ("French", "fr"), ("Español", "es"),
                                       ("rus", "ru"), ("fra", "fr"), ("srp", "sr"), ("zh-TW", "zh"),
                                       ("in", "id"), ("nb", "no")])
def test_normalize_language(raw, code):
    assert L.normalize_language(raw) == code


@pytest.mark.parametrize("raw", ["xx", "klingon", "", None, 3])
def test_unknown_language_raises(raw):
    with pytest.raises(ValueError):
        L.normalize_language(raw)


def test_prediction_inside_the_cluster_is_a_match():
    croatian = "Danas je lijep dan i idemo u grad kupiti kruh i mlijeko za obitelj."
    assert L.identify(croatian, ["hr", "sr", "bs", "en"])[0] in {"hr", "sr", "bs"}
    for expected in ("sr", "hr", "bs"):
        assert L.judge_language(croatian, expected).status == "match"
    ukrainian = "Сьогодні гарний день, і ми йдемо в місто купити хліб і молоко для родини."
    assert L.judge_language(ukrainian, "ru").status == "match"               # ru/uk/bg/mk cluster
    assert L.judge_language(ukrainian, "ru", restrict=False).status == "match"
    assert L.cluster_of("fr") == {"fr"} and L.cluster_of("ur") == {"hi", "ur"}


def test_restriction_uses_a_dedicated_identifier_not_global_state():
    import py3langid

    german = "Heute ist ein schöner Tag und wir gehen in die Stadt, um Brot zu kaufen."
    assert L.identify(german, ["fr", "en"])[0] in {"fr", "en"}
    assert L.identify(german)[0] == "de"                                     # unrestricted again
    assert py3langid.classify(german)[0] == "de"                             # package untouched
    assert L.judge_language(german, "fr", restrict=False).status == "mismatch"


def test_builtin_language_reward_through_reward_from_spec():
    texts = ["Je voudrais acheter une nouvelle maison près de la rivière.",
             "I would like to buy a new house near the river.", "Oui"]
    fixed = reward_from_spec("builtin:language:French")
    assert fixed.name == "language:fr"
    assert fixed(["p"] * 3, texts) == [1.0, 0.0, 0.5]
    per_row = reward_from_spec("builtin:language")
    assert per_row(["p"] * 3, texts, language=["en", "en", "en"]) == [0.0, 1.0, 0.5]
    custom = L.LanguageFidelity("fr", undetermined_score=0.0, min_words=1)
    assert custom(["p"], ["Bonjour"]) in ([1.0], [0.0])                      # judged, not 0.5
    scores, valid = score_batch(per_row, ["p"] * 2, texts[:2], {"language": ["fr", "es"]})
    assert scores.tolist() == [1.0, 0.0] and valid.all()


def test_builtin_language_errors_name_the_field_and_row():
    source = reward_from_spec("builtin:language")
    with pytest.raises(ValueError, match=r"row 1: field 'language': unknown language code 'xx'"):
        source(["p", "p"], ["a b c", "d e f"], language=["fr", "xx"])
    with pytest.raises(ValueError, match="no 'language' field"):
        source(["p"], ["a b c"])
    with pytest.raises(Exception, match="unknown language code 'zz'"):
        reward_from_spec("builtin:language:zz")


def test_check_language_field_names_file_line_and_field():
    rows = [{"language": "French", "_file": "d.jsonl", "_line": 1},
            {"language": "Elvish", "_file": "d.jsonl", "_line": 2}]
    with pytest.raises(DataError, match=r"^d.jsonl line 2: field 'language': unknown language"):
        L.check_language_field(rows)
    assert L.check_language_field(rows[:1])[0]["language"] == "fr"
    with pytest.raises(DataError, match=r"^d.jsonl line 3: missing field 'language'"):
        L.check_language_field([{"_file": "d.jsonl", "_line": 3}])
