"""The diffusion decoding core: Canvas, one loop, policies. Imports torch only."""

from .caches import CACHES, Cache, build_cache
from .canvas import Canvas, Segment
from .loop import DecodeResult, SamplingParams, denoise
from .policies import POLICIES, Policy, StepContext, build_policy
from .runner import ModelRunner

__all__ = [
    "CACHES",
    "Cache",
    "build_cache",
    "POLICIES",
    "Canvas",
    "DecodeResult",
    "ModelRunner",
    "Policy",
    "SamplingParams",
    "Segment",
    "StepContext",
    "build_policy",
    "denoise",
]
