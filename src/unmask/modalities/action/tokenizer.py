"""Actions as tokens: q01/q99 normalisation and per-dimension uniform binning (the RT-2 / OpenVLA / Dream-VLA
recipe), so that a chunk of H steps x D dimensions becomes H*D canvas slots over a vocabulary of bin tokens."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class ActionStats:
    """Normalisation statistics of one policy (saved in its bundle): action bounds and state moments."""

    q01: tuple[float, ...]
    """Per-dimension 1st percentile of the actions: maps to -1."""
    q99: tuple[float, ...]
    """Per-dimension 99th percentile of the actions: maps to +1 (values outside are clipped)."""
    state_mean: tuple[float, ...] = ()
    """Per-dimension mean of the state observation."""
    state_std: tuple[float, ...] = ()
    """Per-dimension standard deviation of the state observation (floored at 1e-6)."""

    def __post_init__(self) -> None:
        if len(self.q01) != len(self.q99) or not self.q01:
            raise ValueError(f"q01 and q99 need one value per action dimension, got {len(self.q01)} and "
                             f"{len(self.q99)}")
        if any(lo > hi for lo, hi in zip(self.q01, self.q99, strict=True)):
            raise ValueError(f"q01 {self.q01} must not exceed q99 {self.q99}")
        if len(self.state_mean) != len(self.state_std):
            raise ValueError("state_mean and state_std need the same length")

    @classmethod
    def fit(cls, actions: np.ndarray, states: np.ndarray | None = None) -> ActionStats:
        """Statistics of ``actions`` ``[N, D]`` (and ``states`` ``[N, S]``)."""
        a = np.asarray(actions, dtype=np.float64)
        q01, q99 = np.quantile(a, 0.01, axis=0), np.quantile(a, 0.99, axis=0)
        mean = std = ()
        if states is not None:
            s = np.asarray(states, dtype=np.float64)
            mean, std = tuple(s.mean(0).tolist()), tuple(np.maximum(s.std(0), 1e-6).tolist())
        return cls(tuple(q01.tolist()), tuple(q99.tolist()), mean, std)

    @property
    def action_dim(self) -> int:
        return len(self.q01)

    def to_dict(self) -> dict:
        return {k: list(v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, raw: dict) -> ActionStats:
        return cls(**{k: tuple(float(x) for x in v) for k, v in raw.items()})


class ActionTokenizer:
    """Continuous actions <-> bin tokens ``first_token .. first_token + bins - 1``."""

    def __init__(self, stats: ActionStats, bins: int = 256, first_token: int = 0) -> None:
        if bins < 2:
            raise ValueError(f"bins must be >= 2, got {bins}")
        self.stats, self.bins, self.first_token = stats, bins, first_token
        self._lo = torch.tensor(stats.q01, dtype=torch.float32)
        self._span = torch.tensor([max(hi - lo, 1e-6) for lo, hi in zip(stats.q01, stats.q99, strict=True)])

    def normalize(self, actions: torch.Tensor) -> torch.Tensor:
        """``[..., D]`` -> ``[-1, 1]`` (clipped at the q01/q99 bounds)."""
        return (2 * (actions.float() - self._lo) / self._span - 1).clamp(-1, 1)

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() + 1) / 2 * self._span + self._lo

    def encode(self, actions: torch.Tensor) -> torch.Tensor:
        """``[..., H, D]`` actions -> ``[..., H*D]`` token ids (time-major: step 0's dims first)."""
        if actions.shape[-1] != self.stats.action_dim:
            raise ValueError(f"actions have {actions.shape[-1]} dimensions, the policy's statistics have "
                             f"{self.stats.action_dim}")
        bins = ((self.normalize(actions) + 1) / 2 * self.bins).floor().clamp(0, self.bins - 1).long()
        return bins.flatten(-2) + self.first_token

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """``[..., H*D]`` token ids -> ``[..., H, D]`` actions at the bin centres."""
        bins = (tokens.long() - self.first_token)
        if bool(((bins < 0) | (bins >= self.bins)).any()):
            raise ValueError(f"token ids outside the action bins [{self.first_token}, {self.first_token + self.bins})")
        centres = (bins.float() + 0.5) / self.bins * 2 - 1
        return self.denormalize(centres.unflatten(-1, (-1, self.stats.action_dim)))

    @property
    def resolution(self) -> torch.Tensor:
        """``[D]`` width of one bin in action units (the round trip's error bound is half of it inside the
        bounds)."""
        return self._span / self.bins
