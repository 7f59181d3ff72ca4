"""The runner owns tensors and the model: forwards over chosen rows and columns, logits for canvas slots only."""

from __future__ import annotations

import torch

from ..core.backbones import BackboneInfo, Transformer
from ..core.backbones.transformer import KV
from .canvas import Canvas
from .pruning import Pruner


class ModelRunner:
    def __init__(self, model: Transformer, info: BackboneInfo, allowed_tokens: torch.Tensor | None = None) -> None:
        """``allowed_tokens`` (``[V]`` bool) restricts what the canvas may hold, e.g. action bins only."""
        self.model = model
        self.info = info
        vocab = model.cfg.vocab_size
        bias = torch.zeros(vocab)
        if allowed_tokens is not None:
            bias[~allowed_tokens.cpu()] = float("-inf")
        # The mask token is never a valid prediction; LLaDA's own sampler leaves this to chance.
        bias[info.mask_id] = float("-inf")
        self.logit_bias = bias.to(next(model.parameters()).device)
        self.shift = int(info.shift_logits)
        self.sync_timing = False
        """Synchronize CUDA around each forward so the loop's forward/overhead split is real (benchmarks)."""
        self.pruner: Pruner | None = None
        """Visual-token pruning hook (``decoders.pruning``); None runs every column through every layer."""

    @property
    def device(self) -> torch.device:
        return self.logit_bias.device

    @property
    def max_length(self) -> int:
        return self.model.cfg.max_position_embeddings

    def embed(self, canvas: Canvas, rows: torch.Tensor | None, c0: int, c1: int) -> torch.Tensor:
        """Input vectors ``[b, c1-c0, D]`` of columns ``[c0, c1)``: token embeddings, or segment embeddings."""
        sel = _rows(rows)
        x = self.model.embed(sel(canvas.tokens[:, c0:c1]))
        if canvas.embeds is not None and c0 < canvas.prefix_len:
            e1 = min(c1, canvas.prefix_len)
            pre = torch.where(sel(canvas.embed_mask[:, c0:e1])[..., None], sel(canvas.embeds[:, c0:e1]).to(x.dtype),
                              x[:, : e1 - c0])
            x = torch.cat([pre, x[:, e1 - c0 :]], dim=1)
        return x

    @torch.inference_mode()
    def hidden(
        self,
        canvas: Canvas,
        rows: torch.Tensor | None,
        c0: int,
        c1: int,
        past: list[KV] | None = None,
        past_mask: torch.Tensor | None = None,
        kv_out: list[KV] | None = None,
        past_cols: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Hidden states ``[b, c1-c0, D]`` of sequence columns ``[c0, c1)``, attending also to ``past``
        (keys/values of sequence columns ``past_cols``)."""
        sel = _rows(rows)
        key_mask = sel(canvas.key_mask[:, c0:c1])
        attn_mask = None
        if self.info.block_size is not None:
            dev = canvas.tokens.device
            q_cols = torch.arange(c0, c1, device=dev)
            k_cols = q_cols if past_cols is None else torch.cat([past_cols, q_cols])
            keys = key_mask if past_mask is None else torch.cat([past_mask, key_mask], 1)
            allowed = self.block_of(canvas, k_cols)[None, :] <= self.block_of(canvas, q_cols)[:, None]
            attn_mask = allowed[None, None] & keys[:, None, None, :]  # [b, 1, Lq, Lk]
        prune = None if self.pruner is None else self.pruner.request(canvas, rows, c0, c1, past_cols)
        h = self.model(
            inputs_embeds=self.embed(canvas, rows, c0, c1), position_ids=sel(canvas.positions[:, c0:c1]),
            key_mask=key_mask, attn_mask=attn_mask, past=past, past_mask=past_mask, kv_out=kv_out, prune=prune,
        )
        if prune is not None:
            self.pruner.update(prune, canvas, rows, c0)
        return h

    def block_of(self, canvas: Canvas, cols: torch.Tensor) -> torch.Tensor:
        """Attention block of each sequence column: -1 for the prompt, then one id per canvas block."""
        return torch.where(cols < canvas.prefix_len, -1,
                           torch.div(cols - canvas.prefix_len, self.info.block_size, rounding_mode="floor"))

    def slot_columns(self, canvas: Canvas, lo: int, hi: int) -> tuple[int, int]:
        """Sequence columns whose hidden states predict canvas slots ``[lo, hi)`` (one earlier for Dream)."""
        p = canvas.prefix_len
        if self.shift and p == 0:
            raise ValueError("a shifted-logit backbone (Dream) needs at least one prefix token")
        return p + lo - self.shift, p + hi - self.shift

    @torch.inference_mode()
    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.model.logits(hidden).float() + self.logit_bias

    def forward(self, canvas: Canvas, rows: torch.Tensor | None = None, lo: int = 0, hi: int | None = None):
        """Logits ``[b, hi-lo, V]`` (float32) for canvas slots ``[lo, hi)`` with one full, uncached forward."""
        hi = canvas.gen_length if hi is None else hi
        h = self.hidden(canvas, rows, 0, canvas.tokens.shape[1])
        s0, s1 = self.slot_columns(canvas, lo, hi)
        return self.head(h[:, s0:s1])


def _rows(rows: torch.Tensor | None):
    return (lambda t: t) if rows is None else (lambda t: t.index_select(0, rows))
