"""Generated text tasks with verifiable answers: the data of the ``tiny-text`` reference model.

Each task maps a random generator to ``(prompt, answer)``. The held-out split is defined by a hash of
the prompt, so training never sees a held-out prompt and anyone can regenerate both splits exactly.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass

Example = tuple[str, str]

NAMES = ["Ann", "Ben", "Cara", "Dan", "Eva", "Finn", "Gus", "Hana", "Ivy", "Jon", "Kim", "Leo", "Mia", "Ned",
         "Ola", "Pia", "Quin", "Rosa", "Sam", "Tess"]
ANIMALS = ["cat", "dog", "fox", "owl", "bear", "frog", "duck", "goat", "hen", "pig"]
THINGS = ["apples", "pens", "books", "coins", "shells", "cards", "eggs", "stamps", "cups", "rocks"]
TOYS = ["ball", "kite", "drum", "boat", "hat", "key", "box", "map", "bell", "cake"]
PLACES = ["park", "lake", "barn", "beach", "forest", "garden", "hill", "river"]
COLORS = ["red", "blue", "green", "yellow", "pink", "black", "white", "brown"]
LETTERS = "abcdefghijklmnopqrstuvwxyz"


def _num(rng: random.Random, max_digits: int) -> int:
    digits = rng.randint(1, max_digits)
    return rng.randint(0 if digits == 1 else 10 ** (digits - 1), 10**digits - 1)


def add(rng: random.Random) -> Example:
    a, b = _num(rng, 3), _num(rng, 3)
    return f"{a}+{b}=", str(a + b)


def sub(rng: random.Random) -> Example:
    a, b = _num(rng, 3), _num(rng, 3)
    a, b = max(a, b), min(a, b)
    return f"{a}-{b}=", str(a - b)


def sort(rng: random.Random) -> Example:
    xs = [rng.randint(0, 9) for _ in range(rng.randint(3, 7))]
    return "sort: " + " ".join(map(str, xs)), " ".join(map(str, sorted(xs)))


def copy(rng: random.Random) -> Example:
    xs = rng.choices(LETTERS, k=rng.randint(3, 8))
    return "copy: " + " ".join(xs), " ".join(xs)


def reverse(rng: random.Random) -> Example:
    xs = rng.choices(LETTERS, k=rng.randint(3, 8))
    return "reverse: " + " ".join(xs), " ".join(reversed(xs))


def word_problem(rng: random.Random) -> Example:
    name, thing = rng.choice(NAMES), rng.choice(THINGS)
    a, b = rng.randint(2, 20), rng.randint(1, 20)
    if rng.random() < 0.5:
        q = f"{name} has {a} {thing} and gets {b} more. How many {thing} does {name} have?"
        return q, str(a + b)
    a, b = max(a, b), min(a, b)
    q = f"{name} has {a} {thing} and gives away {b}. How many {thing} does {name} have?"
    return q, str(a - b)


def story(rng: random.Random) -> Example:
    name, animal, toy = rng.choice(NAMES), rng.choice(ANIMALS), rng.choice(TOYS)
    place, color = rng.choice(PLACES), rng.choice(COLORS)
    q = f"Tell a story about {name} the {animal}, a {color} {toy} and the {place}."
    a = f"{name} the {animal} went to the {place}. There {name} found a {color} {toy}. {name} was happy."
    return q, a


TASKS: dict[str, Callable[[random.Random], Example]] = {
    "add": add,
    "sub": sub,
    "sort": sort,
    "copy": copy,
    "reverse": reverse,
    "word_problem": word_problem,
    "story": story,
}


def is_held_out(prompt: str, fraction: float = 0.1) -> bool:
    h = int.from_bytes(hashlib.blake2b(prompt.encode(), digest_size=8).digest(), "big")
    return (h % 10_000) < fraction * 10_000


@dataclass(frozen=True)
class TaskItem:
    task: str
    prompt: str
    answer: str


def stream(split: str, seed: int, tasks: list[str] | None = None) -> Iterator[TaskItem]:
    """Endless items of ``split`` ('train' or 'test'), tasks drawn uniformly."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    names = tasks or list(TASKS)
    unknown = sorted(set(names) - set(TASKS))
    if unknown:
        raise ValueError(f"unknown task(s) {unknown}; known tasks: {sorted(TASKS)}")
    rng = random.Random(seed)
    want_test = split == "test"
    while True:
        name = rng.choice(names)
        prompt, answer = TASKS[name](rng)
        if is_held_out(prompt) == want_test:
            yield TaskItem(name, prompt, answer)


def held_out(n_per_task: int, seed: int = 1234, tasks: list[str] | None = None) -> list[TaskItem]:
    """A fixed, duplicate-free held-out set with ``n_per_task`` items for each task."""
    out: list[TaskItem] = []
    for name in tasks or list(TASKS):
        seen: set[str] = set()
        for item in stream("test", seed + sum(map(ord, name)), [name]):
            if item.prompt not in seen:
                seen.add(item.prompt)
                out.append(item)
            if len(seen) == n_per_task:
                break
    return out
