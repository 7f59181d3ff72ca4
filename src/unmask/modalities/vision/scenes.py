"""Procedural scenes and questions for the tiny dVLM: coloured shapes on a 3x3 grid plus, sometimes, a real
handwritten digit from scikit-learn's bundled set (UCI optical digits).

Three kinds of question, each a task of the evaluation pipeline:

* ``short``: colour of a unique shape, count of a shape or colour, yes/no existence, which digit is shown;
* ``mc``: what is at a named cell, four lettered options, answered with the letter;
* ``long``: a full description, one clause per object in reading order (32+ tokens), where visual redundancy
  (most of the image is empty background) is what token pruning exploits.

Held out: test scenes come from a separate seed stream and use only every fifth digit image of the 1797 (train uses
the other four fifths), so test handwriting was never seen in training.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

SIZE = 96
CELL = SIZE // 3
SHAPES = ("circle", "square", "triangle")
COLORS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (230, 200, 30),
          "purple": (150, 60, 190)}
CELLS = ("top left", "top", "top right", "left", "center", "right", "bottom left", "bottom", "bottom right")
NUMBERS = ("zero", "one", "two", "three", "four", "five")
TASKS = ("short", "mc", "long")
SCAFFOLDS = ("where",)
"""Training-only tasks (``make_item`` writes them; evaluation does not ask them): ``where``, "what is at the top
left?" answered with the thing's short phrase ("a red circle", "the digit 3"), the lookup by position that ``mc``
needs before it can match an option and name its letter."""
SHORT_KINDS = ("color", "count_shape", "count_color", "exists", "digit")
"""The kinds of short question (:func:`question_kind`); a training recipe can draw one kind, e.g. ``short.color``."""
PROMPT = "<image>\n{question}"
"""Where the image goes in the user turn (LLaVA convention); the processor splits the text there."""


@dataclass(frozen=True)
class Thing:
    kind: str  # a shape name, or "digit"
    cell: int
    color: str = ""
    size: str = ""
    digit: int = -1
    digit_index: int = -1

    def phrase(self) -> str:
        where = "in the center" if CELLS[self.cell] == "center" else f"at the {CELLS[self.cell]}"
        if self.kind == "digit":
            return f"the digit {self.digit} {where}"
        return f"a {self.size} {self.color} {self.kind} {where}"

    def short(self) -> str:
        return f"the digit {self.digit}" if self.kind == "digit" else f"a {self.color} {self.kind}"


@dataclass(frozen=True)
class Item:
    """One question about one scene."""

    id: str
    task: str
    question: str
    answer: str
    scene: tuple[Thing, ...] = field(repr=False)
    seed: int = 0
    choices: tuple[str, ...] = ()

    @property
    def prompt(self) -> str:
        return PROMPT.format(question=self.question)

    @property
    def kind(self) -> str:
        return question_kind(self.task, self.question)

    def record(self, image: str) -> dict:
        d = {"id": self.id, "task": self.task, "image": image, "question": self.question, "answer": self.answer}
        if self.choices:
            d["choices"] = list(self.choices)
        d["objects"] = [asdict(t) for t in self.scene]
        return d


@lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.images.astype(np.float32) / 16.0, d.target.astype(int)  # [1797, 8, 8] in [0, 1], [1797]


def digit_indices(split: str) -> np.ndarray:
    n = len(_digits()[1])
    idx = np.arange(n)
    return idx[idx % 5 == 0] if split == "test" else idx[idx % 5 != 0]


def sample_scene(rng: random.Random, split: str) -> tuple[Thing, ...]:
    n_shapes = rng.randint(2, 4)
    with_digit = rng.random() < 0.5
    cells = rng.sample(range(9), n_shapes + int(with_digit))
    things = [Thing(rng.choice(SHAPES), c, rng.choice(list(COLORS)), rng.choice(("small", "large")))
              for c in cells[:n_shapes]]
    if with_digit:
        pool = digit_indices(split)
        j = int(pool[rng.randrange(len(pool))])
        things.append(Thing("digit", cells[-1], digit=int(_digits()[1][j]), digit_index=j))
    return tuple(sorted(things, key=lambda t: t.cell))


def render(scene: tuple[Thing, ...], rng: random.Random) -> np.ndarray:
    """``[96, 96, 3]`` uint8: a faintly tinted background, each thing jittered inside its cell."""
    from PIL import Image, ImageDraw

    bg = tuple(int(v) for v in np.clip(np.array([245, 245, 240]) + rng.randint(-10, 10), 0, 255))
    img = Image.new("RGB", (SIZE, SIZE), bg)
    draw = ImageDraw.Draw(img)
    for t in scene:
        cx = (t.cell % 3) * CELL + CELL // 2 + rng.randint(-3, 3)
        cy = (t.cell // 3) * CELL + CELL // 2 + rng.randint(-3, 3)
        if t.kind == "digit":
            ink = _digits()[0][t.digit_index]
            patch = Image.fromarray((255 * (1 - ink)).astype(np.uint8)).resize((24, 24), Image.Resampling.BILINEAR)
            img.paste(Image.merge("RGB", [patch] * 3), (cx - 12, cy - 12))
            continue
        r = rng.randint(5, 7) if t.size == "small" else rng.randint(11, 13)
        col = tuple(int(np.clip(v + rng.randint(-15, 15), 0, 255)) for v in COLORS[t.color])
        if t.kind == "circle":
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=col)
        elif t.kind == "square":
            draw.rectangle((cx - r, cy - r, cx + r, cy + r), fill=col)
        else:
            draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=col)
    return np.asarray(img)


def _short(scene: tuple[Thing, ...], rng: random.Random) -> tuple[str, str]:
    shapes = [t for t in scene if t.kind != "digit"]
    digit = [t for t in scene if t.kind == "digit"]
    kinds = ["count_shape", "count_color", "exists"]
    unique = [t for t in shapes if sum(s.kind == t.kind for s in shapes) == 1]
    if unique:
        kinds.append("color")
    if digit:
        kinds.append("digit")
    k = rng.choice(kinds)
    if k == "color":
        t = rng.choice(unique)
        return f"what color is the {t.kind}?", t.color
    if k == "count_shape":
        s = rng.choice(SHAPES)
        return f"how many {s}s are there?", NUMBERS[sum(t.kind == s for t in shapes)]
    if k == "count_color":
        c = rng.choice(list(COLORS))
        return f"how many {c} shapes are there?", NUMBERS[sum(t.color == c for t in shapes)]
    if k == "digit":
        return "which digit is written in the image?", str(digit[0].digit)
    if rng.random() < 0.5:  # exists, balanced yes/no
        t = rng.choice(shapes)
        return f"is there a {t.color} {t.kind}?", "yes"
    present = {(t.color, t.kind) for t in shapes}
    absent = [(c, s) for c in COLORS for s in SHAPES if (c, s) not in present]
    c, s = rng.choice(absent)
    return f"is there a {c} {s}?", "no"


def question_kind(task: str, question: str) -> str:
    """Which of :data:`SHORT_KINDS` a ``short`` question is (read from its wording, so manifests written before
    the kinds existed work too; ``"other"`` for a wording the scene generator does not write); other tasks are their
    own kind."""
    if task != "short":
        return task
    if question.startswith("what color"):
        return "color"
    if question.startswith("which digit"):
        return "digit"
    if question.startswith("is there"):
        return "exists"
    if question.startswith("how many"):
        return "count_color" if question.endswith(" shapes are there?") else "count_shape"
    return "other"


def _mc(scene: tuple[Thing, ...], rng: random.Random) -> tuple[str, str, tuple[str, ...]]:
    t = rng.choice(scene)
    right = t.short()
    wrong: set[str] = set()
    while len(wrong) < 3:
        if rng.random() < 0.25:
            cand = f"the digit {rng.randrange(10)}"
        else:
            cand = f"a {rng.choice(list(COLORS))} {rng.choice(SHAPES)}"
        if cand != right:
            wrong.add(cand)
    options = [right, *sorted(wrong)]
    rng.shuffle(options)
    letters = "ABCD"
    lines = " ".join(f"{letters[i]}. {o}" for i, o in enumerate(options))
    q = f"what is at the {CELLS[t.cell]}? {lines} answer with the letter."
    return q, letters[options.index(right)], tuple(options)


def _where(scene: tuple[Thing, ...], rng: random.Random) -> tuple[str, str]:
    t = rng.choice(scene)
    return f"what is at the {CELLS[t.cell]}?", t.short()


def describe(scene: tuple[Thing, ...]) -> str:
    return ". ".join(t.phrase() for t in scene) + "."


def make_item(task: str, split: str, index: int) -> tuple[Item, np.ndarray]:
    """Item ``index`` of a task and split, and its image; deterministic in (task, split, index)."""
    if task not in TASKS and task not in SCAFFOLDS:
        raise ValueError(f"unknown vision task {task!r}; known tasks: {', '.join(TASKS + SCAFFOLDS)}")
    seed = hash_seed(task, split, index)
    rng = random.Random(seed)
    scene = sample_scene(rng, split)
    choices: tuple[str, ...] = ()
    if task == "short":
        q, a = _short(scene, rng)
    elif task == "mc":
        q, a, choices = _mc(scene, rng)
    elif task == "where":
        q, a = _where(scene, rng)
    else:
        q, a = "describe the image.", describe(scene)
    image = render(scene, rng)
    return Item(f"{split}-{task}-{index:06d}", task, q, a, scene, seed, choices), image


def hash_seed(task: str, split: str, index: int) -> int:
    import zlib

    return zlib.crc32(f"{split}/{task}/{index}".encode()) * 1_000_003 + index


def _clauses(description: str) -> list[str]:
    return [c.strip() for c in description.strip().rstrip(".").split(".") if c.strip()]


def long_accuracy(prediction: str, answer: str) -> float:
    """Share of the reference's object clauses that the prediction states word for word."""
    ref = _clauses(answer)
    got = set(_clauses(prediction))
    return sum(c in got for c in ref) / max(1, len(ref))


