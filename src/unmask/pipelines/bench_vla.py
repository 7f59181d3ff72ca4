"""``unmask bench vla``: the chunk broker's modes under injected inference delays, side by side on the same seeds.

Per (mode, delay) it runs ``episodes`` held-out PushBlock episodes in simulated control time (``hz`` ticks per
second; a request costs the measured compute time plus the injected delay, rounded up to ticks) and reports the
success rate, the measured chunk latency (compute only, p50/p99), missed ticks (ticks without a fresh policy
action: the robot held its safe action) and ``hz``, the rate of ticks served by the policy
(``hz * (1 - missed / ticks)``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..modalities.action.data import EVAL_SEED
from ..modalities.action.model import load_policy
from .chunking import MODES, BrokerConfig
from .robot import broker_episode

DELAYS_MS = (0, 50, 100, 200)


def run(model: str = "tiny-vla", modes=MODES, delays=DELAYS_MS, episodes: int = 200, hz: float = 50.0,
        execute: int | None = None, progress: bool = True, max_inflight: int = BrokerConfig.max_inflight,
        margin: int = BrokerConfig.margin) -> dict:
    import torch

    policy = load_policy(model)
    policy.predict_chunk(np.zeros(policy.spec.state_dim, np.float32) + 0.5)  # warm-up
    grid = [(m, d) for m in modes for d in delays]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(grid) * episodes, desc="bench vla")
    results = []
    for mode, delay in grid:
        cfg = BrokerConfig(mode=mode, execute=execute, max_inflight=max_inflight, margin=margin)
        eps = []
        for seed in range(EVAL_SEED, EVAL_SEED + episodes):
            eps.append(broker_episode(policy, seed, cfg, delay_ms=delay, hz=hz))
            if bar is not None:
                bar.update(1)
        lat = np.concatenate([e["latencies_ms"] for e in eps])
        ticks, missed = sum(e["ticks"] for e in eps), sum(e["missed_ticks"] for e in eps)
        results.append({"mode": mode, "delay_ms": delay, "success_rate": float(np.mean([e["success"] for e in eps])),
                        "episodes": episodes, "latency_p50_ms": float(np.percentile(lat, 50)),
                        "latency_p99_ms": float(np.percentile(lat, 99)), "hz": hz * (1 - missed / max(1, ticks)),
                        "execute": cfg.execute,
                        "missed_ticks": missed, "ticks": ticks})
    if bar is not None:
        bar.close()
    return {"device": f"cpu ({torch.get_num_threads()} threads)", "model": model, "control_hz": hz,
            "execute": execute if execute is not None else "per mode", "max_inflight": max_inflight, "margin": margin,
            "decode_steps": policy.spec.decode_steps, "results": results}


def plot(report: dict, png: str | Path) -> None:
    """Success rate vs injected delay, one line per mode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for mode in dict.fromkeys(r["mode"] for r in report["results"]):
        rows = [r for r in report["results"] if r["mode"] == mode]
        ax.plot([r["delay_ms"] for r in rows], [r["success_rate"] for r in rows], marker="o",
                label=f"{mode} (execute {rows[0].get('execute', report['execute'])})")
    n = report["results"][0]["episodes"]
    ax.set(xlabel="injected inference delay (ms)", ylabel="success rate",
           title=f"{report['model']}, {report['control_hz']:.0f} Hz, {n} episodes")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def main(model: str, as_json: bool, episodes: int, delays, modes, hz: float, plot_path: str | None,
         max_inflight: int = BrokerConfig.max_inflight, execute: int | None = None,
         margin: int = BrokerConfig.margin) -> dict:
    # the bar goes to stderr; stdout stays JSON
    report = run(model, modes, delays, episodes, hz, execute, progress=True, max_inflight=max_inflight,
                 margin=margin)
    if plot_path:
        plot(report, plot_path)
    if as_json:
        print(json.dumps(report))
    else:
        print(f"{'mode':>14} {'delay':>6} {'success':>8} {'p50 ms':>7} {'p99 ms':>7} {'hz':>6} {'missed':>7}")
        for r in report["results"]:
            print(f"{r['mode']:>14} {r['delay_ms']:>6} {r['success_rate']:8.3f} {r['latency_p50_ms']:7.2f} "
                  f"{r['latency_p99_ms']:7.2f} {r['hz']:6.1f} {r['missed_ticks']:>7}")
    return report
