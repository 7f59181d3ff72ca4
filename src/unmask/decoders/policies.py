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
    rows: torch.Tensor | None = None
    """``[B]`` batch rows these logits belong to (None = all rows), for policies that keep history."""
    lo: int = 0
    """Canvas slot of the window's first column."""
    block_end: int | None = None
    """Window columns ``[0, block_end)`` are the current block; later ones are look-ahead slots (policies with
    ``lookahead > 0``). None = the whole window is the block."""


@dataclass(frozen=True)
class NoConfig:
    """This policy has no hyper-parameters."""


class Policy:
    """Base class. Subclasses set ``config_cls`` and implement ``step``."""

    config_cls: ClassVar[type] = NoConfig
    name: ClassVar[str] = ""
    follows_budget: ClassVar[bool] = True
    """True when the policy finishes a block within its step budget (the last budgeted step commits all);
    adaptive policies (threshold, factor) ignore the budget and take as many steps as confidence needs."""
    lookahead: int = 0
    """Slots past the block's edge this policy wants logits for (and may commit); see ``adaptive_block``."""

    def __init__(self, config: Any = None) -> None:
        if config is None:
            config = self.config_cls()
        elif isinstance(config, dict):
            config = config_from_dict(self.config_cls, config, where=f"policy {self.name!r}")
        elif not isinstance(config, self.config_cls):
            raise TypeError(f"policy {self.name!r} takes a {self.config_cls.__name__}, got {type(config).__name__}")
        self.config = config

    def reset(self, batch_size: int, gen_length: int, device: torch.device) -> None:
        """Called once per decode; policies with history (credit) allocate it here."""

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


def above_threshold(conf: torch.Tensor, eligible: torch.Tensor, threshold: float) -> torch.Tensor:
    """Every eligible slot whose confidence exceeds ``threshold``, and each row's most confident one."""
    masked = torch.where(eligible, conf, float("-inf"))
    best = torch.zeros_like(eligible).scatter_(-1, masked.argmax(-1, keepdim=True), True)
    return ((masked > threshold) | best) & eligible


