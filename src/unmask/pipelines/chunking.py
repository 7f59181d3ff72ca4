"""The robot-side chunk broker: keeps a control loop fed with actions while the policy computes the next chunk.

Modes:
* ``sync``: when the queue is empty the loop waits for a new chunk (the robot holds still meanwhile), then executes
  its first ``execute`` actions.
* ``async``: a new chunk is requested while the queue still holds enough actions to cover the expected inference
  delay; on arrival the actions that already ran are dropped and the overlap with the old queue is cross-faded.
* ``async_inpaint``: as ``async``, but the request carries the actions that will run during inference and the
  policy decodes the new chunk around them (real-time chunking by inpainting), so the switch is seamless.

In the async modes several requests may be in flight (``max_inflight``). With one, a chunk of H actions that
arrives d ticks after its request carries H - d fresh actions and the next request must leave d ticks before the
queue runs dry, so the queue stays fed only while H - d >= d. With more, a new request starts whenever the queue
plus the chunks in flight cover no more than the expected delay (+ ``margin``), so a chunk with H - d fresh actions
arrives every H - d - margin ticks and about d / (H - d - margin) requests are in flight: the queue stays fed
while d < H - margin. The inpainting prefix is then the part of the coming actions the robot already holds:
actions of chunks still in flight are not known yet.

The broker is clock-agnostic: the caller says which control tick it is; the same class runs the wall-clock loop
(``unmask robot run``) and the simulated-delay benchmark (``unmask bench vla``).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

MODES = ("sync", "async", "async_inpaint")
EXECUTE_DEFAULT = {"sync": 8, "async": 2, "async_inpaint": 2}
"""Default ``execute`` per mode. Sync holds the robot still while each chunk is computed, so it replans rarely; the
async modes replan without stopping, and every 2 actions did far better under delay (phase-7 ``tiny-vla``, 200
episodes, ``async_inpaint`` at 0 / 50 / 100 ms: 0.995 / 1.000 / 0.900 with 2 against 0.990 / 0.795 / 0.505 with 8)."""


@dataclass(frozen=True)
class BrokerConfig:
    """How the action queue is refilled."""

    mode: str = "async_inpaint"
    """``sync``, ``async`` or ``async_inpaint``."""
    execute: int | None = None
    """Actions of a chunk executed before the next one takes over (sets the replanning cadence in every mode);
    None: the mode's default (``EXECUTE_DEFAULT``: 8 for sync, 2 for the async modes)."""
    margin: int = 3
    """Async modes: extra ticks of queue kept beyond the expected delay (the largest of the last 8) when a request
    starts: the slack for a reply slower than the recent ones. With 1, a 200 ms delay at 50 Hz missed 11-12 ticks in
    200 episodes, each behind a compute spike of 40-80 ms; with 3, none. It matters only when the expected delay +
    margin exceeds ``horizon - execute``, and then it means more requests, each chunk replacing the queue sooner."""
    max_inflight: int = 8
    """Async modes: most requests in flight at once. More than one is used only when the expected delay exceeds the
    replanning interval (``horizon - execute``); ``sync`` always has at most one."""

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.execute is None:
            object.__setattr__(self, "execute", EXECUTE_DEFAULT[self.mode])
        if self.execute <= 0 or self.margin < 0:
            raise ValueError(f"execute must be positive and margin >= 0, got {self.execute}, {self.margin}")
        if self.max_inflight < 1:
            raise ValueError(f"max_inflight must be at least 1, got {self.max_inflight}")


