"""The decoding loop, written once for every policy, modality and backbone."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from .caches import Cache, NoCache
from .canvas import Canvas
from .policies import Policy, StepContext
from .runner import ModelRunner


@dataclass(frozen=True)
class SamplingParams:
    """Per-request knobs (policy hyper-parameters live in the policy's config)."""

    gen_length: int = 32
    """Canvas slots to generate."""
    block_length: int | None = None
    """Semi-autoregressive block size; None = one block over the whole canvas."""
    steps: int | None = None
    """Step budget over the whole canvas (split evenly over blocks); None = gen_length (1 token/step)."""
    temperature: float = 0.0
    """0 = greedy; otherwise Gumbel-max sampling at this temperature."""
    seed: int = 0
    """Seed of sampling noise and random orders."""
    stop_at_eos: bool = True
    """End a row once it holds EOS with no mask before it (the rest becomes EOS); saves forwards."""

    def __post_init__(self) -> None:
        if self.gen_length <= 0:
            raise ValueError(f"gen_length must be positive, got {self.gen_length}")
        block = self.block_length or self.gen_length
        if block <= 0 or self.gen_length % block:
            raise ValueError(
                f"gen_length {self.gen_length} must be a multiple of block_length {self.block_length}"
            )
        steps = self.steps or self.gen_length
        if steps <= 0 or steps % (self.gen_length // block):
            raise ValueError(
                f"steps {self.steps} must be a positive multiple of the number of blocks "
                f"({self.gen_length // block} = gen_length / block_length)"
            )
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")

    @property
    def num_blocks(self) -> int:
        return self.gen_length // (self.block_length or self.gen_length)

    @property
    def steps_per_block(self) -> int:
        return (self.steps or self.gen_length) // self.num_blocks


@dataclass
class DecodeResult:
    tokens: torch.Tensor  # [B, G] final canvas
    nfe: torch.Tensor  # [B] forward passes per row
    commit_step: torch.Tensor  # [B, G] global step at which each slot was committed (0 = given)
    timings: dict[str, float] = field(default_factory=dict)  # seconds: encode, prefill, denoise, overhead
    cache_stats: dict[str, int] = field(default_factory=dict)  # forwards, refreshes, positions_computed

    @property
    def tokens_per_forward(self) -> float:
        return float(self.tokens.numel()) / max(1, int(self.nfe.sum()))


def _finish_at_eos(canvas: Canvas, eos_id: int, open_: torch.Tensor) -> None:
    """Rows whose first slot holding EOS or still open (``open_``) holds EOS are done: no open slot lies before
    their EOS, and every open slot after it becomes EOS."""
    is_eos = canvas.canvas == eos_id
    first = (is_eos | open_).max(1, keepdim=True).indices  # [B, 1]: the first True; 0 in a row with none
    finished = is_eos.gather(1, first)  # [B, 1]
    canvas.canvas.masked_fill_(open_ & finished, eos_id)
    canvas.done |= finished.squeeze(1)


def _clock(runner: ModelRunner) -> float:
    if runner.sync_timing and runner.device.type == "cuda":
        torch.cuda.synchronize(runner.device)
    return time.perf_counter()


def denoise(
    runner: ModelRunner,
    canvas: Canvas,
    policy: Policy,
    params: SamplingParams,
    eos_id: int | None = None,
    cache: Cache | None = None,
) -> DecodeResult:
    """Fill ``canvas`` block by block; each step the policy sees logits of the current block only.

    A policy with ``lookahead > 0`` (``adaptive_block``) also sees that many slots past the block's edge and may
    commit there; the next block then starts at the first slot still masked, so a block grows while the
    model stays confident."""
    cache = cache or NoCache()
    cache.reset(canvas)
    policy.reset(canvas.batch_size, canvas.gen_length, canvas.tokens.device)
    gen = torch.Generator(device=canvas.tokens.device).manual_seed(params.seed)
    g, width, look = canvas.gen_length, canvas.gen_length // params.num_blocks, policy.lookahead
    forward_s, step, t0, lo = 0.0, 0, _clock(runner), 0
    while lo < g and not bool(canvas.done.all()):  # rows end at EOS; then later blocks cost nothing
        hi = min(g, lo + width)
        end = min(g, hi + look)
        for s in range(hi - lo + 1):  # a policy commits >= 1 slot of the block a step, so this always suffices
            open_ = canvas.masked()
            if params.stop_at_eos and eos_id is not None:
                _finish_at_eos(canvas, eos_id, open_)  # the slots it fills lie in rows now done
            eligible = open_[:, lo:end] & ~canvas.done[:, None]  # [B, W]
            active = eligible[:, : hi - lo].any(1)
            n_active = int(active.sum())  # host sync: is any row still decoding?
            if not n_active:
                break
            rows = None if n_active == canvas.batch_size else active.nonzero().squeeze(1)
            tf = _clock(runner)
            logits = cache.logits(runner, canvas, rows, lo, end, refresh=s == 0)  # [b, W, V]
            forward_s += _clock(runner) - tf
            elig = eligible if rows is None else eligible[rows]
            ctx = StepContext(elig, max(1, params.steps_per_block - s), params.temperature, gen, rows, lo,
                              block_end=hi - lo)
            x0, commit = policy.step(logits, ctx)
            step += 1
            canvas.apply(rows, x0, commit & elig, step, lo)
        else:
            raise RuntimeError(f"policy {policy!r} made no progress in slots [{lo}, {hi}); it must commit >= 1 a step")
        if look:
            still = (canvas.masked() & ~canvas.done[:, None])[:, hi:].any(0).nonzero()
            lo = hi + int(still[0]) if len(still) else g
        else:
            lo = hi
    total = _clock(runner) - t0
    return DecodeResult(
        tokens=canvas.canvas.clone(), nfe=canvas.nfe.clone(), commit_step=canvas.commit_step.clone(),
        timings={"prefill": 0.0, "denoise": forward_s, "overhead": total - forward_s},
        cache_stats=dict(cache.stats),
    )
