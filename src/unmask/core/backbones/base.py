"""Backbone families: how a real checkpoint layout maps onto the shared ``Transformer``."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, ClassVar

from .transformer import TransformerConfig


@dataclass(frozen=True)
class BackboneInfo:
    """Values read from a checkpoint at load time; never written back into a config."""

    family: str
    """Registry name of the backbone family (``llada``, ``dream``)."""
    mask_id: int
    """Token id of ``[MASK]``."""
    eos_id: int | None
    """End-of-sequence id, when the checkpoint names one."""
    pad_id: int | None
    """Padding id, when the checkpoint names one."""
    shift_logits: bool
    """True when position i is predicted from the output at i-1 (Dream)."""
    block_size: int | None = None
    """None: bidirectional attention. Otherwise block-causal (block-diffusion models): canvas slots see
    the prompt and their own and earlier blocks of this size; the prompt sees only itself."""


class BackboneFamily:
    """Translate a family's ``config.json`` and parameter names to and from the shared module."""

    name: ClassVar[str]
    shift_logits: ClassVar[bool] = False
    default_mask_id: ClassVar[int]
    # (internal regex, checkpoint template) pairs, applied in order; ``{0}`` is the layer index.
    key_rules: ClassVar[list[tuple[str, str]]]

    @classmethod
    def to_checkpoint_key(cls, internal: str) -> str:
        for pattern, template in cls.key_rules:
            m = re.fullmatch(pattern, internal)
            if m:
                return template.format(*m.groups())
        raise KeyError(f"{cls.name}: no checkpoint name for parameter {internal!r}")

    @classmethod
    def transformer_config(cls, raw: dict[str, Any]) -> TransformerConfig:
        raise NotImplementedError

    @classmethod
    def hf_config(cls, cfg: TransformerConfig, info: BackboneInfo) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def info(cls, raw: dict[str, Any]) -> BackboneInfo:
        return BackboneInfo(
            family=cls.name,
            mask_id=int(raw.get("mask_token_id", cls.default_mask_id)),
            eos_id=raw.get("eos_token_id"),
            pad_id=raw.get("pad_token_id"),
            shift_logits=cls.shift_logits,
            block_size=raw.get("block_causal_size"),
        )

    @classmethod
    def matches(cls, raw: dict[str, Any]) -> bool:
        raise NotImplementedError


def require(raw: dict[str, Any], key: str, family: str) -> Any:
    if key not in raw:
        raise ValueError(f"{family} config.json is missing required key {key!r}")
    return raw[key]
