"""``PushBlock``: the project's own 2D manipulation task, with an analytic expert.

A point robot (disc) pushes a disc-shaped block to a goal in the unit square; static discs are obstacles the
robot has to go around while it gets behind the block. Actions are velocity commands ``[-1, 1]^2`` (scaled by
``max_speed`` per step). The observation follows gym-pusht's keys so that lerobot maps it without a rename:
``agent_pos`` is the state vector (robot, block, goal, obstacles), ``pixels`` an optional rendered RGB image.

Registered with gymnasium as ``unmask/PushBlock-v0``.
"""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym
import numpy as np
from gymnasium import spaces

ENV_ID = "unmask/PushBlock-v0"


@dataclass(frozen=True)
class PushBlockConfig:
    """Geometry and dynamics of the task (all lengths in units of the square's side)."""

    n_obstacles: int = 2
    """Static discs the robot must avoid."""
    agent_radius: float = 0.03
    """Radius of the robot."""
    block_radius: float = 0.05
    """Radius of the block."""
    obstacle_radius: float = 0.07
    """Radius of each obstacle."""
    goal_tolerance: float = 0.04
    """Success when the block's centre is this close to the goal."""
    max_speed: float = 0.01
    """Robot displacement per step at full command."""

    def __post_init__(self) -> None:
        if self.n_obstacles < 0:
            raise ValueError(f"n_obstacles must be >= 0, got {self.n_obstacles}")
        for name in ("agent_radius", "block_radius", "obstacle_radius", "goal_tolerance", "max_speed"):
            if not 0 < getattr(self, name) < 0.5:
                raise ValueError(f"{name} must lie in (0, 0.5), got {getattr(self, name)}")

    @property
    def state_dim(self) -> int:
        return 6 + 3 * self.n_obstacles


