"""Visual-token pruning as a hook of the runner (arXiv 2511.15098 studies these on diffusion MLLMs).

* ``fastv``: at layer K, rank the image tokens by the attention they receive from text and canvas positions and keep
  the best ``ratio`` of them in every later layer (FastV, arXiv 2403.06764);
* ``vtw``: drop every image token after layer K (visual-token withdrawal, arXiv 2405.05803);
* ``divprune``: at layer K, keep the ``ratio`` of image tokens whose hidden states differ most from each other
  (greedy max-min cosine distance; DivPrune, arXiv 2503.02175), where attention ranking keeps many near-copies of the
  same patch content (a scene's 16 tokens of one grid cell).

Schedules say *when* the ranking is made, in forward passes of the decode: ``first`` ranks at the first forward (all
canvas slots still masked) and keeps that set; ``late`` runs unpruned until forward ``start`` and ranks there, when the
canvas already holds committed tokens (the paper's advice for from-scratch dMLLMs); ``progressive`` re-ranks at every
forward with a ratio falling linearly from 1 to ``ratio`` over ``ramp`` forwards.

Rankings need the image columns among the forward's queries, i.e. a full forward; under a prefix or dual cache that is
the refresh at each block start, and the cached steps in between reuse the set (their past keys of dropped columns are
hidden in the layers after K). ``ratio=1`` keeps everything and gives the unpruned tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..core.backbones.transformer import PruneRequest
from .canvas import Canvas

METHODS = ("fastv", "vtw", "divprune")
SCHEDULES = ("first", "late", "progressive")


@dataclass(frozen=True)
class PruneConfig:
    method: str = "fastv"
    """``fastv`` (keep the top ``ratio`` by attention), ``divprune`` (keep the most diverse ``ratio``) or ``vtw``
    (keep none)."""
    layer: int = 1
    """K: image tokens are ranked at this layer and dropped from every later one."""
    ratio: float = 0.25
    """Share of image tokens kept (fastv, divprune)."""
    schedule: str = "first"
    """When the ranking is made: ``first``, ``late`` or ``progressive``."""
    start: int = 2
    """``late``: forwards run unpruned before the ranking; ``progressive``: forwards before the ramp starts."""
    ramp: int = 4
    """``progressive``: forwards over which the kept share falls from 1 to ``ratio``."""

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"prune method {self.method!r} is unknown; known: {', '.join(METHODS)}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"prune schedule {self.schedule!r} is unknown; known: {', '.join(SCHEDULES)}")
        if not 0.0 <= self.ratio <= 1.0:
            raise ValueError(f"prune ratio must be in [0, 1], got {self.ratio}")
        if self.layer < 0 or self.start < 0 or self.ramp < 1:
            raise ValueError(f"prune layer and start must be >= 0 and ramp >= 1, got {self.layer}, {self.start}, "
                             f"{self.ramp}")

    @property
    def name(self) -> str:
        if self.method == "vtw":
            return f"vtw:layer={self.layer}" + ("" if self.schedule == "first" else
                                                f",schedule={self.schedule},start={self.start}")
        tail = {"first": "", "late": f",start={self.start}", "progressive": f",start={self.start},ramp={self.ramp}"}
        return f"{self.method}:layer={self.layer},ratio={self.ratio:g},schedule={self.schedule}{tail[self.schedule]}"

    @classmethod
    def parse(cls, spec: str) -> PruneConfig | None:
        """``none`` | ``fastv[:k=v,...]`` | ``divprune[:k=v,...]`` | ``vtw[:k=v,...]`` (keys: layer, ratio, schedule,
        start, ramp)."""
        spec = spec.strip()
        if spec in ("", "none"):
            return None
        method, _, rest = spec.partition(":")
        kw: dict = {"method": method}
        types = {"layer": int, "ratio": float, "schedule": str, "start": int, "ramp": int}
        for part in filter(None, rest.split(",")):
            key, eq, val = part.partition("=")
            if not eq or key not in types:
                raise ValueError(f"--prune {spec!r}: bad setting {part!r}; use key=value with keys "
                                 f"{', '.join(types)} (e.g. fastv:layer=1,ratio=0.25,schedule=late,start=2)")
            kw[key] = types[key](val)
        if method == "vtw":
            kw["ratio"] = 0.0
        return cls(**kw)


class Pruner:
    """The hook the runner calls around each forward (``runner.pruner``). The kept set of a decode lives on its
    canvas (``Canvas.visual_kept``), so one pruner serves any number of decodes; ``stats`` add up over them."""

    def __init__(self, config: PruneConfig, kinds: tuple[str, ...] = ("image",)) -> None:
        self.config = config
        self.kinds = kinds
        self.stats = {"forwards": 0, "pruned_forwards": 0, "visual_tokens": 0.0}

    def _ratio(self, t: int) -> float | None:
        """Kept share at forward ``t``, or None for an unpruned forward."""
        c = self.config
        if c.schedule == "first":
            return c.ratio
        if t < c.start:
            return None
        if c.schedule == "late":
            return c.ratio
        return 1.0 - (1.0 - c.ratio) * min(1.0, (t - c.start + 1) / c.ramp)

    def request(self, canvas: Canvas, rows: torch.Tensor | None, c0: int, c1: int,
                past_cols: torch.Tensor | None = None) -> PruneRequest | None:
        """The pruning of one forward over columns ``[c0, c1)`` attending also to cached ``past_cols``."""
        if canvas.visual is None:
            return None
        kept = canvas.visual_kept
        sel = (lambda t: t) if rows is None else (lambda t: t.index_select(0, rows))
        t = int(canvas.nfe.max())
        ratio = self._ratio(t)
        n_vis = int(canvas.visual.sum(1).max())
        self.stats["forwards"] += 1
        p = canvas.prefix_len
        rank = ratio is not None and (kept is None or self.config.schedule == "progressive") and c0 < p
        if not rank and kept is None:  # unpruned: before the ranking, or a cached forward that cannot rank
            self.stats["visual_tokens"] += n_vis
            return None
        n = c1 - c0
        dev = canvas.tokens.device
        visual = torch.zeros(canvas.batch_size, n, dtype=torch.bool, device=dev)
        if c0 < p:
            visual[:, : min(p, c1) - c0] = canvas.visual[:, c0 : min(p, c1)]
        visual = sel(visual)
        queries = sel(canvas.key_mask[:, c0:c1]) & ~visual
        past_alive, fixed = None, None
        if rank:
            keep = 0 if self.config.method == "vtw" else round(ratio * n_vis)
        else:  # reuse the set ranked earlier: this forward's columns as kept there, cached ones hidden after K
            keep = n_vis
            fixed = torch.ones(canvas.batch_size, n, dtype=torch.bool, device=dev)
            if c0 < p:
                fixed[:, : min(p, c1) - c0] = kept[:, c0 : min(p, c1)]
            fixed = sel(fixed)
            if past_cols is not None:
                alive = torch.ones(canvas.batch_size, canvas.tokens.shape[1], dtype=torch.bool, device=dev)
                alive[:, :p] = kept
                past_alive = sel(alive)[:, past_cols]
        self.stats["pruned_forwards"] += 1
        return PruneRequest(self.config.layer, visual, queries, keep, fixed=fixed, past_alive=past_alive,
                            diverse=self.config.method == "divprune")

    def update(self, req: PruneRequest | None, canvas: Canvas, rows: torch.Tensor | None, c0: int) -> None:
        """Record on the canvas the columns a ranking forward kept (only full forwards over the prefix rank)."""
        if req is None:
            return
        p = canvas.prefix_len
        if req.kept is not None and c0 == 0 and req.fixed is None:
            if canvas.visual_kept is None:
                canvas.visual_kept = torch.ones(canvas.batch_size, p, dtype=torch.bool, device=canvas.tokens.device)
            if rows is None:
                canvas.visual_kept = req.kept[:, :p].clone()
            else:
                canvas.visual_kept[rows] = req.kept[:, :p]
        self.stats["visual_tokens"] += float((canvas.visual_kept & canvas.visual).sum(1).float().mean())
