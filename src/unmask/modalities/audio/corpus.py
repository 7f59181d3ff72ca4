"""Transcripts for the synthetic speech set: template sentences (names, numbers, dates, places) and short
sentences from CPython's bundled documentation (``pydoc_data.topics``).

Transcripts are in the normal form the ASR model emits: lower case words, numbers spelled out, no punctuation
but apostrophes. :func:`normalize` maps any text (a reference, or Whisper's output with digits and commas) to
that form, so WER compares words and not formatting. The held-out split is a hash of the sentence.
"""

from __future__ import annotations

import hashlib
import random
import re

NAMES = ["anna", "ben", "clara", "david", "emma", "felix", "grace", "henry", "isabel", "jack", "karen", "leo",
         "maria", "nathan", "olivia", "peter", "rachel", "simon", "tina", "victor", "walter", "zoe"]
CITIES = ["london", "paris", "berlin", "boston", "denver", "madrid", "oslo", "dublin", "chicago", "toronto",
          "seattle", "vienna"]
PLACES = ["station", "library", "market", "harbour", "museum", "bridge", "school", "office", "garden", "airport"]
THINGS = ["apples", "books", "tickets", "chairs", "letters", "boxes", "pencils", "bottles", "cameras", "tables"]
COLORS = ["red", "blue", "green", "yellow", "black", "white", "orange", "purple", "grey", "brown"]
DAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
MONTHS = ["january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
          "november", "december"]
VERBS = ["bought", "sold", "found", "packed", "counted", "ordered", "painted", "moved"]
DIRECTIONS = ["left", "right", "north", "south", "east", "west"]

_ONES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
         "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"]
_TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
_ORD = {"one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth", "nine": "ninth",
        "twelve": "twelfth"}


def number_words(n: int) -> str:
    """``1984`` -> ``one thousand nine hundred eighty four`` (integers 0 .. 10**9 - 1)."""
    if n < 0:
        return "minus " + number_words(-n)
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    for size, word in ((10**6, "million"), (1000, "thousand"), (100, "hundred")):
        if n >= size:
            head, rest = divmod(n, size)
            return number_words(head) + " " + word + ("" if rest == 0 else " " + number_words(rest))
    raise AssertionError(n)


def ordinal_words(n: int) -> str:
    words = number_words(n).split()
    last = words[-1]
    if last in _ORD:
        words[-1] = _ORD[last]
    elif last.endswith("y"):
        words[-1] = last[:-1] + "ieth"
    else:
        words[-1] = last + "th"
    return " ".join(words)


_ORDINAL_RE = re.compile(r"\b(\d+)(st|nd|rd|th)\b")
_NUMBER_RE = re.compile(r"\d+")


def normalize(text: str) -> str:
    """Lower case, digits to words, punctuation dropped (apostrophes kept), single spaces."""
    t = text.lower().replace(",000", "000")
    t = _ORDINAL_RE.sub(lambda m: " " + ordinal_words(int(m.group(1))) + " ", t)
    t = re.sub(r"(\d),(\d)", r"\1\2", t)
    t = _NUMBER_RE.sub(lambda m: " " + number_words(int(m.group(0))) + " ", t)
    t = t.replace("-", " ").replace("%", " percent ")
    t = re.sub(r"[^a-z' ]+", " ", t)
    t = re.sub(r"(^| )'+|'+( |$)", " ", t)
    return " ".join(t.split())


def _template(rng: random.Random) -> str:
    name, other = rng.sample(NAMES, 2)
    k = rng.randrange(8)
    if k == 0:
        verb = rng.choice(VERBS)  # draws stay in sentence order: the data plan depends on it
        count = number_words(rng.randint(2, 99))
        return f"{name} {verb} {count} {rng.choice(COLORS)} {rng.choice(THINGS)}"
    if k == 1:
        weekday, month = rng.choice(DAYS), rng.choice(MONTHS)
        return f"the meeting with {name} is on {weekday} {month} {ordinal_words(rng.randint(1, 31))}"
    if k == 2:
        digits = " ".join(_ONES[rng.randint(0, 9)] for _ in range(rng.randint(3, 7)))
        return f"please call {name} at {digits}"
    if k == 3:
        return f"{name} and {other} met at the {rng.choice(PLACES)} in {rng.choice(CITIES)}"
    if k == 4:
        return (f"turn {rng.choice(DIRECTIONS)} after {number_words(rng.randint(2, 900))} metres "
                f"and stop at the {rng.choice(PLACES)}")
    if k == 5:
        city = rng.choice(CITIES)
        hour, minute = number_words(rng.randint(1, 12)), number_words(rng.randint(10, 59))
        return f"the train to {city} leaves at {hour} {minute}"
    if k == 6:
        year = number_words(rng.randint(1900, 2030))
        return f"in {year} {name} moved from {rng.choice(CITIES)} to {rng.choice(CITIES)}"
    return f"{name} gave {other} {number_words(rng.randint(2, 20))} {rng.choice(THINGS)} on {rng.choice(DAYS)}"


def doc_sentences(min_words: int = 4, max_words: int = 14) -> list[str]:
    """Short plain-prose sentences from CPython's bundled documentation, normalised."""
    from pydoc_data.topics import topics

    out: set[str] = set()
    for text in topics.values():
        for sent in re.split(r"(?<=[.!?])\s+", " ".join(text.split())):
            if not re.fullmatch(r"[A-Z][A-Za-z ,;:'()-]+\.", sent):
                continue
            words = normalize(sent).split()
            if min_words <= len(words) <= max_words:
                out.add(" ".join(words))
    return sorted(out)


def is_held_out(sentence: str, frac: float = 0.1) -> bool:
    h = int(hashlib.sha256(sentence.encode()).hexdigest()[:8], 16)
    return h / 0xFFFFFFFF < frac


def sentences(n: int, split: str, seed: int, doc_frac: float = 0.25) -> list[str]:
    """``n`` transcripts of ``split`` ("train" or "test"); sentences of the other split never appear."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    rng = random.Random(seed)
    want_test = split == "test"
    docs = [s for s in doc_sentences() if is_held_out(s) == want_test]
    out: list[str] = []
    while len(out) < n:
        if rng.random() < doc_frac:  # the mix is the same in both splits
            out.append(rng.choice(docs))
            continue
        s = _template(rng)
        while is_held_out(s) != want_test:
            s = _template(rng)
        out.append(s)
    return out
