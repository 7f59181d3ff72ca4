"""Caches as explicit objects passed into the loop, one contract for all (STYLE rule 6).

``logits(runner, canvas, rows, lo, hi, refresh)`` returns logits for canvas slots ``[lo, hi)`` of ``rows``;
``refresh`` is True on the first step of a block. Each cache owns its refresh rule and its buffers
(allocated once per decode in ``reset``), and counts the query positions it computed.

For a bidirectional backbone (LLaDA, Dream) the keys/values of the prompt and of later blocks depend on
the canvas, so reusing them is an approximation (Fast-dLLM, arXiv 2505.22618): these caches are measured
for accuracy, not claimed exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from ..core.backbones.transformer import KV, rope_tables
from ..core.config import config_from_dict
from ..core.registry import Registry
from .canvas import Canvas
from .runner import ModelRunner


@dataclass(frozen=True)
class NoConfig:
    """This cache has no hyper-parameters."""


class Cache:
    config_cls: ClassVar[type] = NoConfig
    name: ClassVar[str] = ""
    exact: ClassVar[bool] = True
    """True when the cache provably gives the same tokens as recomputing everything."""

    def __init__(self, config: Any = None) -> None:
        if isinstance(config, dict):
            config = config_from_dict(self.config_cls, config, where=f"cache {self.name!r}")
        self.config = config if config is not None else self.config_cls()
        self.stats: dict[str, int] = {}

    def reset(self, canvas: Canvas) -> None:
        self.stats = {"forwards": 0, "refreshes": 0, "positions_computed": 0}

    def logits(self, runner: ModelRunner, canvas: Canvas, rows: torch.Tensor | None, lo: int, hi: int,
               refresh: bool) -> torch.Tensor:
        raise NotImplementedError

    def _count(self, rows: torch.Tensor | None, canvas: Canvas, positions: int) -> None:
        b = canvas.batch_size if rows is None else rows.numel()
        self.stats["forwards"] += 1
        self.stats["positions_computed"] += b * positions


CACHES: Registry[type[Cache]] = Registry("cache")


def register_cache(name: str):
    def deco(cls: type[Cache]) -> type[Cache]:
        cls.name = name
        return CACHES.register(name)(cls)

    return deco


def build_cache(name: str, config: dict[str, Any] | None = None) -> Cache:
    return CACHES.get(name)(config)


@register_cache("none")
class NoCache(Cache):
    """Recompute every position at every step (the reference)."""

    def logits(self, runner, canvas, rows, lo, hi, refresh):
        self._count(rows, canvas, canvas.tokens.shape[1])
        return runner.forward(canvas, rows, lo, hi)


class _KVCache(Cache):
    """Keep every layer's keys/values from the full forward at each block's start; reuse some columns."""

    exact = False

    def reset(self, canvas: Canvas) -> None:
        super().reset(canvas)
        self.kv: list[KV] | None = None  # per layer [B, Hkv, L, hd], allocated at the first refresh

    def reused(self, canvas: Canvas, runner: ModelRunner, lo: int, hi: int) -> tuple[int, int]:
        """Columns ``[c0, c1)`` recomputed each step; all others come from the cache."""
        raise NotImplementedError

    def visible(self, canvas: Canvas, runner: ModelRunner, lo: int, hi: int) -> torch.Tensor:
        """``[L]`` bool: cached columns worth passing to the forward (all, for bidirectional attention)."""
        return torch.ones(canvas.tokens.shape[1], dtype=torch.bool, device=canvas.tokens.device)

    def logits(self, runner, canvas, rows, lo, hi, refresh):
        n = canvas.tokens.shape[1]
        s0, s1 = runner.slot_columns(canvas, lo, hi)
        idx = torch.arange(canvas.batch_size, device=canvas.tokens.device) if rows is None else rows
        if refresh or self.kv is None:
            kv: list[KV] = []
            h = runner.hidden(canvas, rows, 0, n, kv_out=kv)
            if self.kv is None:
                self.kv = [(torch.zeros((canvas.batch_size, *k.shape[1:]), dtype=k.dtype, device=k.device),
                            torch.zeros((canvas.batch_size, *v.shape[1:]), dtype=v.dtype, device=v.device))
                           for k, v in kv]
            for (kb, vb), (k, v) in zip(self.kv, kv, strict=True):
                kb[idx], vb[idx] = k, v
            self.stats["refreshes"] += 1
            self._count(rows, canvas, n)
            return runner.head(h[:, s0:s1])
        c0, c1 = self.reused(canvas, runner, lo, hi)
        keep = torch.ones(n, dtype=torch.bool, device=canvas.tokens.device)
        keep[c0:c1] = False
        keep &= self.visible(canvas, runner, lo, hi)
        past = [(kb[idx][:, :, keep], vb[idx][:, :, keep]) for kb, vb in self.kv]
        past_mask = canvas.key_mask[idx][:, keep]
        h = runner.hidden(canvas, rows, c0, c1, past=past, past_mask=past_mask, past_cols=keep.nonzero().squeeze(1))
        self._count(rows, canvas, c1 - c0)
        return runner.head(h[:, s0 - c0 : s1 - c0])


@register_cache("prefix")
class PrefixCache(_KVCache):
    """Fast-dLLM prefix cache: prompt and finished blocks reused, the rest recomputed each step.

    The cache refreshes at each block start; the current block and everything after it are recomputed."""

    def reused(self, canvas, runner, lo, hi):
        return runner.slot_columns(canvas, lo, hi)[0], canvas.tokens.shape[1]


@register_cache("dual")
class DualCache(_KVCache):
    """Fast-dLLM dual cache: prefix and suffix reused, only the current block recomputed each step.

    Both the prefix and the later, still-masked blocks are refreshed at each block start."""

    def reused(self, canvas, runner, lo, hi):
        return runner.slot_columns(canvas, lo, hi)


@register_cache("block_causal")
class BlockCausalCache(_KVCache):
    """Exact prefix cache for block-causal backbones: prompt and finished blocks never see later slots,
    so their keys/values are final once their block is done; only the current block is recomputed."""

    exact = True

    def reused(self, canvas, runner, lo, hi):
        if runner.info.block_size is None:
            raise ValueError(
                "cache 'block_causal' is exact only for block-causal backbones (config block_causal_size); "
                "use 'prefix' or 'dual' for bidirectional models such as LLaDA and Dream"
            )
        if hi - lo != runner.info.block_size:
            raise ValueError(f"block_length {hi - lo} must equal the backbone's block size {runner.info.block_size}")
        return runner.slot_columns(canvas, lo, hi)

    def visible(self, canvas, runner, lo, hi):
        cols = torch.arange(canvas.tokens.shape[1], device=canvas.tokens.device)
        return cols < runner.slot_columns(canvas, lo, hi)[0]


@dataclass(frozen=True)
class FeatureCacheConfig:
    prompt_interval: int = 32
    """Recompute everything, prompt included, every this many steps (dLLM-Cache K_p)."""
    response_interval: int = 4
    """Recompute every response position every this many steps (K_r)."""
    ratio: float = 0.25
    """In between, recompute this fraction of response positions: those whose value vectors changed most."""

    def __post_init__(self) -> None:
        if self.prompt_interval < 1 or self.response_interval < 1 or not 0 < self.ratio <= 1:
            raise ValueError(f"need intervals >= 1 and 0 < ratio <= 1, got {self}")


@register_cache("feature")
class FeatureCache(Cache):
    """dLLM-Cache: reuse each layer's attention and MLP outputs; refresh on intervals and where values moved.

    Everything is recomputed at block starts and every ``prompt_interval`` steps; every response position
    every ``response_interval`` steps; in between, per layer, the response's value vectors are recomputed
    (one projection), compared with the cached ones by cosine similarity, and only the ``ratio`` least
    similar positions get attention and MLP recomputed (arXiv 2506.06295)."""

    config_cls = FeatureCacheConfig
    exact = False

    def reset(self, canvas: Canvas) -> None:
        super().reset(canvas)
        self.feats: list[dict[str, torch.Tensor]] | None = None
        self.step = 0

    def logits(self, runner, canvas, rows, lo, hi, refresh):
        if runner.pruner is not None and canvas.visual is not None:
            raise ValueError("visual-token pruning does not compose with the feature cache (it recomputes layers "
                             "piecewise); use cache none, prefix or dual with --prune")
        cfg, self.step = self.config, self.step + 1
        idx = torch.arange(canvas.batch_size, device=canvas.tokens.device) if rows is None else rows
        full = refresh or self.feats is None or (self.step - 1) % cfg.prompt_interval == 0
        whole_response = (self.step - 1) % cfg.response_interval == 0
        self.stats["refreshes"] += int(full)
        self.stats["response_refreshes"] = self.stats.get("response_refreshes", 0) + int(whole_response and not full)
        h = self._forward(runner, canvas, idx, full, 1.0 if whole_response else cfg.ratio)
        s0, s1 = runner.slot_columns(canvas, lo, hi)
        r0 = canvas.prefix_len - runner.shift
        return runner.head(h[:, s0 - r0 : s1 - r0])

    @torch.inference_mode()
    def _forward(self, runner: ModelRunner, canvas: Canvas, idx: torch.Tensor, full: bool, ratio: float
                 ) -> torch.Tensor:
        """Final hidden states of response columns ``[P - shift, L)`` for rows ``idx``."""
        model, n = runner.model, canvas.tokens.shape[1]
        r0 = canvas.prefix_len - runner.shift
        c0 = 0 if full else r0
        x = runner.embed(canvas, idx, c0, n)  # [b, Lc, D]
        pos = canvas.positions[idx, c0:]
        cos, sin = rope_tables(pos, model.cfg.head_dim, model.cfg.rope_theta, x.dtype)
        key_mask = canvas.key_mask[idx]
        attn_mask = key_mask[:, None, None, :]
        if self.feats is None:
            self.feats = [{} for _ in model.layers]
        b, lr = idx.numel(), n - r0
        k_sel = max(1, int(round(ratio * lr)))
        self._count_rows(b, n if full else k_sel)
        for layer, f in zip(model.layers, self.feats, strict=True):
            hx = layer.attn_norm(x)
            if full:
                q, k, v = layer.qkv(hx, cos, sin)
                attn = layer.attend(q, k, v, attn_mask)
                x = x + attn
                mlp = layer.mlp(x)
                x = x + mlp
                _store(f, idx, k=k, v=v, attn=attn, mlp=mlp, size=canvas.batch_size)
                continue
            # V-verify: which response positions' values moved most since they were cached
            v_now = layer.v(hx)  # [b, Lr, Hkv*hd]
            v_old = f["v"][idx][:, :, r0:].transpose(1, 2).reshape(b, lr, -1)
            sim = torch.nn.functional.cosine_similarity(v_now, v_old, dim=-1)  # [b, Lr]
            pick = sim.topk(k_sel, dim=-1, largest=False).indices  # [b, k]
            gather = pick[..., None].expand(-1, -1, x.shape[-1])
            q, k, v = layer.qkv(hx.gather(1, gather), cos.gather(2, _hd(pick, cos)), sin.gather(2, _hd(pick, sin)))
            k_all, v_all = f["k"][idx].clone(), f["v"][idx].clone()
            k_all.scatter_(2, _hd(pick + r0, k_all), k)
            v_all.scatter_(2, _hd(pick + r0, v_all), v)
            attn = f["attn"][idx][:, r0:].scatter(1, gather, layer.attend(q, k_all, v_all, attn_mask))
            x = x + attn
            mlp = f["mlp"][idx][:, r0:].scatter(1, gather, layer.mlp(x.gather(1, gather)))
            x = x + mlp
            f["k"][idx], f["v"][idx] = k_all, v_all
            f["attn"][idx, r0:], f["mlp"][idx, r0:] = attn, mlp
        x = model.norm(x)
        return x if not full else x[:, r0:]

    def _count_rows(self, b: int, positions: int) -> None:
        self.stats["forwards"] += 1
        self.stats["positions_computed"] += b * positions


def _hd(pick: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Index ``[b, heads, k, hd]`` selecting sequence positions ``pick`` ``[b, k]`` of a ``[b, heads, L, hd]``."""
    return pick[:, None, :, None].expand(like.shape[0], like.shape[1], pick.shape[1], like.shape[3])


def _store(f: dict[str, torch.Tensor], idx: torch.Tensor, size: int, **tensors: torch.Tensor) -> None:
    for name, t in tensors.items():
        if name not in f:
            f[name] = torch.zeros((size, *t.shape[1:]), dtype=t.dtype, device=t.device)
        f[name][idx] = t
