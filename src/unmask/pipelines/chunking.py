"""The robot-side chunk broker: keeps a control loop fed with actions while the policy computes the next chunk.

Modes:
* ``sync``: when the queue is empty the loop waits for a new chunk (the robot holds still meanwhile), then executes
  its first ``execute`` actions.
* ``async``: a new chunk is requested while the queue still holds enough actions to cover the expected inference
  delay; on arrival the actions that already ran are dropped and the overlap with the old queue is cross-faded.
* ``async_inpaint``: as ``async``, but the request carries the actions that will run during inference and the
  policy decodes the new chunk around them (real-time chunking by inpainting), so the switch is seamless.

The broker is clock-agnostic: the caller says which control tick it is; the same class runs the wall-clock loop
(``unmask robot run``) and the simulated-delay benchmark (``unmask bench vla``).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

MODES = ("sync", "async", "async_inpaint")


@dataclass(frozen=True)
class BrokerConfig:
    """How the action queue is refilled."""

    mode: str = "async_inpaint"
    """``sync``, ``async`` or ``async_inpaint``."""
    execute: int = 8
    """Actions of a chunk executed before the next one takes over (sets the replanning cadence in every mode)."""
    margin: int = 1
    """Async modes: extra ticks of queue kept beyond the expected delay when a request starts."""

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.execute <= 0 or self.margin < 0:
            raise ValueError(f"execute must be positive and margin >= 0, got {self.execute}, {self.margin}")


class ChunkBroker:
    """Action queue of one robot. Per tick: ``wants_chunk`` -> ``request`` (the inpainting prefix to send) ...
    ``receive`` when the chunk arrives ... ``next_action`` every tick."""

    def __init__(self, cfg: BrokerConfig, horizon: int, action_dim: int, safe_action: np.ndarray | None = None
                 ) -> None:
        if cfg.execute > horizon:
            raise ValueError(f"execute={cfg.execute} exceeds the chunk horizon {horizon}")
        self.cfg, self.horizon = cfg, horizon
        self.safe_action = np.zeros(action_dim, np.float32) if safe_action is None else safe_action
        self.queue: deque[np.ndarray] = deque()
        self.pending_since: int | None = None
        self.delays: deque[int] = deque(maxlen=8)  # measured request-to-arrival delays, in ticks
        self.missed = 0

    @property
    def expected_delay(self) -> int:
        """Ticks a request is expected to take: the largest of the recent measured delays (1 before any)."""
        return max(self.delays, default=1)

    def observe_delay(self, ticks: int) -> None:
        """Record a measured request-to-arrival delay (e.g. of the priming request, before the clock starts)."""
        self.delays.append(max(1, ticks))

    def wants_chunk(self) -> bool:
        if self.pending_since is not None:
            return False
        if self.cfg.mode == "sync":
            return not self.queue
        refill = max(self.horizon - self.cfg.execute, self.expected_delay + self.cfg.margin)
        return len(self.queue) <= refill

    def request(self, tick: int) -> np.ndarray | None:
        """Mark a request started at ``tick``; returns the ``[d, D]`` actions to inpaint (async_inpaint), else None."""
        self.pending_since = tick
        if self.cfg.mode != "async_inpaint" or not self.queue:
            return None
        d = min(len(self.queue), self.expected_delay, self.horizon - 1)
        return np.stack(list(self.queue)[:d]) if d > 0 else None

    def cancel(self) -> None:
        """The request failed (server gone or stalled): a new one may start."""
        self.pending_since = None

    def receive(self, chunk: np.ndarray, tick: int) -> None:
        """Take a ``[H, D]`` chunk requested at ``pending_since`` and arriving at ``tick``."""
        if self.pending_since is None:
            raise RuntimeError("receive() without a pending request")
        elapsed = tick - self.pending_since
        self.pending_since = None
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