class _OrderedPolicy(Policy):
    """Fixed-budget policies that differ only in the score ranking the slots (LLaDA Alg. 4-5 family)."""

    def score(self, probs: torch.Tensor, conf: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        raise NotImplementedError

    def step(self, logits: torch.Tensor, ctx: StepContext) -> tuple[torch.Tensor, torch.Tensor]:
        probs = logits.softmax(-1)
        x0, conf = sample_tokens(logits, ctx.temperature, ctx.generator, probs)
        return x0, select_top_k(self.score(probs, conf, ctx), ctx.eligible, even_quota(ctx))


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
    follows_budget = False

    def step(self, logits: torch.Tensor, ctx: StepContext) -> tuple[torch.Tensor, torch.Tensor]:
        x0, conf = sample_tokens(logits, ctx.temperature, ctx.generator)
        return x0, above_threshold(conf, ctx.eligible, self.config.threshold)


@dataclass(frozen=True)
class FactorConfig:
    factor: float = 1.0
    """Commit the largest n with (n + 1) * (1 - c_n) < factor, c_n the n-th highest confidence (Fast-dLLM)."""

    def __post_init__(self) -> None:
        if self.factor <= 0:
            raise ValueError(f"factor must be positive, got {self.factor}")


@register_policy("factor")
class Factor(Policy):
    """Fast-dLLM factor rule: commit more slots the more confident the top ones are.

    Sorting confidences c_1 >= c_2 >= ..., n slots are committed for the largest n with
    (n + 1)(1 - c_n) < factor; at least one."""

    config_cls = FactorConfig
    follows_budget = False

    def step(self, logits: torch.Tensor, ctx: StepContext) -> tuple[torch.Tensor, torch.Tensor]:
        x0, conf = sample_tokens(logits, ctx.temperature, ctx.generator)
        conf = conf.masked_fill(~ctx.eligible, 0.0)
        c = conf.sort(dim=-1, descending=True).values  # [B, W]
        n = torch.arange(1, c.shape[-1] + 1, device=c.device)
        ok = ((n + 1) * (1 - c) < self.config.factor) & (c > 0)
        # ok is monotone in n only roughly; count the prefix of consecutive passes
        k = ok.int().cumprod(-1).sum(-1).clamp_min(1)
        return x0, select_top_k(conf, ctx.eligible, k)


@dataclass(frozen=True)
class EarlyCommitConfig:
    gaps: tuple[float, ...] = (7.5, 5.0, 2.5)
    """Top-2 log-probability gap needed to fill every remaining slot, per progress stage (Prophet)."""
    stages: tuple[float, ...] = (0.33, 0.67)
    """Fraction of the block committed at which the next, lower gap applies."""

    def __post_init__(self) -> None:
        if len(self.gaps) != len(self.stages) + 1:
            raise ValueError(f"need one more gap than stage boundaries, got gaps={self.gaps} stages={self.stages}")
        if list(self.stages) != sorted(self.stages) or not all(0 < s < 1 for s in self.stages):
            raise ValueError(f"stages must increase within (0, 1), got {self.stages}")


@register_policy("early_commit")
class EarlyCommit(Policy):
    """Prophet: decode by low confidence until the top-2 gap says the answer is settled, then fill all.

    The gap is the mean over the row's eligible slots of log p1 - log p2; the needed gap falls as the block
    fills (arXiv 2508.19982)."""

    config_cls = EarlyCommitConfig

    def reset(self, batch_size: int, gen_length: int, device: torch.device) -> None:
        self.tables = torch.tensor(self.config.stages, device=device), torch.tensor(self.config.gaps, device=device)

    def step(self, logits: torch.Tensor, ctx: StepContext) -> tuple[torch.Tensor, torch.Tensor]:
        if not hasattr(self, "tables"):
            self.reset(logits.shape[0], ctx.lo + logits.shape[1], logits.device)
        stages, gaps = self.tables
        top = logits.topk(2, dim=-1)  # log p1 - log p2 = l1 - l2: the softmax normaliser cancels
        left = ctx.eligible.sum(-1)  # [B]
        gap = ((top.values[..., 0] - top.values[..., 1]) * ctx.eligible).sum(-1) / left.clamp_min(1)
        settled = gap >= gaps[torch.bucketize(1 - left / ctx.eligible.shape[-1], stages)]  # [B]
        if ctx.temperature == 0 and bool(settled.all()):
            # every row fills all its slots with the argmax: no probabilities or ranking needed (one host sync,
            # against a softmax over the vocabulary and two sorts)
            return top.indices[..., 0], ctx.eligible.clone()
        x0, conf = sample_tokens(logits, ctx.temperature, ctx.generator)
        commit = select_top_k(conf, ctx.eligible, even_quota(ctx))
        return x0, torch.where(settled[:, None], ctx.eligible, commit)


@dataclass(frozen=True)
class EarlyExitConfig:
    start: float = 0.99
    """Confidence every remaining slot must reach to exit at progress 0."""
    end: float = 0.7
    """Confidence needed at progress 1; linear in between (SchED's progress-aware schedule)."""

    def __post_init__(self) -> None:
        if not 0 < self.end <= self.start <= 1:
            raise ValueError(f"need 0 < end <= start <= 1, got start={self.start} end={self.end}")


@register_policy("early_exit")
class EarlyExit(Policy):
    """SchED-style early exit: low-confidence steps until every remaining slot clears a falling bar.

    The bar moves from ``start`` to ``end`` as the block fills; then all remaining slots commit at once."""

    config_cls = EarlyExitConfig

    def step(self, logits: torch.Tensor, ctx: StepContext) -> tuple[torch.Tensor, torch.Tensor]:
        x0, conf = sample_tokens(logits, ctx.temperature, ctx.generator)
        progress = 1 - ctx.eligible.sum(-1) / ctx.eligible.shape[-1]  # [B]
        bar = self.config.start - (self.config.start - self.config.end) * progress
        lowest = conf.masked_fill(~ctx.eligible, 1.0).min(-1).values
        commit = select_top_k(conf, ctx.eligible, even_quota(ctx))
        return x0, torch.where((lowest >= bar)[:, None], ctx.eligible, commit)


@dataclass(frozen=True)
class CreditConfig:
    threshold: float = 0.9
    """Commit slots whose credit-fused confidence exceeds this (at least one per step)."""
    decay: float = 0.7
    """Weight of past credit at each step; credit resets when a slot's top prediction changes."""
    strength: float = 1.0
    """How much accumulated credit raises the logit of the token it backs."""

    def __post_init__(self) -> None:
        if not 0 < self.threshold <= 1 or not 0 <= self.decay < 1 or self.strength < 0:
            raise ValueError(f"need 0 < threshold <= 1, 0 <= decay < 1, strength >= 0; got {self}")


@register_policy("credit")
class Credit(Policy):
    """Credit decoding: a slot that keeps predicting the same token earns credit, which boosts it.

    Each slot keeps its current top token and a decayed sum of that token's probability over past steps;
    the credit is added to the token's logit before a threshold commit, so stable predictions commit
    earlier (CreditDecoding, arXiv 2510.06133). History is one token per slot, not a full distribution."""

    config_cls = CreditConfig
    follows_budget = False

    def reset(self, batch_size: int, gen_length: int, device: torch.device) -> None:
        self.token = torch.full((batch_size, gen_length), -1, dtype=torch.long, device=device)
        self.credit = torch.zeros((batch_size, gen_length), device=device)

    def step(self, logits: torch.Tensor, ctx: StepContext) -> tuple[torch.Tensor, torch.Tensor]:
        if not hasattr(self, "credit"):
            self.reset(logits.shape[0], ctx.lo + logits.shape[1], logits.device)
        rows = torch.arange(logits.shape[0], device=logits.device) if ctx.rows is None else ctx.rows
        cols = slice(ctx.lo, ctx.lo + logits.shape[1])
        token, credit = self.token[rows, cols], self.credit[rows, cols]  # [b, W]
        top_p, top = logits.softmax(-1).max(-1)
        credit = torch.where(top == token, self.config.decay * credit, 0.0) + top_p
        self.token[rows, cols], self.credit[rows, cols] = top, credit
        fused = logits.scatter_add(-1, top[..., None], self.config.strength * credit[..., None])
        x0, conf = sample_tokens(fused, ctx.temperature, ctx.generator)
        return x0, above_threshold(conf, ctx.eligible, self.config.threshold)


@dataclass(frozen=True)
class AdaptiveBlockConfig:
    threshold: float = 0.9
    """Inside the block: commit every slot above this confidence, at least one (as ``threshold``)."""
    grow: float = 0.95
    """Past the block's edge: the block grows over consecutive slots whose confidence stays above this."""
    lookahead: int = 16
    """Most slots the block can grow by in one step."""

    def __post_init__(self) -> None:
        if not 0 < self.threshold <= 1 or not 0 < self.grow <= 1 or self.lookahead < 0:
            raise ValueError(f"need 0 < threshold <= 1, 0 < grow <= 1, lookahead >= 0; got {self}")


@register_policy("adaptive_block")
class AdaptiveBlock(Policy):
    """Threshold decoding whose block grows while confidence stays high.

    Each step the policy also sees ``lookahead`` slots past the block. Starting at the block's edge, the run of
    slots that are either already committed or predicted above ``grow`` joins the block and commits now; the
    next block starts at the first slot still masked. A confident stretch (an EOS tail, a copied span) is thus
    taken in one step instead of waiting for its block, and semi-autoregressive order is kept where the model
    is unsure (in the spirit of AdaBlock-dLLM, arXiv 2509.26432)."""

    config_cls = AdaptiveBlockConfig
    follows_budget = False

    @property
    def lookahead(self) -> int:  # type: ignore[override]
        return self.config.lookahead

    def step(self, logits: torch.Tensor, ctx: StepContext) -> tuple[torch.Tensor, torch.Tensor]:
        x0, conf = sample_tokens(logits, ctx.temperature, ctx.generator)
        w = logits.shape[1]
        end = w if ctx.block_end is None else ctx.block_end
        inside = torch.arange(w, device=logits.device) < end  # [W]
        elig_in = ctx.eligible & inside
        commit = above_threshold(conf, elig_in, self.config.threshold)
        ok = (~ctx.eligible | (conf > self.config.grow))[:, end:]  # committed slots do not break the run
        run = ok.int().cumprod(-1).bool()
        commit[:, end:] |= run & ctx.eligible[:, end:]
        return x0, commit