def parse_clause(clause: str) -> dict[str, str]:
    """The fields a description clause states (``cell``, ``kind``, ``color``, ``size``, ``digit``), read word by
    word, so a malformed clause ("a small  circle at the left") still gives the fields it has."""
    clause = clause.strip().lower()
    fields: dict[str, str] = {}
    if clause.endswith(" in the center") or clause == "in the center":
        fields["cell"], body = "center", clause[: -len("in the center")]
    elif " at the " in clause:
        body, cell = clause.rsplit(" at the ", 1)
        if cell in CELLS:
            fields["cell"] = cell
    else:
        body = clause
    words = body.split()
    for w in words:
        if w in SHAPES:
            fields["kind"] = w
        elif w in COLORS:
            fields["color"] = w
        elif w in ("small", "large"):
            fields["size"] = w
    if "digit" in words:
        fields["kind"] = "digit"
        i = words.index("digit")
        if i + 1 < len(words) and words[i + 1].isdigit():
            fields["digit"] = words[i + 1]
    return fields


ATTRIBUTES = ("cell", "kind", "color", "size", "digit")


def attribute_hits(prediction: str, answer: str) -> dict[str, tuple[int, int]]:
    """Per attribute, (reference objects whose attribute the prediction states at the object's cell, reference
    objects that have the attribute): ``cell`` counts objects whose cell the prediction names at all; the others
    compare the first predicted clause at that cell (none there: a miss). The partial credit beside
    :func:`long_accuracy`'s whole-clause matches."""
    ref = [parse_clause(c) for c in _clauses(answer)]
    at: dict[str, dict[str, str]] = {}
    for c in _clauses(prediction):
        f = parse_clause(c)
        if "cell" in f:
            at.setdefault(f["cell"], f)
    hits = {a: [0, 0] for a in ATTRIBUTES}
    for r in ref:
        got = at.get(r.get("cell", ""), {})
        for a, v in r.items():
            hits[a][1] += 1
            hits[a][0] += int(got.get(a) == v)
    return {a: (h, n) for a, (h, n) in hits.items()}


