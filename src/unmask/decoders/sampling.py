"""The one sampling utility: tokens and confidences from logits, without host syncs.

Sampling at temperature T is ``argmax(logits + T * Gumbel)`` (the Gumbel-max trick, which LLaDA writes as
``exp(logits) / (-log u)^T``); T = 0 is greedy. No ``multinomial``, no ``.item()``.
"""

from __future__ import annotations

import torch


def gumbel_noise(shape: torch.Size, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    u = torch.rand(shape, generator=generator, device=device, dtype=torch.float32)
    return -torch.log(-torch.log(u.clamp_min(1e-20)).clamp_min(1e-20))


def sample_tokens(
    logits: torch.Tensor, temperature: float, generator: torch.Generator | None = None,
    probs: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokens ``[B, G]`` and their probabilities ``[B, G]`` under ``softmax(logits)`` (pass ``probs`` when the
    caller has them already)."""
    probs = logits.softmax(-1) if probs is None else probs  # [B, G, V]
    if temperature > 0:
        x0 = (logits + temperature * gumbel_noise(logits.shape, generator, logits.device)).argmax(-1)
        return x0, probs.gather(-1, x0[..., None]).squeeze(-1)
    conf, x0 = probs.max(-1)  # greedy: the most probable token is the argmax of the logits
    return x0, conf


def top2_margin(probs: torch.Tensor) -> torch.Tensor:
    top = probs.topk(2, dim=-1).values
    return top[..., 0] - top[..., 1]


def neg_entropy(probs: torch.Tensor) -> torch.Tensor:
    return (probs * probs.clamp_min(1e-12).log()).sum(-1)


def select_top_k(score: torch.Tensor, eligible: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """``[B, G]`` bool: the ``k[b]`` highest-scoring eligible slots of each row, with per-row k, no loop.

    Ties go to the earlier slot (stable sort); a slot's rank is the inverse of the sort permutation."""
    order = torch.where(eligible, score, float("-inf")).argsort(dim=-1, descending=True, stable=True)
    return (order.argsort(dim=-1) < k[:, None]) & eligible
