"""VLM evaluation: answer held-out scene questions with a diffusion VLM through the shared core, optionally with
visual-token pruning, and report accuracy, latency, forwards and visual tokens per task and pruning setting.

Tasks: ``short`` and ``long`` (generation), ``mc`` (multiple choice by generation: the letter) and ``mc_elbo``
(multiple choice by Monte-Carlo ELBO: the option whose answer canvas has the highest estimated log-likelihood).
Images that cannot be read become error records; the rest of the batch goes on.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..decoders import Canvas, ModelRunner, SamplingParams, build_cache, build_policy, denoise
from ..decoders.pruning import PruneConfig, Pruner
from ..modalities.text.tokenizer import cut_at_eos
from ..modalities.vision.image import ImageError, load_image
from ..modalities.vision.model import VLM, load_vlm
from ..modalities.vision.scenes import ATTRIBUTES, attribute_hits, question_kind, score

TASKS = ("short", "mc", "mc_elbo", "long")
GEN_LENGTH = {"short": 8, "mc": 8, "long": 64}
SWEEP = ("fastv:layer=1,ratio=0.5", "fastv:layer=1,ratio=0.25", "fastv:layer=1,ratio=0.25,schedule=late,start=4",
         "fastv:layer=1,ratio=0.25,schedule=progressive,start=0,ramp=8", "fastv:layer=0,ratio=0.25",
         "fastv:layer=0,ratio=0.3", "fastv:layer=0,ratio=0.35", "vtw:layer=2", "vtw:layer=1",
         "divprune:layer=1,ratio=0.25", "divprune:layer=0,ratio=0.25")
"""Pruning settings of ``--sweep`` (besides ``none``); the tiny model has 4 layers, so K=1 prunes layers 2 and 3."""


def sample_manifest() -> Path:
    return Path(__file__).resolve().parents[1] / "assets" / "data" / "vision-sample" / "test.jsonl"


@dataclass(frozen=True)
class EvalOptions:
    policy: str = "low_confidence"
    """Unmasking policy; the default fixed-step one keeps forwards equal across pruning settings."""
    tokens_per_step: int = 2
    """Fixed-step policies: canvas slots committed per forward (steps = gen_length / this)."""
    cache: str = "none"
    """Cache (none, prefix, dual) under which pruning runs."""
    batch_size: int = 8
    """Questions decoded together."""
    elbo_samples: int = 8
    """``mc_elbo``: masked samples per option (stratified mask ratios, shared across options)."""

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.tokens_per_step < 1 or self.elbo_samples < 1:
            raise ValueError("batch_size, tokens_per_step and elbo_samples must be >= 1")


class _SettingRun:
    """What one pruning setting accumulates over a task's batches."""

    def __init__(self, prune: PruneConfig | None) -> None:
        self.prune = prune
        self.pruner = None if prune is None else Pruner(prune)
        self.preds: list[dict] = []
        self.scores: list[float] = []
        self.nfe = self.wall = 0.0
        self.batches = 0

    def row(self, task: str, n_todo: int, tower_tokens: int, options: EvalOptions) -> dict:
        visual: float = tower_tokens
        if self.pruner is not None:
            st = self.pruner.stats
            visual = round(st["visual_tokens"] / max(1, st["forwards"]), 1)
        n = len(self.scores)
        row = {
            "task": task, "prune": "none" if self.prune is None else self.prune.name,
            "accuracy": round(sum(self.scores) / n, 4) if n else None,
            "latency_s": round(self.wall / max(1, self.batches), 4),
            "nfe": round(self.nfe / max(1, n), 2),
            "visual_tokens": visual,
            "items": n, "errors": n_todo - n, "batch_size": options.batch_size, "policy": options.policy,
            "cache": options.cache,
        }
        if task == "short":  # a model that ignores the image still gets yes/no half right; colour questions tell
            kinds: dict[str, list[float]] = {}
            for p in self.preds:
                if "score" in p:
                    kinds.setdefault(question_kind(task, p["question"]), []).append(p["score"])
            row["by_kind"] = {k: {"accuracy": round(sum(v) / len(v), 4), "items": len(v)}
                              for k, v in sorted(kinds.items())}
        if task == "long":  # whole clauses are rare for a small model; which parts of them it gets right
            hits = {a: [0, 0] for a in ATTRIBUTES}
            for p in self.preds:
                if "score" in p:
                    for a, (h, m) in attribute_hits(p["prediction"], p["answer"]).items():
                        hits[a][0] += h
                        hits[a][1] += m
            row["by_attribute"] = {a: {"accuracy": round(h / m, 4), "objects": m} for a, (h, m) in hits.items() if m}
        return row


