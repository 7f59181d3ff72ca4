"""The runner owns tensors and the model: one forward over the active rows, logits for canvas slots only."""

from __future__ import annotations

import torch

from ..core.backbones import BackboneInfo, Transformer
from .canvas import Canvas


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

    @property
    def device(self) -> torch.device:
        return self.logit_bias.device

    @property
    def max_length(self) -> int:
        return self.model.cfg.max_position_embeddings

    @torch.inference_mode()
    def forward(self, canvas: Canvas, rows: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``[b, G, V]`` (float32) for the canvas slots of ``rows`` (all rows when None)."""
        sel = (lambda t: t) if rows is None else (lambda t: t.index_select(0, rows))
        tokens = sel(canvas.tokens)
        x = self.model.embed(tokens)  # [b, P+G, D]
        if canvas.embeds is not None:
            p = canvas.prefix_len
            prefix = torch.where(sel(canvas.embed_mask)[..., None], sel(canvas.embeds).to(x.dtype), x[:, :p])
            x = torch.cat([prefix, x[:, p:]], dim=1)
        hidden = self.model(inputs_embeds=x, position_ids=sel(canvas.positions), key_mask=sel(canvas.key_mask))
        p, g = canvas.prefix_len, canvas.gen_length
        if self.info.shift_logits:
            if p == 0:
                raise ValueError("a shifted-logit backbone (Dream) needs at least one prefix token")
            hidden = hidden[:, p - 1 : p - 1 + g]
        else:
            hidden = hidden[:, p:]
        return self.model.logits(hidden).float() + self.logit_bias
