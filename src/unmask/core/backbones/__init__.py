"""Backbone families behind one registry: ``BACKBONES.get("llada")``."""

from __future__ import annotations

from typing import Any

from ..registry import Registry
from .base import BackboneFamily, BackboneInfo
from .dream import DreamFamily
from .llada import LLaDAFamily
from .llava import DreamVLFamily, LLaVALLaDAFamily
from .transformer import Transformer, TransformerConfig

BACKBONES: Registry[type[BackboneFamily]] = Registry("backbone")
BACKBONES.register("llada")(LLaDAFamily)
BACKBONES.register("dream")(DreamFamily)
BACKBONES.register("llava_llada")(LLaVALLaDAFamily)
BACKBONES.register("dream_vl")(DreamVLFamily)


def detect_family(raw: dict[str, Any], where: str = "config.json") -> type[BackboneFamily]:
    for name in BACKBONES.names():
        fam = BACKBONES.get(name)
        if fam.matches(raw):
            return fam
    raise ValueError(
        f"{where}: model_type={raw.get('model_type')!r} / architectures={raw.get('architectures')} is not a "
        f"known backbone; known backbones: {', '.join(BACKBONES.names())}"
    )


__all__ = [
    "BACKBONES",
    "BackboneFamily",
    "BackboneInfo",
    "Transformer",
    "TransformerConfig",
    "detect_family",
]