def score(task: str, prediction: str, answer: str) -> float:
    """1/0 exact match for short and multiple-choice answers; clause recall for descriptions."""
    if task == "long":
        return long_accuracy(prediction, answer)
    return float(prediction.strip().lower().rstrip(".") == answer.strip().lower())


def write_split(out_dir: str | Path, split: str, per_task: int, tasks: tuple[str, ...] = TASKS) -> Path:
    """``out_dir/{split}/images/*.png`` and ``out_dir/{split}.jsonl`` with ``per_task`` items per task."""
    from PIL import Image
    from tqdm import tqdm

    out = Path(out_dir)
    img_dir = out / split / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    manifest = out / f"{split}.jsonl"
    with manifest.open("w") as f:
        for task in tasks:
            for i in tqdm(range(per_task), desc=f"vision {split}/{task}", mininterval=5):
                item, image = make_item(task, split, i)
                rel = f"{split}/images/{item.id}.png"
                Image.fromarray(image).save(out / rel, optimize=True)
                f.write(json.dumps(item.record(rel)) + "\n")
    return manifest


def read_split(manifest: str | Path, tasks: list[str] | None = None, limit: int | None = None) -> list[dict]:
    """Records of a manifest written by :func:`write_split`, image paths made absolute; ``limit`` per task."""
    manifest = Path(manifest)
    if not manifest.is_file():
        raise FileNotFoundError(f"{manifest}: no such manifest; create one with `unmask data vision --out DIR`")
    rows, seen = [], dict.fromkeys(tasks or [], 0)
    for line in manifest.read_text().splitlines():
        r = json.loads(line)
        if tasks is not None and r["task"] not in tasks:
            continue
        if limit is not None and seen.setdefault(r["task"], 0) >= limit:
            continue
        seen[r["task"]] = seen.get(r["task"], 0) + 1
        r["image"] = str(manifest.parent / r["image"])
        rows.append(r)
    return rows
