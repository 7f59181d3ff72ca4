"""Held-out exact-match of a text model on the generated tasks, per task, with decoding telemetry."""

from __future__ import annotations

import time
from collections import defaultdict

from ..decoders import Cache, Policy, SamplingParams
from ..modalities.text.tasks import TaskItem, held_out
from .generate import TextGenerator


def token_accuracy(reference: list[int], predicted: list[int]) -> float:
    """Share of reference answer tokens reproduced at their position (a missing or extra EOS counts wrong)."""
    hits = sum(a == b for a, b in zip(reference, predicted, strict=False))
    return hits / max(len(reference), len(predicted), 1)


def score(gen: TextGenerator, item: TaskItem, out) -> tuple[bool, float]:
    """(exact match, token accuracy) of one generation against its item's answer."""
    return out.text.strip() == item.answer, token_accuracy(gen.tokenizer.encode(item.answer), out.token_ids)


def evaluate(
    gen: TextGenerator,
    params: SamplingParams,
    policy: Policy | str = "low_confidence",
    cache: Cache | str = "none",
    *,
    n_per_task: int = 50,
    batch_size: int = 16,
    tasks: list[str] | None = None,
    items: list[TaskItem] | None = None,
    progress: bool = False,
) -> dict:
    items = items if items is not None else held_out(n_per_task, tasks=tasks)
    correct: dict[str, list[bool]] = defaultdict(list)
    token_hits: dict[str, list[float]] = defaultdict(list)
    nfe = tokens = 0
    t0 = time.perf_counter()
    batches = range(0, len(items), batch_size)
    if progress:
        from tqdm import tqdm

        batches = tqdm(batches, desc="eval", leave=False)
    for i in batches:
        chunk = items[i : i + batch_size]
        outs = gen.generate([it.prompt for it in chunk], params, policy, cache)
        for it, out in zip(chunk, outs, strict=True):
            exact, tok = score(gen, it, out)
            correct[it.task].append(exact)
            token_hits[it.task].append(tok)
            nfe += out.nfe
            tokens += params.gen_length
    per_task = {k: sum(v) / len(v) for k, v in correct.items()}
    n = sum(len(v) for v in correct.values())
    return {
        "accuracy": sum(sum(v) for v in correct.values()) / n,
        "per_task": per_task,
        "token_accuracy": sum(sum(v) for v in token_hits.values()) / n,
        "token_accuracy_per_task": {k: sum(v) / len(v) for k, v in token_hits.items()},
        "n": n,
        "nfe": nfe / n,
        "tpf": tokens / max(1, nfe),
        "wall_s": time.perf_counter() - t0,
    }