class PushBlockEnv(gym.Env):
    """Push the block onto the goal. ``obs_type``: ``state`` (``{"agent_pos"}``) or ``pixels_agent_pos``
    (adds ``{"pixels"}``, ``image_size``² RGB)."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 50}
    task = "push the block onto the goal"
    task_description = task  # lerobot-eval asks vector envs for it

    def __init__(self, obs_type: str = "state", render_mode: str | None = "rgb_array", image_size: int = 64,
                 max_episode_steps: int = 400, config: PushBlockConfig | None = None) -> None:
        if obs_type not in ("state", "pixels_agent_pos"):
            raise ValueError(f"obs_type must be 'state' or 'pixels_agent_pos', got {obs_type!r}")
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be 'rgb_array' or None, got {render_mode!r}")
        self.cfg = config or PushBlockConfig()
        self.obs_type, self.render_mode, self.image_size = obs_type, render_mode, image_size
        self.max_episode_steps = max_episode_steps
        obs = {"agent_pos": spaces.Box(0.0, 1.0, (self.cfg.state_dim,), dtype=np.float32)}
        if obs_type == "pixels_agent_pos":
            obs["pixels"] = spaces.Box(0, 255, (image_size, image_size, 3), dtype=np.uint8)
        self.observation_space = spaces.Dict(obs)
        self.action_space = spaces.Box(-1.0, 1.0, (2,), dtype=np.float32)
        self.agent = np.zeros(2)
        self.block = np.zeros(2)
        self.goal = np.zeros(2)
        self.obstacles = np.zeros((self.cfg.n_obstacles, 2))
        self._steps = 0

    # -- episode -------------------------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        c, rng = self.cfg, self.np_random
        margin = c.block_radius + 0.08
        while True:
            self.block = rng.uniform(margin, 1 - margin, 2)
            self.goal = rng.uniform(margin, 1 - margin, 2)
            if np.linalg.norm(self.goal - self.block) > 0.25:
                break
        self.obstacles = np.zeros((c.n_obstacles, 2))
        clear = c.obstacle_radius + c.block_radius + 2 * c.agent_radius + 0.02
        for i in range(c.n_obstacles):
            for _ in range(1000):
                o = rng.uniform(c.obstacle_radius, 1 - c.obstacle_radius, 2)
                if (_segment_distance(o, self.block - 0.15 * _unit(self.goal - self.block), self.goal) > clear
                        and all(np.linalg.norm(o - p) > c.obstacle_radius * 2 + 0.05 for p in self.obstacles[:i])):
                    self.obstacles[i] = o
                    break
            else:  # pragma: no cover - the square always has room for two obstacles off the path
                self.obstacles[i] = (-1.0, -1.0)
        for _ in range(1000):
            self.agent = rng.uniform(c.agent_radius, 1 - c.agent_radius, 2)
            if self._free(self.agent, c.agent_radius + 0.02) and np.linalg.norm(self.agent - self.block) > 0.15:
                break
        self._steps = 0
        return self._obs(), self._info()

    def step(self, action):
        a = np.asarray(action, dtype=np.float64).reshape(-1)
        if a.shape != (2,) or not np.isfinite(a).all():
            raise ValueError(f"PushBlock action must be 2 finite numbers, got {np.asarray(action).tolist()}")
        c = self.cfg
        self.agent = self.agent + np.clip(a, -1.0, 1.0) * c.max_speed
        self.agent = np.clip(self.agent, c.agent_radius, 1 - c.agent_radius)
        for o in self.obstacles:
            self.agent = _push_out(self.agent, o, c.agent_radius + c.obstacle_radius)
        gap = self.block - self.agent
        d = np.linalg.norm(gap)
        if d < c.agent_radius + c.block_radius:  # contact: the block is pushed along the contact normal
            self.block = self.agent + _unit(gap) * (c.agent_radius + c.block_radius)
            self.block = np.clip(self.block, c.block_radius, 1 - c.block_radius)
            for o in self.obstacles:
                self.block = _push_out(self.block, o, c.block_radius + c.obstacle_radius)
            self.agent = _push_out(self.agent, self.block, c.agent_radius + c.block_radius)
        self._steps += 1
        dist = float(np.linalg.norm(self.block - self.goal))
        success = dist < c.goal_tolerance
        truncated = self._steps >= self.max_episode_steps and not success
        return self._obs(), 1.0 if success else -dist, success, truncated, self._info()

    # -- views -----------------------------------------------------------------------------------------------
    def state(self) -> np.ndarray:
        obs = np.concatenate([self.agent, self.block, self.goal])
        extra = np.concatenate([self.obstacles, np.full((len(self.obstacles), 1), self.cfg.obstacle_radius)], 1)
        return np.concatenate([obs, extra.reshape(-1)]).astype(np.float32)

    def set_state(self, state) -> None:
        """Put the world in the state ``state()`` returned (robot, block, goal, obstacles): replanning from a
        recorded frame. The obstacle radii in it must match the config's."""
        s = np.asarray(state, dtype=np.float64).reshape(-1)
        if s.shape != (self.cfg.state_dim,) or not np.isfinite(s).all():
            raise ValueError(f"PushBlock state must be {self.cfg.state_dim} finite numbers, got shape {s.shape}")
        self.agent, self.block, self.goal = s[0:2].copy(), s[2:4].copy(), s[4:6].copy()
        self.obstacles = s[6:].reshape(self.cfg.n_obstacles, 3)[:, :2].copy()
        self._steps = 0

    def _obs(self) -> dict:
        out = {"agent_pos": self.state()}
        if self.obs_type == "pixels_agent_pos":
            out["pixels"] = self.render_image(self.image_size)
        return out

    def _info(self) -> dict:
        dist = float(np.linalg.norm(self.block - self.goal))
        return {"is_success": dist < self.cfg.goal_tolerance, "distance": dist}

    def render(self):
        return self.render_image(self.image_size)

    def render_image(self, size: int) -> np.ndarray:
        """Top-down RGB view: goal green, obstacles grey, block blue, robot red."""
        c = self.cfg
        img = np.full((size, size, 3), 245, dtype=np.uint8)
        yy, xx = (np.mgrid[0:size, 0:size] + 0.5) / size
        for centre, radius, colour in ([(self.goal, c.goal_tolerance + c.block_radius, (150, 220, 150))]
                                       + [(o, c.obstacle_radius, (110, 110, 110)) for o in self.obstacles]
                                       + [(self.block, c.block_radius, (40, 90, 220)),
                                          (self.agent, c.agent_radius, (220, 40, 40))]):
            img[(xx - centre[0]) ** 2 + (yy - centre[1]) ** 2 <= radius**2] = colour
        return img

    def _free(self, p: np.ndarray, radius: float) -> bool:
        return all(np.linalg.norm(p - o) > radius + self.cfg.obstacle_radius for o in self.obstacles)

    # -- expert ------------------------------------------------------------------------------------------------
    def expert_action(self) -> np.ndarray:
        """The analytic expert: get behind the block (going around it and the obstacles), then push along the
        block-to-goal line, steering to keep the contact point on that line."""
        c = self.cfg
        u = _unit(self.goal - self.block)
        contact = self.block - u * (c.agent_radius + c.block_radius)
        to_contact = contact - self.agent
        behind = np.dot(_unit(self.agent - self.block), -u)
        if behind > 0.9 and np.linalg.norm(to_contact) < 0.06:
            # pushing: drive through the block towards the goal, correcting sideways drift of the contact
            push = u + 4.0 * (to_contact - np.dot(to_contact, u) * u) / c.max_speed * 0.1
            slow = min(1.0, np.linalg.norm(self.goal - self.block) / (2 * c.max_speed) + 0.2)
            return _clip_norm(push * slow)
        staging = self.block - u * (c.agent_radius + c.block_radius + 0.04)
        discs = [(self.block, c.block_radius + c.agent_radius + 0.015)] + [
            (o, c.obstacle_radius + c.agent_radius + 0.015) for o in self.obstacles]
        speed = min(1.0, np.linalg.norm(staging - self.agent) / c.max_speed)
        return _clip_norm(_navigate(self.agent, staging, discs) * speed)


