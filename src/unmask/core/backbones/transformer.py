"""A Llama-family bidirectional transformer in plain torch (SDPA attention).

LLaDA and Dream differ only in checkpoint key names, q/k/v biases, GQA and whether logits are shifted;
they share this module and differ in their adapters (``llada.py``, ``dream.py``). Internal parameter
names are short and family-neutral; adapters map them to the real checkpoint names.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class TransformerConfig:
    """Architecture of the shared backbone. Family adapters translate real config.json files into it."""

    vocab_size: int
    """Rows of the embedding and LM head (may exceed the tokenizer's vocabulary, as in LLaDA-8B)."""
    hidden_size: int
    """Width of the residual stream (LLaDA ``d_model``)."""
    num_layers: int
    """Number of transformer blocks."""
    num_heads: int
    """Query heads; ``hidden_size`` must divide evenly by it."""
    num_kv_heads: int
    """Key/value heads (grouped-query attention when smaller than ``num_heads``)."""
    intermediate_size: int
    """Width of the SwiGLU feed-forward layer (LLaDA ``mlp_hidden_size``)."""
    rope_theta: float = 10000.0
    """RoPE base frequency (LLaDA-8B: 500000; Dream-7B: 1000000)."""
    rms_norm_eps: float = 1e-5
    """Epsilon of every RMSNorm."""
    qkv_bias: bool = False
    """Whether q/k/v projections carry a bias (Dream/Qwen2: yes; LLaDA: no)."""
    tie_embeddings: bool = False
    """Share the embedding matrix with the LM head."""
    max_position_embeddings: int = 4096
    """Longest sequence (prompt + canvas) the backbone accepts."""

    def __post_init__(self) -> None:
        for name in ("vocab_size", "hidden_size", "num_layers", "num_heads", "num_kv_heads", "intermediate_size"):
            if getattr(self, name) <= 0:
                raise ValueError(f"TransformerConfig.{name} must be positive, got {getattr(self, name)}")
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}"
            )
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads {self.num_heads} is not divisible by num_kv_heads {self.num_kv_heads}")
        if (self.hidden_size // self.num_heads) % 2:
            raise ValueError("head dimension must be even for RoPE")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Normalise in fp32 as LLaDA and Qwen2 do; bf16 variance loses digits at 4k width.
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


def rope_tables(
    positions: torch.Tensor, head_dim: int, theta: float, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables ``[B, 1, L, head_dim]`` for arbitrary (per-row) positions ``[B, L]``."""
    inv_freq = 1.0 / (
        theta ** (torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32) / head_dim)
    )
    freqs = positions.float()[..., None] * inv_freq  # [B, L, hd/2]
    emb = torch.cat((freqs, freqs), dim=-1)[:, None]  # [B, 1, L, hd]
    return emb.cos().to(dtype), emb.sin().to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat((-x2, x1), dim=-1) * sin


KV = tuple[torch.Tensor, torch.Tensor]


@dataclass
class PruneRequest:
    """Drop some input columns (visual tokens) from every layer after ``layer`` (FastV, VTW).

    Either ``fixed`` names the columns to keep (a ranking made earlier, reused), or the forward ranks the
    ``prunable`` columns by the attention they receive from the ``queries`` columns at ``layer`` (mean over heads
    and queries) and keeps the ``keep`` best of each row, or, with ``diverse``, keeps ``keep`` columns whose hidden
    states at ``layer`` are as unlike each other as it can find (greedy max-min cosine distance). Kept columns are
    gathered, so later layers really run on fewer positions; their rotary positions travel with them, so nothing
    shifts. ``past_alive`` (``[B, Lp]``) hides cached columns that an earlier pruned forward dropped, in the layers
    after ``layer``.
    """

    layer: int
    prunable: torch.Tensor  # [B, L] bool over this forward's columns
    queries: torch.Tensor  # [B, L] bool
    keep: int
    fixed: torch.Tensor | None = None  # [B, L] bool: keep exactly these (row counts equal)
    past_alive: torch.Tensor | None = None  # [B, Lp] bool
    kept: torch.Tensor | None = None  # out: [B, L] bool, the columns later layers saw
    diverse: bool = False


class Block(nn.Module):
    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        h, hd = cfg.hidden_size, cfg.head_dim
        self.cfg = cfg
        self.attn_norm = RMSNorm(h, cfg.rms_norm_eps)
        self.q = nn.Linear(h, cfg.num_heads * hd, bias=cfg.qkv_bias)
        self.k = nn.Linear(h, cfg.num_kv_heads * hd, bias=cfg.qkv_bias)
        self.v = nn.Linear(h, cfg.num_kv_heads * hd, bias=cfg.qkv_bias)
        self.o = nn.Linear(cfg.num_heads * hd, h, bias=False)
        self.mlp_norm = RMSNorm(h, cfg.rms_norm_eps)
        self.gate = nn.Linear(h, cfg.intermediate_size, bias=False)
        self.up = nn.Linear(h, cfg.intermediate_size, bias=False)
        self.down = nn.Linear(cfg.intermediate_size, h, bias=False)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        attn_mask: torch.Tensor | None,
        past: KV | None = None,
    ) -> tuple[torch.Tensor, KV]:
        """Returns the new residual stream and this chunk's (rotated) keys/values ``[B, Hkv, L, hd]``.

        ``past`` holds cached keys/values of other positions (already rotated at their own positions);
        they are attended to alongside the chunk, which is how prefix and dual caches skip recomputation.
        """
        q, k, v = self.qkv(self.attn_norm(x), cos, sin)
        k_all, v_all = (k, v) if past is None else (torch.cat([past[0], k], 2), torch.cat([past[1], v], 2))
        x = x + self.attend(q, k_all, v_all, attn_mask)
        return x + self.mlp(x), (k, v)

    # The pieces below let a feature cache (dLLM-Cache) recompute only some positions of a layer.
    def qkv(self, hx: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Rotated q ``[B, H, L, hd]`` and k, v ``[B, Hkv, L, hd]`` of normalised inputs ``hx``."""
        b, n, _ = hx.shape
        cfg = self.cfg
        q = self.q(hx).view(b, n, cfg.num_heads, cfg.head_dim).transpose(1, 2)
        k = self.k(hx).view(b, n, cfg.num_kv_heads, cfg.head_dim).transpose(1, 2)
        v = self.v(hx).view(b, n, cfg.num_kv_heads, cfg.head_dim).transpose(1, 2)
        return apply_rope(q, cos, sin), apply_rope(k, cos, sin), v

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask: torch.Tensor | None) -> torch.Tensor:
        """Attention output after ``o``: the residual update ``[B, Lq, D]``."""
        cfg = self.cfg
        att = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, enable_gqa=cfg.num_kv_heads != cfg.num_heads)
        return self.o(att.transpose(1, 2).reshape(q.shape[0], q.shape[2], -1))

    def mlp(self, x: torch.Tensor) -> torch.Tensor:
        hx = self.mlp_norm(x)
        return self.down(F.silu(self.gate(hx)) * self.up(hx))