class ChunkBroker:
    """Action queue of one robot. Per tick: ``wants_chunk(tick)`` -> ``request(tick)`` (the inpainting prefix to
    send) ... ``receive`` when a chunk arrives ... ``next_action`` every tick."""

    def __init__(self, cfg: BrokerConfig, horizon: int, action_dim: int, safe_action: np.ndarray | None = None
                 ) -> None:
        if cfg.execute > horizon:
            raise ValueError(f"execute={cfg.execute} exceeds the chunk horizon {horizon}")
        self.cfg, self.horizon = cfg, horizon
        self.safe_action = np.zeros(action_dim, np.float32) if safe_action is None else safe_action
        self.queue: deque[np.ndarray] = deque()
        self.pending: list[int] = []  # ticks of the requests in flight, oldest first
        self.latest = -1  # request tick of the newest chunk received (an older one arriving later is stale)
        self.delays: deque[int] = deque(maxlen=8)  # measured request-to-arrival delays, in ticks
        self.missed = 0

    @property
    def expected_delay(self) -> int:
        """Ticks a request is expected to take: the largest of the recent measured delays (1 before any)."""
        return max(self.delays, default=1)

    def observe_delay(self, ticks: int) -> None:
        """Record a measured request-to-arrival delay (e.g. of the priming request, before the clock starts)."""
        self.delays.append(max(1, ticks))

    def covered(self, tick: int) -> int:
        """Ticks from ``tick`` on that the queue and the chunks in flight will cover (each chunk covers its request
        tick + H)."""
        return max([len(self.queue)] + [t + self.horizon - tick for t in self.pending])

    def wants_chunk(self, tick: int | None = None) -> bool:
        """Should a request start at ``tick``? (Without ``tick``, only when none is in flight.)"""
        if self.cfg.mode == "sync":
            return not self.queue and not self.pending
        if self.pending and (tick is None or len(self.pending) >= self.cfg.max_inflight):
            return False
        refill = max(self.horizon - self.cfg.execute, self.expected_delay + self.cfg.margin)
        return self.covered(tick or 0) <= refill  # tick is given whenever a request is in flight

    def request(self, tick: int) -> np.ndarray | None:
        """Mark a request started at ``tick``; returns the ``[d, D]`` actions to inpaint (async_inpaint), else None."""
        if tick in self.pending:
            raise RuntimeError(f"a request started at tick {tick} is already in flight")
        self.pending.append(tick)
        if self.cfg.mode != "async_inpaint" or not self.queue:
            return None
        d = min(len(self.queue), self.expected_delay, self.horizon - 1)
        return np.stack(list(self.queue)[:d]) if d > 0 else None

    def cancel(self, requested_at: int | None = None) -> None:
        """The request started at ``requested_at`` (None: the oldest) failed (server gone or stalled): a new one may
        start."""
        if self.pending:
            self.pending.remove(self.pending[0] if requested_at is None else requested_at)

    def receive(self, chunk: np.ndarray, tick: int, requested_at: int | None = None) -> None:
        """Take a ``[H, D]`` chunk requested at ``requested_at`` (None: the oldest request in flight) and arriving at
        ``tick``. A chunk older than one already received is dropped: the newer plan stands."""
        if not self.pending:
            raise RuntimeError("receive() without a pending request")
        since = self.pending[0] if requested_at is None else requested_at
        self.pending.remove(since)
        elapsed = tick - since
        if since < self.latest:
            return
        self.latest = since
        if self.cfg.mode == "sync":
            self.queue = deque(chunk[: self.cfg.execute])
            return
        self.observe_delay(elapsed)
        new = list(chunk[elapsed:])
        if self.cfg.mode == "async" and self.queue:
            old = list(self.queue)
            m = min(len(old), len(new))
            w = np.arange(1, m + 1, dtype=np.float32) / (m + 1)  # cross-fade from the old plan to the new one
            new = [(1 - w[i]) * old[i] + w[i] * new[i] for i in range(m)] + new[m:]
        if new:
            self.queue = deque(new)

    def next_action(self) -> tuple[np.ndarray, bool]:
        """The action for this tick and whether the tick was missed (queue empty: the safe action is held)."""
        if self.queue:
            return self.queue.popleft(), False
        self.missed += 1
        return self.safe_action, True
