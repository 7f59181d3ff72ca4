"""lerobot's own ``lerobot-eval`` runs the ``unmask_dvla`` plugin on our environment and on gym-pusht."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

PLUGIN = "unmask.integrations.lerobot"


def _lerobot_eval(tmp_path: Path, *args: str) -> dict:
    out = tmp_path / "eval"
    cmd = [str(Path(sys.executable).parent / "lerobot-eval"), f"--policy.discover_packages_path={PLUGIN}",
           f"--env.discover_packages_path={PLUGIN}", "--policy.type=unmask_dvla", "--policy.device=cpu",
           "--eval.use_async_envs=false", f"--output_dir={out}", *args]
    env = dict(os.environ, MUJOCO_GL="egl", HF_HUB_OFFLINE="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((out / "eval_info.json").read_text())


@pytest.fixture(scope="module")
def small_vla_dir(tmp_path_factory):
    """A policy written by ``unmask train vla`` itself at toy size (6 demonstrations, 30 steps)."""
    from unmask.train.vla import main

    root = tmp_path_factory.mktemp("small-vla")
    return main(None, {"out_dir": str(root / "policy"), "data": str(root / "data"), "episodes": 6,
                       "hidden_size": 32, "num_layers": 2, "num_heads": 2, "intermediate_size": 64, "bins": 64,
                       "steps": 30, "batch_size": 16, "warmup": 5, "save_every": 30, "eval_episodes": 2})


def test_lerobot_eval_runs_unmask_dvla_on_pushblock(small_vla_dir, tmp_path):
    info = _lerobot_eval(tmp_path, "--env.type=unmask_push", f"--policy.bundle={small_vla_dir}",
                         "--eval.n_episodes=2", "--eval.batch_size=2", "--env.episode_length=60")
    metrics = info["per_task"][0]["metrics"]
    assert info["per_task"][0]["task_group"] == "unmask_push"
    assert len(metrics["successes"]) == 2 and len(metrics["sum_rewards"]) == 2
    assert info["overall"]["n_episodes"] == 2


def test_lerobot_policy_interface(small_vla_dir):
    from lerobot.policies.factory import get_policy_class, make_policy_config

    import unmask.integrations.lerobot  # noqa: F401  (importing the plugin registers it, as lerobot's tools do)
    from unmask.modalities.action.env import PushBlockEnv

    cfg = make_policy_config("unmask_dvla", bundle=str(small_vla_dir), device="cpu", n_action_steps=4)
    policy = get_policy_class("unmask_dvla")(cfg)
    obs = torch.from_numpy(np.stack([PushBlockEnv().reset(seed=s)[0]["agent_pos"] for s in (1, 2)]))
    chunk = policy.predict_action_chunk({"observation.state": obs})
    assert chunk.shape == (2, 16, 2)
    first = policy.select_action({"observation.state": obs})
    assert first.shape == (2, 2) and len(policy._queue) == 3  # 4 executed per chunk: 3 still queued
    policy.reset()
    assert not policy._queue
    loss, _ = policy.forward({"observation.state": obs, "action": chunk})
    assert loss.requires_grad and torch.isfinite(loss)
    with pytest.raises(ValueError, match="n_action_steps"):
        make_policy_config("unmask_dvla", bundle=str(small_vla_dir), device="cpu", n_action_steps=20)


def test_lerobot_eval_smoke_episode_on_gym_pusht(tmp_path):
    """gym-pusht: a bundle shaped for its 2-D agent position and pixel-space actions (random weights: a smoke
    episode of the plumbing, not a trained PushT policy)."""
    from unmask.modalities.action.model import ActionSpec, new_policy, save_policy
    from unmask.modalities.action.tokenizer import ActionStats

    stats = ActionStats((0.0, 0.0), (512.0, 512.0), (256.0, 256.0), (128.0, 128.0))
    bundle = save_policy(new_policy(ActionSpec(state_dim=2, action_dim=2, horizon=16, bins=64, obs_tokens=2), stats,
                                    hidden=32, layers=2, heads=2), tmp_path / "pusht-bundle")
    info = _lerobot_eval(tmp_path, "--env.type=pusht", "--env.obs_type=environment_state_agent_pos",
                         "--env.episode_length=40", f"--policy.bundle={bundle}", "--eval.n_episodes=1",
                         "--eval.batch_size=1")
    assert info["per_task"][0]["task_group"] == "pusht"
    assert info["overall"]["n_episodes"] == 1 and len(info["per_task"][0]["metrics"]["sum_rewards"]) == 1
