"""The wall-clock control loop (``unmask robot run``): PushBlock stepped at ``hz`` on the robot side, the policy
behind a websocket server, a ``ChunkBroker`` between them.

Inference runs on worker threads so the loop never blocks on the network: one connection per request that may be in
flight (``BrokerConfig.max_inflight``), each strictly request/reply as openpi's protocol has it. When the server
disconnects or stalls past the client's timeout, the request is abandoned, the robot holds its safe action (zero
velocity) while the queue is empty, that connection reconnects with back-off, and the episode continues.
"""

from __future__ import annotations

import itertools
import math
import queue
import threading
import time
from dataclasses import dataclass

import numpy as np

from ..modalities.action.env import PushBlockEnv
from .chunking import BrokerConfig, ChunkBroker
from .policy_server import PolicyClient, PolicyServer


@dataclass(frozen=True)
class RunConfig:
    """The robot side of the loop."""

    hz: float = 50.0
    """Control rate."""
    max_steps: int = 400
    """Episode limit in ticks."""
    timeout_s: float = 0.5
    """A request without a reply after this long counts as a stalled server."""
    backoff_s: float = 0.05
    """First reconnect delay (doubles up to 1 s)."""

    def __post_init__(self) -> None:
        if self.hz <= 0 or self.timeout_s <= 0:
            raise ValueError(f"hz and timeout_s must be positive, got {self.hz}, {self.timeout_s}")


class InferenceWorker:
    """Owns one client per connection, each on its own thread, all taking requests from one queue, and posts
    ``(kind, key, payload)`` results, ``key`` as given to :meth:`submit`; with n clients, up to n requests are in
    flight at once."""

    def __init__(self, client: PolicyClient | list[PolicyClient], backoff_s: float = 0.05) -> None:
        self.clients = client if isinstance(client, list) else [client]
        self.backoff_s = backoff_s
        self.requests: queue.Queue = queue.Queue()
        self.results: queue.Queue = queue.Queue()
        self.reconnects = 0
        self._count = threading.Lock()  # connections reconnect from their own threads
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._loop, args=(c,), daemon=True) for c in self.clients]
        for t in self._threads:
            t.start()

    def submit(self, obs: dict, key) -> None:
        self.requests.put((obs, key))

    def _reconnect(self, client: PolicyClient) -> None:
        wait = self.backoff_s
        while not self._stop.is_set():
            try:
                client.connect()
                with self._count:
                    self.reconnects += 1
                return
            except ConnectionError:
                time.sleep(wait)
                wait = min(1.0, 2 * wait)

    def _loop(self, client: PolicyClient) -> None:
        while not self._stop.is_set():
            try:
                obs, key = self.requests.get(timeout=0.05)
            except queue.Empty:
                continue
            try:
                reply = client.infer(obs)
                self.results.put(("ok", key, reply))
            except (ConnectionError, TimeoutError) as err:
                self.results.put(("lost", key, str(err)))
                self._reconnect(client)
            except ValueError as err:
                self.results.put(("refused", key, str(err)))

    def close(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=2)
        for c in self.clients:
            c.close()


_EPISODES = itertools.count()


def _mean(xs: list) -> float | None:
    xs = [x for x in xs if x is not None]
    return float(np.mean(xs)) if xs else None


