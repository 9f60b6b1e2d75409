"""The embedded verifiable tasks: short Python functions with unit tests (``builtin:unit_tests``),
arithmetic word problems and one-step sums and products, in English, French, Spanish and
Russian (``builtin:math``).

Rows are chat prompts (one user message) with a ``tests`` column (code) or an ``answer`` column
(math) plus ``language`` and ``id``; train and eval rows never share a function or a pair of
numbers. ``python -m scorealign.tasks.verifiable OUT_DIR`` writes
``{code,math,arith}_{train,eval}.jsonl`` (the files under ``examples/verifiable/``).
See ``docs/verifiable.md``.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path
from typing import Any

from ..core.io import atomic_write_text

Row = dict[str, Any]

# name, signature, what it does, five tests
CODE_TASKS = [
    ("add", "add(a, b)", "returns the sum of a and b",
     ["add(1, 2) == 3", "add(0, 0) == 0", "add(-4, 4) == 0", "add(10, 5) == 15", "add(2, -7) == -5"]),
    ("square", "square(x)", "returns x multiplied by itself",
     ["square(3) == 9", "square(0) == 0", "square(-2) == 4", "square(10) == 100", "square(1) == 1"]),
    ("is_even", "is_even(n)", "returns True if the integer n is even, else False",
     ["is_even(2) is True", "is_even(7) is False", "is_even(0) is True", "is_even(-3) is False",
      "is_even(100) is True"]),
    ("maximum", "maximum(xs)", "returns the largest number of the non-empty list xs",
     ["maximum([1, 5, 3]) == 5", "maximum([-1, -5]) == -1", "maximum([7]) == 7",
      "maximum([2, 2, 2]) == 2", "maximum([0, 10, -10]) == 10"]),
    ("reverse", "reverse(s)", "returns the string s reversed",
     ["reverse('abc') == 'cba'", "reverse('') == ''", "reverse('a') == 'a'",
      "reverse('hello') == 'olleh'", "reverse('ab ba') == 'ab ba'"]),
    ("count_vowels", "count_vowels(s)", "returns how many of the letters a, e, i, o, u are in "
     "the lowercase string s",
     ["count_vowels('hello') == 2", "count_vowels('') == 0", "count_vowels('xyz') == 0",
      "count_vowels('aeiou') == 5", "count_vowels('banana') == 3"]),
    ("factorial", "factorial(n)", "returns n! for an integer n >= 0",
     ["factorial(0) == 1", "factorial(1) == 1", "factorial(3) == 6", "factorial(5) == 120",
      "factorial(10) == 3628800"]),
    ("sum_list", "sum_list(xs)", "returns the sum of the numbers in the list xs",
     ["sum_list([1, 2, 3]) == 6", "sum_list([]) == 0", "sum_list([-1, 1]) == 0",
      "sum_list([10]) == 10", "sum_list([5, 5, 5, 5]) == 20"]),
    ("first", "first(xs)", "returns the first element of the list xs, or None if it is empty",
     ["first([3, 4]) == 3", "first([]) is None", "first(['a']) == 'a'", "first([0, 1]) == 0",
      "first([None, 2]) is None"]),
    ("absolute", "absolute(x)", "returns the absolute value of the number x",
     ["absolute(-3) == 3", "absolute(3) == 3", "absolute(0) == 0", "absolute(-0.5) == 0.5",
      "absolute(-100) == 100"]),
    ("is_palindrome", "is_palindrome(s)", "returns True if the string s reads the same "
     "backwards, else False",
     ["is_palindrome('abba') is True", "is_palindrome('abc') is False", "is_palindrome('') is True",
      "is_palindrome('racecar') is True", "is_palindrome('ab') is False"]),
    ("double_all", "double_all(xs)", "returns a new list with every number of xs multiplied by 2",
     ["double_all([1, 2]) == [2, 4]", "double_all([]) == []", "double_all([0]) == [0]",
      "double_all([-1, 5]) == [-2, 10]", "double_all([3, 3, 3]) == [6, 6, 6]"]),
    ("minimum", "minimum(a, b)", "returns the smaller of the numbers a and b",
     ["minimum(1, 2) == 1", "minimum(5, -5) == -5", "minimum(3, 3) == 3", "minimum(0, 9) == 0",
      "minimum(-1, -2) == -2"]),
    ("last_char", "last_char(s)", "returns the last character of the non-empty string s",
     ["last_char('abc') == 'c'", "last_char('a') == 'a'", "last_char('xyz!') == '!'",
      "last_char('hello') == 'o'", "last_char('12') == '2'"]),
    ("count_words", "count_words(s)", "returns the number of space-separated words in s",
     ["count_words('a b c') == 3", "count_words('') == 0", "count_words('hello') == 1",
      "count_words('two  spaces') == 2", "count_words(' x y ') == 2"]),
    ("celsius_to_fahrenheit", "celsius_to_fahrenheit(c)", "converts c degrees Celsius to "
     "Fahrenheit (c * 9 / 5 + 32)",
     ["celsius_to_fahrenheit(0) == 32", "celsius_to_fahrenheit(100) == 212",
      "celsius_to_fahrenheit(-40) == -40", "celsius_to_fahrenheit(10) == 50",
      "celsius_to_fahrenheit(37) == 98.6 or abs(celsius_to_fahrenheit(37) - 98.6) < 1e-9"]),
]
CODE_EVAL = ("maximum", "factorial", "is_palindrome", "minimum", "count_words", "absolute")
CODE_PROMPT = ("Write a Python function `{sig}` that {what}. Reply with only the code, in a "
               "```python block.")

# (template, operation) per language; {a} {b} are the numbers, the answer is op(a, b)
MATH_TEMPLATES = {
    "en": (("Anna has {a} apples and buys {b} more. How many apples does she have now?", "+"),
           ("A box holds {a} pens. Tom takes {b} of them. How many pens are left?", "-"),
           ("There are {a} rows of {b} chairs. How many chairs are there?", "*"),
           ("Sam reads {a} pages on Monday and {b} pages on Tuesday. How many pages in all?", "+")),
    "fr": (("Anna a {a} pommes et en achète {b} de plus. Combien de pommes a-t-elle ?", "+"),
           ("Une boîte contient {a} stylos. Tom en prend {b}. Combien en reste-t-il ?", "-"),
           ("Il y a {a} rangées de {b} chaises. Combien y a-t-il de chaises ?", "*"),
           ("Sam lit {a} pages lundi et {b} pages mardi. Combien de pages en tout ?", "+")),
    "es": (("Ana tiene {a} manzanas y compra {b} más. ¿Cuántas manzanas tiene ahora?", "+"),
           ("Una caja tiene {a} bolígrafos. Tomás saca {b}. ¿Cuántos quedan?", "-"),
           ("Hay {a} filas de {b} sillas. ¿Cuántas sillas hay?", "*"),
           ("Sam lee {a} páginas el lunes y {b} el martes. ¿Cuántas páginas en total?", "+")),
    "ru": (("У Анны {a} яблок, и она покупает ещё {b}. Сколько у неё яблок?", "+"),
           ("В коробке {a} ручек. Том берёт {b}. Сколько ручек осталось?", "-"),
           ("В зале {a} рядов по {b} стульев. Сколько всего стульев?", "*"),
           ("Сэм прочитал {a} страниц в понедельник и {b} во вторник. Сколько всего страниц?",
            "+")),
}
MATH_SUFFIX = {"en": "Give the final answer as a number.",
               "fr": "Donne la réponse finale sous forme de nombre.",
               "es": "Da la respuesta final como un número.",
               "ru": "Дай окончательный ответ числом."}
OPERATIONS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}

# single-step sums and products of one-digit numbers: the real embedded model starts near a
# third right (so RLOO has something to raise); {a} {op} {b} as written, the answer is op(a, b)
ARITH_TEMPLATES = {"en": "What is {a} {op} {b}? Reply with just the number.",
                   "fr": "Combien font {a} {op} {b} ? Réponds seulement par le nombre.",
                   "es": "¿Cuánto es {a} {op} {b}? Responde solo con el número.",
                   "ru": "Сколько будет {a} {op} {b}? Ответь только числом."}


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def code_rows() -> tuple[list[Row], list[Row]]:
    """(train, eval) rows of the code task; eval functions never appear in train."""
    train, evaluation = [], []
    for name, sig, what, tests in CODE_TASKS:
        row = {"prompt": user(CODE_PROMPT.format(sig=sig, what=what)), "language": "en",
               "tests": "\n".join(f"assert {t}" for t in tests), "id": f"code/{name}"}
        (evaluation if name in CODE_EVAL else train).append(row)
    return train, evaluation


def math_rows(per_template: int = 6, eval_per_template: int = 2,
              seed: int = 0) -> tuple[list[Row], list[Row]]:
    """(train, eval) word problems; each template gets distinct number pairs in each split."""
    rng = random.Random(seed)
    train, evaluation = [], []
    for language, templates in MATH_TEMPLATES.items():
        for t, (template, op) in enumerate(templates):
            pairs: set[tuple[int, int]] = set()
            while len(pairs) < per_template + eval_per_template:
                a, b = rng.randint(2, 20), rng.randint(2, 9 if op == "*" else 20)
                if op == "-" and b >= a:
                    a += b                     # a positive difference
                pairs.add((a, b))
            for j, (a, b) in enumerate(sorted(pairs, key=lambda p: rng.random())):
                text = template.format(a=a, b=b) + " " + MATH_SUFFIX[language]
                row = {"prompt": user(text), "language": language,
                       "answer": str(OPERATIONS[op](a, b)), "id": f"math/{language}/{t}/{a}{op}{b}"}
                (evaluation if j < eval_per_template else train).append(row)
    return train, evaluation


def arith_rows(n_eval: int = 32, seed: int = 0) -> tuple[list[Row], list[Row]]:
    """(train, eval) one-step problems ``a + b`` and ``a * b`` (a, b in 1..9) in every
    language; ``n_eval`` of the 162 problems are held out, in all four languages each."""
    problems = [(a, op, b) for op in ("+", "*") for a in range(1, 10) for b in range(1, 10)]
    random.Random(seed).shuffle(problems)
    train, evaluation = [], []
    for j, (a, op, b) in enumerate(problems):
        for language, template in ARITH_TEMPLATES.items():
            row = {"prompt": user(template.format(a=a, op=op, b=b)), "language": language,
                   "answer": str(OPERATIONS[op](a, b)), "id": f"arith/{language}/{a}{op}{b}"}
            (evaluation if j < n_eval else train).append(row)
    return train, evaluation


def write_task(out_dir: str | Path) -> list[Path]:
    """Write the train and eval JSONL files of each task into ``out_dir``; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    tasks = (("code", code_rows()), ("math", math_rows()), ("arith", arith_rows()))
    for kind, (train, evaluation) in tasks:
        for split, rows in (("train", train), ("eval", evaluation)):
            path = out / f"{kind}_{split}.jsonl"
            atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n"
                                            for r in rows))
            written.append(path)
    return written


if __name__ == "__main__":
    for p in write_task(sys.argv[1] if len(sys.argv) > 1 else "examples/verifiable"):
        print(p, sum(1 for _ in p.open()))
