"""Scripted-expert demonstrations of PushBlock written as a LeRobotDataset (lerobot 0.6.1 format, local disk).

The executed action carries Gaussian noise while the recorded action is the expert's clean one (DART-style), so
the demonstrations show how to recover from small drifts, which a tiny behaviour-cloned policy needs.
Training episodes use seeds ``seed .. seed+n-1``; evaluation uses ``EVAL_SEED`` onwards, never seen here.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .env import PushBlockEnv

REPO_ID = "unmask/pushblock"
FPS = 50
EVAL_SEED = 100_000
"""First seed of held-out evaluation episodes (lerobot-eval ``--seed``, ``unmask bench vla``)."""


@dataclass
class Episodes:
    """Flat arrays of a dataset: ``states`` ``[N, S]``, ``actions`` ``[N, D]``, ``episode`` ``[N]`` (frames of one
    episode are contiguous and in order)."""

    states: np.ndarray
    actions: np.ndarray
    episode: np.ndarray

    def chunks(self, index: np.ndarray, horizon: int) -> tuple[np.ndarray, np.ndarray]:
        """``[len(index), H, D]`` action chunks starting at frames ``index`` and their ``[len(index), H]`` padding
        mask: past an episode's end the last action is repeated and marked as padding (lerobot's ``action_is_pad``),
        so that training can leave it out instead of teaching the policy to stop short of the goal."""
        out = np.zeros((len(index), horizon, self.actions.shape[1]), dtype=np.float32)
        pad = np.zeros((len(index), horizon), dtype=bool)
        n = len(self.actions)
        last = index.copy()
        for k in range(horizon):
            j = np.minimum(index + k, n - 1)
            same = (index + k < n) & (self.episode[j] == self.episode[index])
            last = np.where(same, j, last)
            out[:, k] = self.actions[last]
            pad[:, k] = ~same
        return out, pad


def expert_episode(seed: int, noise: float = 0.2, max_steps: int = 400, images: bool = False):
    """One demonstration: lists of states, clean expert actions, (images), and whether it succeeded."""
    env = PushBlockEnv(obs_type="pixels_agent_pos" if images else "state", max_episode_steps=max_steps)
    obs, _ = env.reset(seed=seed)
    rng = np.random.default_rng(seed + 7_919)
    states, actions, frames = [], [], []
    success = False
    for _ in range(max_steps):
        a = env.expert_action()
        states.append(obs["agent_pos"])
        actions.append(a.astype(np.float32))
        if images:
            frames.append(obs["pixels"])
        obs, _, success, truncated, _ = env.step(np.clip(a + rng.normal(0, noise, 2), -1, 1))
        if success or truncated:
            break
    return states, actions, frames, bool(success)


def replan_chunks(states: np.ndarray, prefixes: np.ndarray, lengths: np.ndarray, horizon: int,
                  progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Chunks as the robot would live them behind an inference delay: for row i the world is put in
    ``states[i]``, its first ``lengths[i]`` actions of ``prefixes[i]`` (``[N, >=d, D]``) run exactly, and from there
    the expert acts noise-free on the true state for the rest of the horizon. Returns ``[N, H, D]`` chunks (the
    prefix, then the expert's actions) and their ``[N, H]`` padding mask (the steps after the block reached the goal).

    The demonstrations label step k of a chunk with the expert's action at a state reached through k noisy actions
    the chunk does not show; here every step follows from the frame's state and the prefix alone, which is what a
    policy asked to decode around the actions that run during its own inference has to predict."""
    n = len(states)
    env = PushBlockEnv()
    chunks = np.zeros((n, horizon, prefixes.shape[-1]), dtype=np.float32)
    pad = np.zeros((n, horizon), dtype=bool)
    rows = range(n)
    if progress:
        from tqdm import tqdm

        rows = tqdm(rows, desc="replan chunks", mininterval=5)
    for i in rows:
        env.set_state(states[i])
        done = False
        for k in range(horizon):
            if done:
                chunks[i, k], pad[i, k] = chunks[i, k - 1], True
                continue
            a = prefixes[i, k] if k < lengths[i] else env.expert_action()
            chunks[i, k] = a
            done = env.step(a)[2]
    return chunks, pad


def write_dataset(root: str | Path, episodes: int = 500, seed: int = 0, images: bool = False, noise: float = 0.2,
                  progress: bool = True) -> Path:
    """Write ``episodes`` successful expert demonstrations to ``root`` (replaced if present)."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    root = Path(root)
    if root.exists():
        shutil.rmtree(root)
    state_dim = PushBlockEnv().cfg.state_dim
    features = {
        "observation.state": {"dtype": "float32", "shape": (state_dim,), "names": None},
        "action": {"dtype": "float32", "shape": (2,), "names": ["vx", "vy"]},
    }
    if images:
        features["observation.image"] = {"dtype": "image", "shape": (64, 64, 3),
                                         "names": ["height", "width", "channel"]}
    ds = LeRobotDataset.create(REPO_ID, fps=FPS, features=features, root=root, robot_type="point_pusher",
                               use_videos=False)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=episodes, desc="expert episodes")
    written, s = 0, seed
    while written < episodes:
        states, actions, frames, ok = expert_episode(s, noise, images=images)
        s += 1
        if not ok:  # only successful demonstrations are kept
            continue
        for i in range(len(states)):
            frame = {"observation.state": states[i], "action": actions[i], "task": "push the block onto the goal"}
            if images:
                frame["observation.image"] = frames[i]
            ds.add_frame(frame)
        ds.save_episode()
        written += 1
        if bar is not None:
            bar.update(1)
    ds.finalize()
    if bar is not None:
        bar.close()
    return root


def read_episodes(root: str | Path) -> Episodes:
    """The dataset's states, actions and episode indices as arrays (lerobot's own reader)."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    root = Path(root)
    if not (root / "meta" / "info.json").is_file():
        raise FileNotFoundError(f"{root} is not a LeRobotDataset (no meta/info.json); write it with "
                                f"`unmask data robot --out {root}`")
    ds = LeRobotDataset(REPO_ID, root=root)
    hf = ds.hf_dataset.with_format("numpy")
    return Episodes(np.stack(hf["observation.state"]).astype(np.float32), np.stack(hf["action"]).astype(np.float32),
                    np.asarray(hf["episode_index"]).astype(np.int64))