def run_episode(worker: InferenceWorker, seed: int, broker_cfg: BrokerConfig, cfg: RunConfig, horizon: int,
                action_dim: int = 2, observe=None) -> dict:
    """One episode in real time. ``observe(obs, tick)`` may alter what is sent (fault injection in tests).

    Requests are keyed by (episode, tick): replies to an earlier episode's requests, still in flight when it ended,
    are dropped. (Taken for this episode's, a stale reply primed the queue with a chunk planned for the last
    episode's final state, and its short delay set the inpainting prefix to 1: with 100 ms injected, 5 of 10
    wall-clock episodes succeeded where the simulated loop had 9.)"""
    episode = next(_EPISODES)
    env = PushBlockEnv(max_episode_steps=cfg.max_steps)
    obs = env.reset(seed=seed)[0]["agent_pos"]
    broker = ChunkBroker(broker_cfg, horizon, action_dim)
    period, overruns, events, latencies, delays = 1.0 / cfg.hz, 0, [], [], []
    sent_at: dict[int, float] = {}

    def send(tick: int, prefix: np.ndarray | None = None) -> None:
        msg = {"state": obs if observe is None else observe(obs, tick)}
        if prefix is not None:
            msg["prefix_actions"] = prefix.astype(np.float32)
        sent_at[tick] = time.perf_counter()
        worker.submit(msg, (episode, tick))

    # a robot starts moving once it holds its first chunk: prime the queue before the clock starts
    broker.request(0)
    send(0)
    while broker.pending:
        kind, (ep, _), payload = worker.results.get(timeout=60)
        if ep != episode:
            continue
        if kind == "ok":
            latencies.append((time.perf_counter() - sent_at.pop(0)) * 1000)
            broker.receive(np.asarray(payload["actions"]), 0)
            broker.observe_delay(math.ceil(latencies[-1] / 1000 * cfg.hz))
        elif kind == "refused":
            raise ValueError(f"the policy server refused the first observation of seed {seed}: {payload}")
        else:  # server unreachable at the start: try again once the worker has reconnected
            events.append({"tick": 0, "kind": kind, "message": payload})
            send(0)
    success, tick, start = False, 0, time.perf_counter()
    while tick < cfg.max_steps:
        while not worker.results.empty():
            kind, (ep, t_req), payload = worker.results.get_nowait()
            if ep != episode or t_req not in broker.pending:
                continue  # the answer to an abandoned request, or to one of an earlier episode
            if kind == "ok":
                latencies.append((time.perf_counter() - sent_at.pop(t_req)) * 1000)
                delays.append(tick - t_req)
                broker.receive(np.asarray(payload["actions"]), tick, t_req)
            else:
                events.append({"tick": tick, "kind": kind, "message": payload})
                broker.cancel(t_req)
        if broker.wants_chunk(tick):
            send(tick, broker.request(tick))
        action, _ = broker.next_action()
        o, _, success, truncated, _ = env.step(action)
        obs = o["agent_pos"]
        tick += 1
        if success or truncated:
            break
        delay = start + tick * period - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        else:
            overruns += 1
    elapsed = time.perf_counter() - start
    return {"seed": seed, "success": bool(success), "ticks": tick, "missed_ticks": broker.missed,
            "overruns": overruns, "hz": tick / elapsed, "latencies_ms": latencies,
            "delay_ticks": _mean(delays), "events": events}


def run_episodes(uri: str | None, broker_cfg: BrokerConfig, cfg: RunConfig, seeds, model: str = "tiny-vla",
                 delay_ms: float = 0.0, on_episode=None) -> tuple[dict, list[dict]]:
    """Episodes against the server at ``uri`` (None: ``model`` served in-process on loopback, with ``delay_ms``);
    returns a summary and one row per episode (``on_episode(row)`` is called as each ends)."""
    server = None
    if uri is None:
        from ..modalities.action.model import load_policy

        server = PolicyServer(load_policy(model), port=0, delay_ms=delay_ms).start()
        uri = f"ws://127.0.0.1:{server.port}"
    n = 1 if broker_cfg.mode == "sync" else broker_cfg.max_inflight
    clients = [PolicyClient(uri, timeout_s=cfg.timeout_s) for _ in range(n)]
    worker = None
    rows = []
    try:
        meta = clients[0].connect()
        for c in clients[1:]:
            c.connect()
        worker = InferenceWorker(clients, cfg.backoff_s)
        for seed in seeds:
            r = run_episode(worker, seed, broker_cfg, cfg, meta["horizon"], meta["action_dim"])
            lat = r.pop("latencies_ms")
            rows.append(r | {"latency_p50_ms": float(np.median(lat)) if lat else None})
            if on_episode is not None:
                on_episode(rows[-1])
    finally:
        if worker is not None:
            worker.close()
        if server is not None:
            server.stop()
    summary = {"mode": broker_cfg.mode, "execute": broker_cfg.execute, "hz_target": cfg.hz, "episodes": len(rows),
               "success_rate": float(np.mean([r["success"] for r in rows])),
               "hz": float(np.mean([r["hz"] for r in rows])), "missed_ticks": sum(r["missed_ticks"] for r in rows),
               "overruns": sum(r["overruns"] for r in rows), "reconnects": worker.reconnects,
               "delay_ticks": _mean([r["delay_ticks"] for r in rows])}
    return summary, rows
