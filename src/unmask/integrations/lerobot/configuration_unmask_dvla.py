"""``--policy.type=unmask_dvla``: an unmask action-chunk bundle (``unmask train vla``) as a lerobot policy."""

from __future__ import annotations

from dataclasses import dataclass, field

from lerobot.configs import NormalizationMode, PreTrainedConfig
from lerobot.configs.types import FeatureType
from lerobot.optim import AdamWConfig


@PreTrainedConfig.register_subclass("unmask_dvla")
@dataclass
class UnmaskDvlaConfig(PreTrainedConfig):
    bundle: str = "tiny-vla"
    """Shipped policy name or a bundle directory written by ``unmask train vla``."""
    n_action_steps: int = 8
    """Actions of each decoded chunk executed before the next one is decoded."""
    decode_steps: int = 2
    """Forward passes per chunk (the shared core decodes all H x D slots in this many steps)."""
    unmask_policy: str = "low_confidence"
    """Unmasking policy of the core (``unmask policies`` lists them)."""
    chunk_size: int = 16
    """Chunk horizon H of the bundle (used for lerobot's training-time action windows)."""
    # the bundle normalises states and bins actions itself (q01/q99), so lerobot's processors pass values through
    normalization_mapping: dict[str, NormalizationMode] = field(
        default_factory=lambda: {"STATE": NormalizationMode.IDENTITY, "ACTION": NormalizationMode.IDENTITY,
                                 "VISUAL": NormalizationMode.IDENTITY, "ENV": NormalizationMode.IDENTITY})
    optimizer_lr: float = 1e-3
    """Learning rate of lerobot's optimiser preset (fine-tuning through lerobot-train)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.n_action_steps <= 0 or self.decode_steps <= 0:
            raise ValueError(f"n_action_steps and decode_steps must be positive, got {self.n_action_steps}, "
                             f"{self.decode_steps}")
        if self.n_action_steps > self.chunk_size:
            raise ValueError(f"n_action_steps={self.n_action_steps} exceeds chunk_size={self.chunk_size}")

    @property
    def observation_delta_indices(self) -> None:
        return None

    @property
    def action_delta_indices(self) -> list[int]:
        return list(range(self.chunk_size))

    @property
    def reward_delta_indices(self) -> None:
        return None

    def get_optimizer_preset(self) -> AdamWConfig:
        return AdamWConfig(lr=self.optimizer_lr, weight_decay=0.01)

    def get_scheduler_preset(self) -> None:
        return None

    def validate_features(self) -> None:
        if not any(ft.type is FeatureType.STATE for ft in (self.input_features or {}).values()):
            raise ValueError("unmask_dvla needs a state input feature (observation.state); the environment or "
                             "dataset provides none")
