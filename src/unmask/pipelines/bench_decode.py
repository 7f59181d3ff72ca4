"""``unmask bench decode``: every policy x cache on the held-out tasks, side by side in one run.

Per configuration it reports exact-match accuracy, token accuracy (answer tokens right at their position),
NFE (forwards per sequence), TPF (canvas tokens per forward), tokens/s (canvas tokens per second of wall
time), the share of wall time outside the model's forward, and peak memory (CUDA: allocator peak; CPU:
process peak RSS, which only grows).
"""

from __future__ import annotations

import itertools
import json
import resource
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..decoders import SamplingParams, build_cache, build_policy
from ..modalities.text.tasks import held_out
from .eval_text import score
from .generate import TextGenerator

BASELINE = ("low_confidence", {})
FIXED_BUDGET = {"low_confidence"}
"""Policies whose tokens per forward is set by the step budget alone (the rest commit by confidence)."""
POLICY_GRID: list[tuple[str, dict]] = [
    BASELINE,
    ("threshold", {"threshold": 0.9}),
    ("factor", {"factor": 1.0}),
    ("early_commit", {}),
    ("early_exit", {}),
    ("credit", {"threshold": 0.9}),
    ("adaptive_block", {}),
]
CACHE_GRID = ["none", "prefix", "dual", "feature"]


@dataclass(frozen=True)
class BenchConfig:
    gen_lengths: tuple[int, ...] = (64, 256)
    """Canvas lengths to run."""
    batch_sizes: tuple[int, ...] = (1, 8)
    """Requests decoded together."""
    block_length: int = 32
    """Semi-autoregressive block size (LLaDA's default)."""
    n_per_task: int = 10
    """Held-out prompts per task."""
    device: str = "cpu"
    """cpu or cuda."""
    compile: bool = False
    """Wrap the backbone in ``torch.compile`` (dynamic shapes) before measuring."""
    fixed_tpf: tuple[int, ...] = (1,)
    """Tokens committed per forward by the fixed-budget policies (``low_confidence``): each value K runs them
    with ``gen_length / K`` steps. Adaptive policies ignore it and run once."""