def _navigate(p: np.ndarray, target: np.ndarray, discs: list[tuple[np.ndarray, float]]) -> np.ndarray:
    """Unit heading from ``p`` to ``target`` that slides around the discs in the way (tangent following)."""
    heading = _unit(target - p)
    for centre, radius in discs:
        off = p - centre
        d = np.linalg.norm(off)
        if d > radius + 0.06:
            continue
        ahead = np.dot(centre - p, heading) > 0
        normal = off / max(d, 1e-9)
        if ahead and _segment_distance(centre, p, target) < radius:
            tangent = np.array([-normal[1], normal[0]])
            if np.dot(tangent, heading) < 0:
                tangent = -tangent
            heading = _unit(tangent + 0.3 * heading)
        if d < radius:
            heading = _unit(heading + normal * (radius - d) / 0.01)
    return heading


def _unit(v: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(v)
    return v / n if n > 1e-9 else np.zeros_like(v)


def _clip_norm(v: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(v)
    return (v / n if n > 1.0 else v).astype(np.float32)


def _push_out(p: np.ndarray, centre: np.ndarray, min_dist: float) -> np.ndarray:
    off = p - centre
    d = np.linalg.norm(off)
    return centre + off / max(d, 1e-9) * min_dist if d < min_dist else p


def _segment_distance(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    ab = b - a
    t = np.clip(np.dot(p - a, ab) / max(np.dot(ab, ab), 1e-12), 0.0, 1.0)
    return float(np.linalg.norm(p - (a + t * ab)))


def register() -> None:
    """Register ``unmask/PushBlock-v0`` with gymnasium (idempotent)."""
    if ENV_ID not in gym.registry:
        gym.register(id=ENV_ID, entry_point="unmask.modalities.action.env:PushBlockEnv", max_episode_steps=400)


register()
