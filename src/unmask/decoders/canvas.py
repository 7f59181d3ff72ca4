"""Requests as tensors: a prefix of Segments plus a canvas of slots to fill, batched with left padding.

Every row's canvas starts at the same column ``prefix_len`` (prompts are left-padded), so a policy sees
one ``[B, G]`` grid and the runner slices one range of columns.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Segment:
    """One piece of a prefix: token ids (text, special tokens) or embeddings (an image, audio frames).

    The backbone never learns the modality: an embedding segment occupies ``len`` positions whose input
    vectors replace the token embeddings.
    """

    kind: str
    """Modality tag (``text``, ``image``, ``audio``…), for telemetry and hooks."""
    token_ids: torch.Tensor | None = None
    """``[n]`` token ids, for token segments."""
    embeddings: torch.Tensor | None = None
    """``[n, D]`` input vectors, for embedding segments."""

    def __post_init__(self) -> None:
        if (self.token_ids is None) == (self.embeddings is None):
            raise ValueError(f"Segment({self.kind!r}) needs exactly one of token_ids or embeddings")

    def __len__(self) -> int:
        data = self.token_ids if self.token_ids is not None else self.embeddings
        return int(data.shape[0])


@dataclass
class Canvas:
    """Batched decoding state. ``tokens`` holds prefix and canvas; ``fixed`` canvas slots never change."""

    tokens: torch.Tensor  # [B, P+G] long
    key_mask: torch.Tensor  # [B, P+G] bool, False at left padding
    positions: torch.Tensor  # [B, P+G] long, RoPE positions (0 at each row's first real token)
    fixed: torch.Tensor  # [B, G] bool
    commit_step: torch.Tensor  # [B, G] long, -1 until committed
    done: torch.Tensor  # [B] bool
    nfe: torch.Tensor  # [B] long, forward passes that included the row
    prefix_len: int
    mask_id: int
    embeds: torch.Tensor | None = None  # [B, P, D] vectors of embedding segments
    embed_mask: torch.Tensor | None = None  # [B, P] bool, True where ``embeds`` applies
    visual: torch.Tensor | None = None  # [B, P] bool, columns of image segments (what pruning may drop)
    visual_kept: torch.Tensor | None = None  # [B, P] bool, prefix columns kept once a pruner has ranked them

    @property
    def batch_size(self) -> int:
        return self.tokens.shape[0]

    @property
    def gen_length(self) -> int:
        return self.tokens.shape[1] - self.prefix_len

    @property
    def canvas(self) -> torch.Tensor:
        return self.tokens[:, self.prefix_len :]

    def masked(self) -> torch.Tensor:
        """``[B, G]`` slots still to fill (fixed slots never hold the mask token: ``build`` refuses that)."""
        return self.canvas == self.mask_id

    def has_masks(self) -> bool:
        return bool((self.masked() & ~self.done[:, None]).any())

    def apply(self, rows: torch.Tensor | None, x0: torch.Tensor, commit: torch.Tensor, step: int, lo: int = 0) -> None:
        """Write committed tokens ``[b, W]`` of ``rows`` (all when None) into slots ``[lo, lo+W)`` and count
        one forward for each row."""
        c0, w = self.prefix_len + lo, x0.shape[1]
        if rows is None:  # every row: write through views, no index copies
            view = self.tokens[:, c0 : c0 + w]
            view.copy_(torch.where(commit, x0, view))
            self.commit_step[:, lo : lo + w].masked_fill_(commit, step)
            self.nfe += 1
            return
        self.tokens[rows, c0 : c0 + w] = torch.where(commit, x0, self.tokens[rows, c0 : c0 + w])
        self.commit_step[rows, lo : lo + w] = torch.where(commit, step, self.commit_step[rows, lo : lo + w])
        self.nfe[rows] += 1

    @classmethod
    def build(
        cls,
        prefixes: list[list[Segment]],
        gen_length: int,
        *,
        mask_id: int,
        pad_id: int,
        init_tokens: list[torch.Tensor | None] | None = None,
        fixed_masks: list[torch.Tensor | None] | None = None,
        max_length: int | None = None,
        device: torch.device | str = "cpu",
    ) -> Canvas:
        """Left-pad ``prefixes`` and append ``gen_length`` slots per row.

        ``init_tokens[i]`` (``[G]``, ``mask_id`` where open) pre-fills row i's canvas, e.g. from an ASR prior
        or inpainted actions; ``fixed_masks[i]`` (``[G]`` bool) marks slots no policy may change.
        """
        if not prefixes:
            raise ValueError("no requests to decode: the batch is empty")
        if gen_length <= 0:
            raise ValueError(f"gen_length must be positive, got {gen_length}")
        lens = [sum(len(s) for s in p) for p in prefixes]
        for i, n in enumerate(lens):
            if max_length is not None and n + gen_length > max_length:
                raise ValueError(
                    f"request {i}: prompt of {n} tokens + {gen_length} generated exceeds the model's context "
                    f"of {max_length}; shorten the prompt or lower gen_length to {max(0, max_length - n)}"
                )
        b, p = len(prefixes), max(lens)
        tokens = torch.full((b, p + gen_length), pad_id, dtype=torch.long)
        tokens[:, p:] = mask_id
        key_mask = torch.zeros((b, p + gen_length), dtype=torch.bool)
        fixed = torch.zeros((b, gen_length), dtype=torch.bool)
        embeds = embed_mask = visual = None
        for i, segs in enumerate(prefixes):
            col = p - lens[i]
            key_mask[i, col:] = True
            for seg in segs:
                n = len(seg)
                if seg.token_ids is not None:
                    tokens[i, col : col + n] = seg.token_ids
                else:
                    if embeds is None:
                        embeds = torch.zeros((b, p, seg.embeddings.shape[-1]), dtype=seg.embeddings.dtype)
                        embed_mask = torch.zeros((b, p), dtype=torch.bool)
                    embeds[i, col : col + n] = seg.embeddings
                    embed_mask[i, col : col + n] = True
                    if seg.kind == "image":
                        if visual is None:
                            visual = torch.zeros((b, p), dtype=torch.bool)
                        visual[i, col : col + n] = True
                col += n
            if init_tokens is not None and init_tokens[i] is not None:
                tokens[i, p:] = init_tokens[i]
            if fixed_masks is not None and fixed_masks[i] is not None:
                fixed[i] = fixed_masks[i]
                if bool((tokens[i, p:][fixed[i]] == mask_id).any()):
                    raise ValueError(f"request {i}: a fixed canvas slot holds the mask token; fix only slots "
                                     "whose init_tokens give a real token")
        positions = (key_mask.long().cumsum(1) - 1).clamp_min(0)
        canvas = tokens[:, p:]
        commit_step = torch.where(canvas == mask_id, -1, 0)
        dev = torch.device(device)
        return cls(
            tokens=tokens.to(dev), key_mask=key_mask.to(dev), positions=positions.to(dev),
            fixed=fixed.to(dev), commit_step=commit_step.to(dev),
            done=torch.zeros(b, dtype=torch.bool, device=dev), nfe=torch.zeros(b, dtype=torch.long, device=dev),
            prefix_len=p, mask_id=mask_id,
            embeds=None if embeds is None else embeds.to(dev),
            embed_mask=None if embed_mask is None else embed_mask.to(dev),
            visual=None if visual is None else visual.to(dev),
        )