def _peak_mb(device: str) -> float:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_one(gen: TextGenerator, items, policy: tuple[str, dict], cache: str, gen_length: int, batch_size: int,
            block_length: int, device: str, tokens_per_step: int = 1) -> dict:
    params = SamplingParams(gen_length=gen_length, block_length=min(block_length, gen_length),
                            steps=gen_length // tokens_per_step)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    correct = nfe = 0
    hits = 0.0
    forward_s = 0.0
    t0 = time.perf_counter()
    for i in range(0, len(items), batch_size):
        chunk = items[i : i + batch_size]
        outs = gen.generate([it.prompt for it in chunk], params, build_policy(*policy), build_cache(cache))
        for o, it in zip(outs, chunk, strict=True):
            exact, tok = score(gen, it, o)
            correct, hits = correct + exact, hits + tok
        nfe += sum(o.nfe for o in outs)
        forward_s += outs[0].timings["denoise"]
    wall = time.perf_counter() - t0
    n = len(items)
    return {
        "policy": policy[0], "cache": cache, "gen_length": gen_length, "batch_size": batch_size, "steps": params.steps,
        "accuracy": correct / n, "token_accuracy": hits / n, "nfe": nfe / n, "tpf": n * gen_length / max(1, nfe),
        "tokens_per_s": n * gen_length / wall, "overhead_frac": 1 - forward_s / wall,
        "peak_mem_mb": round(_peak_mb(device), 1),
    }


def _whole_steps(gen_length: int, k: int, block_length: int) -> bool:
    """Whether K tokens per forward split the canvas into whole steps per block (SamplingParams' own rule)."""
    if k < 1 or gen_length % k:
        return False
    try:
        SamplingParams(gen_length=gen_length, block_length=min(block_length, gen_length), steps=gen_length // k)
    except ValueError:
        return False
    return True


def run(model: str, cfg: BenchConfig, policies=None, caches=None, progress: bool = True) -> dict:
    for g in cfg.gen_lengths:
        bad = [k for k in cfg.fixed_tpf if not _whole_steps(g, k, cfg.block_length)]
        if bad:
            raise ValueError(f"--fixed-tpf {bad} does not divide gen length {g} into whole steps per block of "
                             f"{min(cfg.block_length, g)}; use powers of two up to the block length")
    gen = TextGenerator.from_pretrained(model, device=cfg.device)
    gen.runner.sync_timing = True
    if cfg.compile:
        gen.runner.model.compile(dynamic=True)
    items = held_out(cfg.n_per_task)
    grid = [(g, b, pol, cache, k)
            for g, b, pol, cache in itertools.product(cfg.gen_lengths, cfg.batch_sizes, policies or POLICY_GRID,
                                                      caches or CACHE_GRID)
            for k in (cfg.fixed_tpf if pol[0] in FIXED_BUDGET else (1,))]
    if progress:
        from tqdm import tqdm

        grid = tqdm(grid, desc="bench decode")
    gen.generate([items[0].prompt], SamplingParams(gen_length=cfg.gen_lengths[0]))  # warm-up
    results = [run_one(gen, items, pol, cache, g, b, cfg.block_length, cfg.device, k) for g, b, pol, cache, k in grid]
    dev = torch.cuda.get_device_name() if cfg.device.startswith("cuda") else f"cpu ({torch.get_num_threads()} threads)"
    return {"device": dev, "model": model, "n_items": len(items), "block_length": cfg.block_length,
            "compiled": cfg.compile, "results": results}


def pareto_plot(report: dict, png: str | Path) -> None:
    """Token accuracy vs tokens/s per (gen length, batch) panel: colour = policy, marker = cache. With random
    weights (``random:NAME``) accuracy means nothing, so the panels show tokens/s against TPF instead."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    rows = report["results"]
    speed_only = str(report["model"]).startswith("random:")
    keys = sorted({(r["gen_length"], r["batch_size"]) for r in rows})
    policies = list(dict.fromkeys(r["policy"] for r in rows))
    colours = {p: plt.get_cmap("tab10")(i % 10) for i, p in enumerate(policies)}
    markers = {"none": "o", "prefix": "s", "dual": "^", "feature": "D"}
    fig, axes = plt.subplots(1, len(keys), figsize=(4.5 * len(keys) + 2, 4), squeeze=False)
    for ax, (g, b) in zip(axes[0], keys, strict=True):
        for r in rows:
            if (r["gen_length"], r["batch_size"]) == (g, b):
                x, y = (r["tpf"], r["tokens_per_s"]) if speed_only else (r["tokens_per_s"], r["token_accuracy"])
                ax.scatter(x, y, color=colours[r["policy"]], marker=markers.get(r["cache"], "x"), s=40, alpha=0.8)
        if speed_only:
            ax.set(xscale="log", yscale="log", xlabel="tokens per forward (log)", ylabel="tokens/s (log)",
                   title=f"gen {g}, batch {b}")
            ax.set_xticks(sorted({round(r["tpf"], 2) for r in rows if (r["gen_length"], r["batch_size"]) == (g, b)}))
            ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        else:
            ax.set(xscale="log", xlabel="tokens/s (log)", ylabel="token accuracy", title=f"gen {g}, batch {b}")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.grid(alpha=0.3)
    handles = [Line2D([], [], color=colours[p], marker="o", ls="", label=p) for p in policies]
    handles += [Line2D([], [], color="grey", marker=m, ls="", label=f"cache: {c}") for c, m in markers.items()
                if any(r["cache"] == c for r in rows)]
    fig.legend(handles=handles, loc="center right", fontsize=8)
    fig.suptitle(f"{report['model']} on {report['device']}")
    fig.tight_layout(rect=(0, 0, 1 - 1.9 / fig.get_figwidth(), 1))
    fig.savefig(png, dpi=110)
    plt.close(fig)


QUICK = {"policies": [BASELINE, ("threshold", {"threshold": 0.9})], "caches": ["none", "dual"]}


def markdown(report: dict, command: str) -> str:
    """The report as the Markdown table that BENCHMARKS.md holds, with the command and machine."""
    lines = [f"Measured with `{command}` on {report['device']}; model `{report['model']}`, "
             f"{report['n_items']} held-out prompts, block length {report['block_length']}"
             f"{', torch.compile' if report.get('compiled') else ''}.", "",
             "| policy | cache | gen | batch | steps | exact match | token acc | NFE | TPF | tokens/s | overhead "
             "| peak MB |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in report["results"]:
        lines.append(f"| {r['policy']} | {r['cache']} | {r['gen_length']} | {r['batch_size']} | {r['steps']} | "
                     f"{r['accuracy']:.3f} | "
                     f"{r['token_accuracy']:.3f} | "
                     f"{r['nfe']:.1f} | {r['tpf']:.2f} | {r['tokens_per_s']:.1f} | {r['overhead_frac']:.3f} | "
                     f"{r['peak_mem_mb']:.0f} |")
    return "\n".join(lines) + "\n"


def select(policies: list[str] | None, caches: list[str] | None) -> dict:
    """The grid restricted to the named policies and caches (clear error on an unknown name)."""
    out = {}
    if policies:
        known = {name for name, _ in POLICY_GRID}
        bad = sorted(set(policies) - known)
        if bad:
            raise ValueError(f"unknown bench policy {bad}; the grid has: {', '.join(sorted(known))}")
        out["policies"] = [p for p in POLICY_GRID if p[0] in policies]
    if caches:
        bad = sorted(set(caches) - set(CACHE_GRID))
        if bad:
            raise ValueError(f"unknown bench cache {bad}; the grid has: {', '.join(CACHE_GRID)}")
        out["caches"] = [c for c in CACHE_GRID if c in caches]
    return out


def main(model: str, cfg: BenchConfig, as_json: bool, plot: str | None, quick: bool = False,
         markdown_path: str | None = None, command: str = "", policies: list[str] | None = None,
         caches: list[str] | None = None) -> dict:
    grid = {**(QUICK if quick else {}), **select(policies, caches)}
    report = run(model, cfg, progress=not as_json, **grid)
    if plot:
        pareto_plot(report, plot)
    if markdown_path:
        Path(markdown_path).write_text(markdown(report, command))
    if as_json:
        print(json.dumps(report))
    else:
        print(f"{'policy':>14} {'cache':>7} {'gen':>4} {'bs':>3} {'steps':>5} {'acc':>6} {'tokacc':>6} {'nfe':>6} "
              f"{'tpf':>5} {'tok/s':>8} {'ovh':>5}")
        for r in report["results"]:
            print(f"{r['policy']:>14} {r['cache']:>7} {r['gen_length']:>4} {r['batch_size']:>3} {r['steps']:>5} "
                  f"{r['accuracy']:6.3f} "
                  f"{r['token_accuracy']:6.3f} {r['nfe']:6.1f} {r['tpf']:5.2f} {r['tokens_per_s']:8.1f} "
                  f"{r['overhead_frac']:5.2f}")
    return report