class Transformer(nn.Module):
    """Bidirectional decoder stack; ``forward`` returns hidden states, ``logits`` applies the head.

    Keeping the head separate lets the runner project only the canvas positions it needs: at LLaDA-8B's
    126k vocabulary the head is a large share of a forward pass.
    """

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.num_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.embed.weight

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        *,
        inputs_embeds: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        key_mask: torch.Tensor | None = None,
        attn_mask: torch.Tensor | None = None,
        past: list[KV] | None = None,
        past_mask: torch.Tensor | None = None,
        kv_out: list[KV] | None = None,
        prune: PruneRequest | None = None,
    ) -> torch.Tensor:
        """Hidden states ``[B, L, D]``.

        ``key_mask`` ``[B, L]`` (True = real token) hides padding from every query; all real tokens see
        each other (bidirectional) unless ``attn_mask`` ``[B, 1, L, Lp+L]`` (bool, True = may attend) gives
        another pattern, e.g. block-causal. ``position_ids`` default to ``0..L-1``. ``past`` (one (k, v) per
        layer, ``past_mask`` ``[B, Lp]``) are cached keys/values attended to before the chunk; when
        ``kv_out`` is a list, each layer appends the chunk's own keys/values to it.
        """
        x = self.embed(input_ids) if inputs_embeds is None else inputs_embeds
        b, n, _ = x.shape
        if n > self.cfg.max_position_embeddings:
            raise ValueError(
                f"sequence of {n} positions exceeds the model's context of "
                f"{self.cfg.max_position_embeddings}; shorten the prompt or the generation length"
            )
        if position_ids is None:
            position_ids = torch.arange(n, device=x.device).expand(b, n)
        cos, sin = rope_tables(position_ids, self.cfg.head_dim, self.cfg.rope_theta, x.dtype)
        if prune is not None and (key_mask is None or attn_mask is not None):
            raise ValueError("token pruning needs a bidirectional backbone called with key_mask (no attn_mask)")
        if prune is not None and not 0 <= prune.layer < len(self.layers):
            raise ValueError(f"pruning after layer {prune.layer}, but the model has layers 0..{len(self.layers) - 1}; "
                             f"pick a layer in that range")
        pm = None
        if attn_mask is None and (key_mask is not None or past_mask is not None):
            keys = key_mask if key_mask is not None else torch.ones(b, n, dtype=torch.bool, device=x.device)
            if past is not None:
                pm = past_mask if past_mask is not None else torch.ones(
                    b, past[0][0].shape[2], dtype=torch.bool, device=x.device)
            attn_mask = (keys if pm is None else torch.cat([pm, keys], 1))[:, None, None, :]  # [B, 1, 1, Lp+L]
        idx = None  # [B, L'] columns still in the stream after pruning
        for i, layer in enumerate(self.layers):
            if prune is not None and i == prune.layer:
                idx = self._pruned_columns(layer, x, cos, sin, attn_mask, prune)
            x, kv = layer(x, cos, sin, attn_mask, None if past is None else past[i])
            if kv_out is not None:
                kv_out.append(kv if idx is None or i <= prune.layer else _scatter_kv(kv, idx, n))
            if prune is not None and i == prune.layer:
                x = x.gather(1, idx[..., None].expand(-1, -1, x.shape[-1]))
                cos, sin = (t.gather(2, idx[:, None, :, None].expand(-1, 1, -1, t.shape[-1])) for t in (cos, sin))
                keys = key_mask.gather(1, idx)
                if pm is not None:
                    alive = pm if prune.past_alive is None else pm & prune.past_alive
                    keys = torch.cat([alive, keys], 1)
                attn_mask = keys[:, None, None, :]
        x = self.norm(x)
        if idx is None:
            return x
        return torch.zeros(b, n, x.shape[-1], dtype=x.dtype, device=x.device).scatter(
            1, idx[..., None].expand(-1, -1, x.shape[-1]), x)  # dropped columns are zeros; no head reads them

    @staticmethod
    def _pruned_columns(layer: Block, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                        attn_mask: torch.Tensor, prune: PruneRequest) -> torch.Tensor:
        """Sorted ``[B, L']`` columns kept after ``layer``; records them in ``prune.kept``."""
        b, n, _ = x.shape
        if prune.fixed is not None:
            keep = prune.fixed
        elif prune.diverse:
            keep = ~prune.prunable
            for row in range(b):
                keep[row, _max_min_diverse(layer.attn_norm(x[row]), prune.prunable[row], prune.keep)] = True
        else:
            q, k, _ = layer.qkv(layer.attn_norm(x), cos, sin)  # [B, H, L, hd], [B, Hkv, L, hd]
            if k.shape[1] != q.shape[1]:
                k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
            # FastV ranks visual tokens by the attention they receive at layer K; only this chunk's columns are
            # candidates, so cached past keys are left out of the softmax (they are never pruned here).
            logits = (q @ k.transpose(-1, -2)) / q.shape[-1] ** 0.5  # [B, H, L, L]
            chunk_mask = attn_mask[..., attn_mask.shape[-1] - n :]
            att = logits.masked_fill(~chunk_mask, float("-inf")).softmax(-1)
            w = prune.queries.to(att.dtype)[:, None, :, None]
            received = (att * w).sum((1, 2)) / (w.sum((1, 2)) * att.shape[1]).clamp_min(1)  # [B, L]
            received = received.masked_fill(~prune.prunable, float("-inf"))
            keep = ~prune.prunable
            if prune.keep > 0:
                top = received.topk(prune.keep, dim=1).indices
                keep = keep.scatter(1, top, True)
        counts = keep.sum(1)
        if bool((counts != counts[0]).any()):
            raise ValueError(f"pruning must keep the same number of columns in every row, got {counts.tolist()}")
        prune.kept = keep
        return keep.nonzero()[:, 1].view(b, int(counts[0]))

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.lm_head(hidden)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def _max_min_diverse(h: torch.Tensor, candidates: torch.Tensor, k: int) -> torch.Tensor:
    """Columns of ``k`` candidates chosen greedily for the largest smallest cosine distance between any two
    (DivPrune, arXiv 2503.02175): first the candidate least like its nearest other one, then each time the one
    farthest from everything chosen so far. ``h`` ``[L, D]``, ``candidates`` ``[L]`` bool."""
    cols = candidates.nonzero()[:, 0]
    k = min(k, len(cols))
    if k == 0:
        return cols[:0]
    f = torch.nn.functional.normalize(h[cols].float(), dim=-1)
    sim = f @ f.T  # [N, N]
    nearest = sim.fill_diagonal_(-2.0).max(1).values
    chosen = [int(nearest.argmin())]
    closest = sim[chosen[0]].clone()  # each candidate's largest similarity to the chosen set
    closest[chosen[0]] = float("inf")
    for _ in range(k - 1):
        j = int(closest.argmin())
        chosen.append(j)
        closest = torch.maximum(closest, sim[j])
        closest[chosen] = float("inf")
    return cols[torch.tensor(sorted(chosen), device=cols.device)]


def _scatter_kv(kv: KV, idx: torch.Tensor, n: int) -> KV:
    """Keys/values of the kept columns ``idx`` ``[B, L']`` placed back at their columns of ``n`` (zeros elsewhere), so a
    cache indexes every layer by the same columns; the dropped ones are hidden by ``PruneRequest.past_alive``."""
    out = []
    for t in kv:  # [B, Hkv, L', hd]
        full = torch.zeros(*t.shape[:2], n, t.shape[-1], dtype=t.dtype, device=t.device)
        out.append(full.scatter(2, idx[:, None, :, None].expand(-1, t.shape[1], -1, t.shape[-1]), t))
    return out[0], out[1]
