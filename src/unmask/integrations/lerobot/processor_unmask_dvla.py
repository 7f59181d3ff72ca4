"""Pre/post-processing of ``unmask_dvla``: lerobot's default pipeline (batch dim, device), with identity
normalisation: the bundle normalises states and bins actions with its own statistics."""

from __future__ import annotations

from typing import Any

import torch
from lerobot.processor import PolicyAction, PolicyProcessorPipeline, make_default_pre_post_processors

from .configuration_unmask_dvla import UnmaskDvlaConfig


def make_unmask_dvla_pre_post_processors(
    config: UnmaskDvlaConfig, dataset_stats: dict[str, dict[str, torch.Tensor]] | None = None
) -> tuple[PolicyProcessorPipeline[dict[str, Any], dict[str, Any]],
           PolicyProcessorPipeline[PolicyAction, PolicyAction]]:
    return make_default_pre_post_processors(config, dataset_stats, normalizer_device=config.device)
