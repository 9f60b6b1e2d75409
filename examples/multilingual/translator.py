"""Example translator for `translator: file:examples/multilingual/translator.py:translate`.

`translate(texts, source_lang, target_lang) -> list[str]`, one output per input. This toy one
only knows a few phrases (so the example runs offline); for real data use
`translator: seq2seq:Helsinki-NLP/opus-mt-{src}-{tgt}` or wrap NLLB/M2M100 in a callable.
"""

PHRASES = {
    "fr": {"say yes": "dites oui, s'il vous plaît", "one two three": "un deux trois",
           "hello world": "bonjour tout le monde"},
    "es": {"say yes": "diga que sí, por favor", "one two three": "uno dos tres",
           "hello world": "hola a todo el mundo"},
}
FILLER = {"fr": "voici une réponse écrite en français pour l'exemple",
          "es": "esta es una respuesta escrita en español para el ejemplo"}


def translate(texts, source_lang, target_lang):
    """Known phrases from the table; anything else becomes filler as long as the input + 4 words."""
    table, filler = PHRASES.get(target_lang, {}), FILLER.get(target_lang, "").split()
    return [table.get(t.strip()) or " ".join(filler[i % len(filler)] for i in range(len(t.split()) + 4))
            for t in texts]
