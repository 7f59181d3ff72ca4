"""Unmasking policies behind one contract: ``step(logits, ctx) -> (x0, commit)``.

A policy decides which still-masked slots to commit this step and with which tokens; the loop owns blocks,
stopping, EOS and bookkeeping. Hyper-parameters live in each policy's frozen config; per-request knobs
(temperature, steps, lengths) arrive in the ``StepContext``. Every policy commits at least one eligible slot
per row per step, so the loop always terminates.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from ..core.config import config_from_dict
from ..core.registry import Registry
from .sampling import neg_entropy, sample_tokens, select_top_k, top2_margin


@dataclass(frozen=True)
class StepContext:
    eligible: torch.Tensor
    """``[B, G]`` bool: masked slots of the current block that may be committed now."""
    steps_left: int
    """Steps left in the block's budget, this one included (>= 1)."""
    temperature: float
    """Sampling temperature (0 = greedy)."""
    generator: torch.Generator | None = None
    """RNG for sampling and random orders (seeded per request batch)."""


@dataclass(frozen=True)
class NoConfig:
    """This policy has no hyper-parameters."""


class Policy:
    """Base class. Subclasses set ``config_cls`` and implement ``step``."""

    config_cls: ClassVar[type] = NoConfig
    name: ClassVar[str] = ""

    def __init__(self, config: Any = None) -> None:
        if config is None:
            config = self.config_cls()
        elif isinstance(config, dict):
            config = config_from_dict(self.config_cls, config, where=f"policy {self.name!r}")
        elif not isinstance(config, self.config_cls):
            raise TypeError(f"policy {self.name!r} takes a {self.config_cls.__name__}, got {type(config).__name__}")
        self.config = config

    def step(self, logits: torch.Tensor, ctx: StepContext) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config})"


POLICIES: Registry[type[Policy]] = Registry("policy")


def register_policy(name: str):
    def deco(cls: type[Policy]) -> type[Policy]:
        cls.name = name
        return POLICIES.register(name)(cls)

    return deco


def build_policy(name: str, config: dict[str, Any] | None = None) -> Policy:
    return POLICIES.get(name)(config)


def even_quota(ctx: StepContext) -> torch.Tensor:
    """Tokens to commit per row so the block finishes in exactly ``steps_left`` steps, spread evenly:
    ceil(remaining / steps_left), which equals LLaDA's ``get_num_transfer_tokens`` schedule."""
    remaining = ctx.eligible.sum(-1)
    return (remaining + ctx.steps_left - 1) // ctx.steps_left


class _OrderedPolicy(Policy):
    """Fixed-budget policies that differ only in the score ranking the slots (LLaDA Alg. 4-5 family)."""

    def score(self, probs: torch.Tensor, conf: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        raise NotImplementedError

    def step(self, logits: torch.Tensor, ctx: StepContext) -> tuple[torch.Tensor, torch.Tensor]:
        x0, conf = sample_tokens(logits, ctx.temperature, ctx.generator)
        score = self.score(logits.softmax(-1), conf, ctx)
        return x0, select_top_k(score, ctx.eligible, even_quota(ctx))


@register_policy("low_confidence")
class LowConfidence(_OrderedPolicy):
    """LLaDA's low-confidence remasking: commit the slots whose sampled token is most probable."""

    def score(self, probs: torch.Tensor, conf: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        return conf


@register_policy("random")
class RandomOrder(_OrderedPolicy):
    """LLaDA's random remasking: commit a uniformly random subset of the quota's size."""

    def score(self, probs: torch.Tensor, conf: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        return torch.rand(conf.shape, generator=ctx.generator, device=conf.device)


@register_policy("margin")
class TopKMargin(_OrderedPolicy):
    """Commit where the gap between the two most probable tokens is largest (top-k margin order)."""

    def score(self, probs: torch.Tensor, conf: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        return top2_margin(probs)


@register_policy("entropy")
class LowEntropy(_OrderedPolicy):
    """Commit where the predictive distribution has the lowest entropy (Dream's ``entropy`` alg)."""

    def score(self, probs: torch.Tensor, conf: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        return neg_entropy(probs)


@dataclass(frozen=True)
class ThresholdConfig:
    threshold: float = 0.9
    """Commit every eligible slot whose confidence exceeds this (Fast-dLLM parallel decoding)."""

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {self.threshold}")


@register_policy("threshold")
class Threshold(Policy):
    """Fast-dLLM parallel decoding: every slot above the confidence threshold, at least one.

    Ignores the step budget: the number of forwards adapts to how sure the model is."""

    config_cls = ThresholdConfig

    def step(self, logits: torch.Tensor, ctx: StepContext) -> tuple[torch.Tensor, torch.Tensor]:
        x0, conf = sample_tokens(logits, ctx.temperature, ctx.generator)
        best = select_top_k(conf, ctx.eligible, torch.ones_like(conf[:, 0], dtype=torch.long))
        return x0, ((conf > self.config.threshold) & ctx.eligible) | best
