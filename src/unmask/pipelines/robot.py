"""Closed-loop rollouts of an action-chunk policy in PushBlock: ``rollout`` (synchronous and batched: observe, decode
a chunk, execute its first ``execute`` steps, repeat) and ``broker_episode`` (one robot behind a ``ChunkBroker``
with simulated inference delay, for ``unmask bench vla``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..modalities.action.env import PushBlockEnv
from ..modalities.action.model import ActionPolicy


@dataclass(frozen=True)
class RolloutConfig:
    """How a policy is driven in the simulator."""

    execute: int = 8
    """Actions of each chunk executed before the next chunk is decoded (open-loop horizon)."""
    steps: int | None = None
    """Forward passes per chunk; None = the policy's default."""
    max_steps: int = 400
    """Episode time limit in control ticks."""

    def __post_init__(self) -> None:
        if self.execute <= 0:
            raise ValueError(f"execute must be positive, got {self.execute}")


def rollout(policy: ActionPolicy, seeds: list[int], cfg: RolloutConfig | None = None, progress: bool = False
            ) -> list[dict]:
    """One episode per seed, all advanced together (one batched decode per replanning tick).

    Returns per episode: seed, success, ticks, chunks decoded, mean chunk latency (ms)."""
    cfg = cfg or RolloutConfig()
    if cfg.execute > policy.spec.horizon:
        raise ValueError(f"execute={cfg.execute} exceeds the policy's chunk horizon {policy.spec.horizon}")
    envs = [PushBlockEnv(max_episode_steps=cfg.max_steps) for _ in seeds]
    obs = [env.reset(seed=s)[0]["agent_pos"] for env, s in zip(envs, seeds, strict=True)]
    live = list(range(len(seeds)))
    out = [{"seed": s, "success": False, "ticks": 0, "chunks": 0, "latency_ms": 0.0} for s in seeds]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(seeds), desc="rollouts")
    while live:
        actions, info = policy.predict_chunk(np.stack([obs[i] for i in live]), steps=cfg.steps)
        for i in live:
            out[i]["chunks"] += 1
            out[i]["latency_ms"] += info["latency_s"] * 1000
        still = []
        for j, i in enumerate(live):
            for k in range(cfg.execute):
                o, _, success, truncated, _ = envs[i].step(actions[j, k].numpy())
                obs[i] = o["agent_pos"]
                out[i]["ticks"] += 1
                if success or truncated:
                    out[i]["success"] = bool(success)
                    break
            else:
                still.append(i)
                continue
            if bar is not None:
                bar.update(1)
        live = still
    for r in out:
        r["latency_ms"] /= max(1, r["chunks"])
    if bar is not None:
        bar.close()
    return out


def broker_episode(policy: ActionPolicy, seed: int, broker_cfg, delay_ms: float = 0.0, hz: float = 50.0,
                   max_steps: int = 400, steps: int | None = None, compute_ms: float | None = None) -> dict:
    """One PushBlock episode driven through a ``ChunkBroker`` with simulated inference delay.

    Time is counted in control ticks of ``1/hz``: a request made at tick t returns at tick
    ``t + ceil((measured compute + delay_ms) / tick)``. In ``sync`` mode the robot holds still (the safe action)
    for those ticks, which count as missed; in the async modes it keeps executing its queue and a tick is missed
    only when the queue runs dry. ``compute_ms`` replaces the measured compute time in that sum (deterministic
    tests). Returns success, ticks, missed ticks and the measured chunk latencies."""
    import math
    import time

    from .chunking import ChunkBroker

    env = PushBlockEnv(max_episode_steps=max_steps)
    obs = env.reset(seed=seed)[0]["agent_pos"]
    broker = ChunkBroker(broker_cfg, policy.spec.horizon, policy.spec.action_dim)
    tick_s = 1.0 / hz
    inflight: list[tuple[int, int, np.ndarray]] = []  # (arrival tick, request tick, chunk), in arrival order
    latencies: list[float] = []
    success, tick = False, 0

    def ticks_for(latency_s: float) -> int:
        busy = latency_s if compute_ms is None else compute_ms / 1000
        return max(1, math.ceil((busy + delay_ms / 1000) / tick_s - 1e-9))

    # a robot starts moving once it holds its first chunk (the clock starts after it, in every mode)
    broker.request(0)
    t0 = time.perf_counter()
    first, _ = policy.predict_chunk(obs, steps=steps)
    latencies.append(time.perf_counter() - t0)
    broker.receive(first[0].numpy(), 0)
    broker.observe_delay(ticks_for(latencies[0]))
    while tick < max_steps:
        while inflight and tick >= inflight[0][0]:
            _, since, chunk = inflight.pop(0)
            broker.receive(chunk, tick, since)
        if broker.wants_chunk(tick):
            prefix = broker.request(tick)
            t0 = time.perf_counter()
            chunk, _ = policy.predict_chunk(obs, prefix_actions=None if prefix is None else prefix[None], steps=steps)
            latencies.append(time.perf_counter() - t0)
            wait = ticks_for(latencies[-1])
            if broker_cfg.mode == "sync":  # the loop blocks: the robot holds still while the policy thinks
                held = min(wait, max_steps - tick)
                broker.missed += held
                tick += held
                broker.receive(chunk[0].numpy(), tick)
                if tick >= max_steps:
                    break
            else:
                inflight.append((tick + wait, tick, chunk[0].numpy()))
                inflight.sort(key=lambda x: x[0])
        action, _ = broker.next_action()
        o, _, success, truncated, _ = env.step(action)
        obs = o["agent_pos"]
        tick += 1
        if success or truncated:
            break
    return {"seed": seed, "success": bool(success), "ticks": tick, "missed_ticks": broker.missed,
            "latencies_ms": [x * 1000 for x in latencies]}