class VLMEvaluator:
    """Plain class: load once, then ``run(task, records, prune)``."""

    def __init__(self, vlm: VLM) -> None:
        self.vlm = vlm
        self.runner = ModelRunner(vlm.backbone, vlm.info)
        self.tok = vlm.tokenizer
        self._warm = False

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path = "tiny-vlm", device: str = "cpu") -> VLMEvaluator:
        return cls(load_vlm(name_or_path, device=device))

    def _images(self, records: list[dict]) -> tuple[list, list[dict], list[dict]]:
        good, imgs, errors = [], [], []
        for r in records:
            try:
                imgs.append(load_image(r["image"], r["image"]))
                good.append(r)
            except ImageError as e:
                errors.append({"id": r["id"], "task": r["task"], "error": str(e)})
        return imgs, good, errors

    def run(self, task: str, records: list[dict], prune: PruneConfig | None = None,
            options: EvalOptions | None = None) -> tuple[dict, list[dict]]:
        """(result row, prediction records) of ``task`` over ``records`` (dicts as in the manifest)."""
        return self.run_settings(task, records, [prune], options)[0]

    def run_settings(self, task: str, records: list[dict], prunes: list[PruneConfig | None],
                     options: EvalOptions | None = None, progress: bool = False) -> list[tuple[dict, list[dict]]]:
        """``run`` under several pruning settings, interleaved: each batch is decoded under every setting in turn,
        so a change in the machine's speed during the sweep weighs on every setting alike."""
        if task not in TASKS:
            raise ValueError(f"unknown VLM task {task!r}; known tasks: {', '.join(TASKS)}")
        options = options or EvalOptions()
        todo = [r for r in records if r["task"] == ("mc" if task == "mc_elbo" else task)]
        runs = [_SettingRun(p) for p in prunes]
        try:
            starts = range(0, len(todo), options.batch_size)
            if progress:
                from tqdm import tqdm

                starts = tqdm(starts, desc=f"{task} x {len(prunes)} setting(s)", unit="batch")
            for b0 in starts:
                imgs, good, errors = self._images(todo[b0 : b0 + options.batch_size])
                for r in runs:
                    r.preds += errors
                if not good:
                    continue
                if not self._warm:  # first-call costs (allocator, kernel selection) stay out of every latency
                    self._answer(task, self.vlm.encode(imgs), good, options)
                    self._warm = True
                for r in runs:
                    self.runner.pruner = r.pruner
                    t0 = time.perf_counter()
                    answers, forwards = self._answer(task, self.vlm.encode(imgs), good, options)
                    r.wall += time.perf_counter() - t0
                    r.batches += 1
                    r.nfe += forwards
                    for q, a in zip(good, answers, strict=True):
                        sc = score("mc" if task == "mc_elbo" else task, a, q["answer"])
                        r.scores.append(sc)
                        r.preds.append({"id": q["id"], "task": task, "question": q["question"], "answer": q["answer"],
                                        "prediction": a, "score": sc})
        finally:
            self.runner.pruner = None
        return [(r.row(task, len(todo), self.vlm.tower.num_tokens, options), r.preds) for r in runs]

    def _answer(self, task: str, embeds: torch.Tensor, records: list[dict], options: EvalOptions
                ) -> tuple[list[str], float]:
        if task == "mc_elbo":
            return self._mc_elbo(embeds, records, options)
        return self.generate(embeds, records, GEN_LENGTH[task], options)

    def generate(self, embeds: torch.Tensor, records: list[dict], gen_length: int, options: EvalOptions
                 ) -> tuple[list[str], float]:
        """Answers to ``records``' questions about images ``embeds`` ``[B, N, D]``, and the forwards spent."""
        prefixes = [self.vlm.prefix(embeds[i], r["question"]) for i, r in enumerate(records)]
        canvas = Canvas.build(prefixes, gen_length, mask_id=self.runner.info.mask_id, pad_id=self.tok.pad_id,
                              max_length=self.runner.max_length, device=self.runner.device)
        params = SamplingParams(gen_length=gen_length, steps=gen_length // options.tokens_per_step)
        res = denoise(self.runner, canvas, build_policy(options.policy), params, eos_id=self.tok.eos_id,
                      cache=build_cache(options.cache))
        out = [self.tok.decode(cut_at_eos(row, self.tok.eos_id)).strip() for row in res.tokens.tolist()]
        return out, float(res.nfe.sum())

    def _mc_elbo(self, embeds: torch.Tensor, records: list[dict], options: EvalOptions) -> tuple[list[str], float]:
        """Pick the letter whose answer (letter, EOS) has the highest Monte-Carlo ELBO."""
        letters = "ABCD"
        answers = []
        for i, r in enumerate(records):
            prefix = self.vlm.prefix(embeds[i], r["question"])
            scores = [self.elbo(prefix, self.tok.encode(x) + [self.tok.eos_id], options.elbo_samples)
                      for x in letters]
            answers.append(letters[max(range(len(letters)), key=scores.__getitem__)])
        return answers, float(len(records) * len(letters) * options.elbo_samples)

    @torch.inference_mode()
    def elbo(self, prefix: list, target: list[int], samples: int, seed: int = 0) -> float:
        """Monte-Carlo ELBO of ``target`` filling a canvas after ``prefix``: E_t[1/t * sum over masked slots of
        log p(token)], mask ratios t stratified over ``samples`` rows of one batched forward. The same ``seed`` gives
        every candidate the same draws (common random numbers), so comparisons between candidates are less noisy."""
        g = len(target)
        gen = torch.Generator().manual_seed(seed)
        t = (torch.arange(samples) + torch.rand(samples, generator=gen)) / samples  # [S]
        masked = torch.rand(samples, g, generator=gen) < t[:, None]
        masked[torch.arange(samples), torch.randint(0, g, (samples,), generator=gen)] = True
        rows = torch.tensor(target).expand(samples, g)
        init = torch.where(masked, self.runner.info.mask_id, rows)
        canvas = Canvas.build([prefix] * samples, g, mask_id=self.runner.info.mask_id, pad_id=self.tok.pad_id,
                              init_tokens=list(init), max_length=self.runner.max_length, device=self.runner.device)
        logp = self.runner.forward(canvas).log_softmax(-1).cpu()  # [S, g, V]
        ll = logp.gather(-1, rows[..., None]).squeeze(-1)  # [S, g]
        return float(((ll * masked).sum(1) / t.clamp_min(1e-3)).mean())


def shuffle_images(records: list[dict]) -> list[dict]:
    """The records with each question given the next same-task record's image (the last wraps to the first): the
    blind control. A model that reads its images scores lower; one that answers from the question alone does not."""
    out = list(records)
    by_task: dict[str, list[int]] = {}
    for i, r in enumerate(records):
        by_task.setdefault(r["task"], []).append(i)
    for idx in by_task.values():
        for i, j in zip(idx, idx[1:] + idx[:1], strict=True):
            out[i] = records[i] | {"image": records[j]["image"]}
    return out


def evaluate(model: str, tasks: list[str], manifest: str | Path | None = None, prunes: list[str] = ("none",),
             options: EvalOptions | None = None, limit: int | None = None, out_dir: str | Path | None = None,
             device: str = "cpu", blind: bool = False) -> dict:
    """Every task under every pruning setting; predictions to ``out_dir/predictions.jsonl``. Rows say ``"images":
    "own"``; with ``blind`` each task is also run unpruned on :func:`shuffle_images` (``"images": "shuffled"``)."""
    from ..modalities.vision.scenes import read_split

    configs = [PruneConfig.parse(p) for p in prunes]  # parse all first: a typo fails before any work
    ev = VLMEvaluator.from_pretrained(model, device)
    layers = ev.vlm.backbone.cfg.num_layers
    for c in configs:
        if c is not None and c.layer >= layers:
            raise ValueError(f"--prune {c.name}: layer {c.layer} does not exist; {model} has layers 0..{layers - 1}")
    records = read_split(manifest or sample_manifest(), limit=limit)
    shuffled = shuffle_images(records) if blind else None
    results, preds = [], []
    for task in tasks:
        runs = [("own", ev.run_settings(task, records, configs, options, progress=True))]
        if shuffled is not None:
            runs.append(("shuffled", [ev.run(task, shuffled, None, options)]))
        for images, rows in runs:
            for row, p in rows:
                results.append(row | {"images": images})
                preds += [q | {"prune": row["prune"], "images": images} for q in p]
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        with (out / "predictions.jsonl").open("w") as f:
            for q in preds:
                f.write(json.dumps(q) + "\n")
    return {"model": str(model), "device": device, "results": results}


def plot_sweep(report: dict, png: str | Path) -> Path:
    """Accuracy vs latency, one panel per task, one point per pruning setting."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(dict.fromkeys(r["task"] for r in report["results"]))
    settings = list(dict.fromkeys(r["prune"] for r in report["results"]))
    colors = plt.get_cmap("tab20")  # one colour per setting (a sweep has 12), one marker per method
    markers = {"none": "*", "fastv": "o", "vtw": "s", "divprune": "^"}
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.5 * len(tasks), 4.6), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        for r in (r for r in report["results"] if r["task"] == task and r["accuracy"] is not None):
            if r.get("images") == "shuffled":  # the blind control: the accuracy without the right image
                ax.axhline(r["accuracy"], color="grey", ls="--", lw=1, label="none, shuffled images")
                continue
            k = settings.index(r["prune"])
            ax.scatter(r["latency_s"], r["accuracy"], marker=markers.get(r["prune"].partition(":")[0], "o"), s=70,
                       color=colors(k % 20), label=r["prune"])
        ax.set_title(task)
        ax.set_xlabel("latency per batch (s)")
        ax.set_ylabel("accuracy")
        ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize=7, frameon=False)
    fig.suptitle(f"{report['model']}: visual-token pruning, accuracy vs latency")
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=120)
    plt.close(fig)
    return png
