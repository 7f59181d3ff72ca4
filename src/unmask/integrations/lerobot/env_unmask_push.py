"""``--env.type=unmask_push``: PushBlock as a lerobot environment (gym id ``unmask/PushBlock-v0``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from lerobot.configs import FeatureType, PolicyFeature
from lerobot.envs.configs import EnvConfig
from lerobot.utils.constants import ACTION, OBS_IMAGE, OBS_STATE

from ...modalities.action.env import ENV_ID, PushBlockConfig


@EnvConfig.register_subclass("unmask_push")
@dataclass
class UnmaskPushEnv(EnvConfig):
    task: str | None = "PushBlock-v0"
    fps: int = 50
    episode_length: int = 400
    obs_type: str = "state"
    image_size: int = 64
    features: dict[str, PolicyFeature] = field(default_factory=lambda: {
        ACTION: PolicyFeature(type=FeatureType.ACTION, shape=(2,)),
        "agent_pos": PolicyFeature(type=FeatureType.STATE, shape=(PushBlockConfig().state_dim,)),
    })
    features_map: dict[str, str] = field(default_factory=lambda: {
        ACTION: ACTION, "agent_pos": OBS_STATE, "pixels": OBS_IMAGE})

    def __post_init__(self) -> None:
        if self.obs_type not in ("state", "pixels_agent_pos"):
            raise ValueError(f"obs_type must be 'state' or 'pixels_agent_pos', got {self.obs_type!r}")
        if self.obs_type == "pixels_agent_pos":
            self.features["pixels"] = PolicyFeature(type=FeatureType.VISUAL,
                                                    shape=(self.image_size, self.image_size, 3))

    @property
    def package_name(self) -> str:
        return "unmask.modalities.action.env"

    @property
    def gym_id(self) -> str:
        return ENV_ID

    @property
    def gym_kwargs(self) -> dict:
        return {"obs_type": self.obs_type, "image_size": self.image_size, "max_episode_steps": self.episode_length}
