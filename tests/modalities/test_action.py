from __future__ import annotations

import numpy as np
import pytest
import torch

from unmask.modalities.action.env import ENV_ID, PushBlockEnv
from unmask.modalities.action.model import (
    FIRST_BIN,
    ActionSpec,
    ObservationError,
    load_policy,
    new_policy,
    save_policy,
)
from unmask.modalities.action.tokenizer import ActionStats, ActionTokenizer


def _stats(state_dim: int = 12) -> ActionStats:
    return ActionStats((-1.0, -0.5), (1.0, 0.5), tuple([0.5] * state_dim), tuple([0.3] * state_dim))


@pytest.fixture(scope="module")
def small_policy():
    return new_policy(ActionSpec(state_dim=12, action_dim=2, horizon=8, bins=64, obs_tokens=2), _stats(),
                      hidden=32, layers=2, heads=2, seed=0)


def test_binning_round_trip_within_half_a_bin():
    tok = ActionTokenizer(_stats(), bins=256, first_token=FIRST_BIN)
    a = torch.rand(50, 8, 2) * torch.tensor([2.0, 1.0]) - torch.tensor([1.0, 0.5])  # inside q01..q99
    ids = tok.encode(a)
    assert ids.shape == (50, 16) and int(ids.min()) >= FIRST_BIN and int(ids.max()) < FIRST_BIN + 256
    back = tok.decode(ids)
    assert back.shape == a.shape
    assert bool(((back - a).abs() <= tok.resolution / 2 + 1e-6).all())
    # outside the bounds: clipped to the edge bins
    edge = tok.decode(tok.encode(torch.tensor([[[5.0, -5.0]]])))
    assert torch.allclose(edge, torch.tensor([[[1.0, -0.5]]]), atol=float(tok.resolution.max()))


def test_tokenizer_errors_and_stats():
    tok = ActionTokenizer(_stats(), bins=16, first_token=FIRST_BIN)
    with pytest.raises(ValueError, match="outside the action bins"):
        tok.decode(torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="3 dimensions"):
        tok.encode(torch.zeros(1, 4, 3))
    with pytest.raises(ValueError, match="must not exceed"):
        ActionStats((1.0,), (0.0,))
    rng = np.random.default_rng(0)
    acts = rng.uniform(-2, 2, (1000, 2))
    st = ActionStats.fit(acts, rng.normal(size=(1000, 3)))
    assert st.q01[0] == pytest.approx(np.quantile(acts[:, 0], 0.01))
    assert ActionStats.from_dict(st.to_dict()) == st


def test_env_expert_solves_held_out_seeds_and_registers():
    import gymnasium as gym

    env = gym.make(ENV_ID)
    assert env.observation_space["agent_pos"].shape == (12,)
    wins = 0
    for seed in range(100_000, 100_020):
        env.reset(seed=seed)
        for _ in range(300):
            _, _, term, trunc, info = env.step(env.unwrapped.expert_action())
            if term or trunc:
                break
        wins += bool(info["is_success"])
    assert wins == 20
    a = PushBlockEnv()
    o1, _ = a.reset(seed=3)
    o2, _ = PushBlockEnv().reset(seed=3)
    assert np.array_equal(o1["agent_pos"], o2["agent_pos"])
    with pytest.raises(ValueError, match="2 finite numbers"):
        a.step([np.nan, 0.0])
    px = PushBlockEnv(obs_type="pixels_agent_pos", image_size=48).reset(seed=1)[0]["pixels"]
    assert px.shape == (48, 48, 3) and px.dtype == np.uint8 and len(np.unique(px.reshape(-1, 3), axis=0)) >= 4


@pytest.mark.parametrize("steps", [1, 2, 4])
def test_chunk_decoding_respects_inpainted_slots(small_policy, steps):
    states = np.stack([PushBlockEnv().reset(seed=s)[0]["agent_pos"] for s in range(3)])
    given = torch.tensor([[[0.9, -0.4], [0.1, 0.2], [-0.7, 0.45]]]).repeat(3, 1, 1)  # [B, d=3, D]
    actions, info = small_policy.predict_chunk(states, prefix_actions=given, steps=steps)
    assert actions.shape == (3, 8, 2)
    assert info["nfe"] == steps
    tok = small_policy.tokenizer
    assert torch.allclose(actions[:, :3], tok.decode(tok.encode(given)), atol=1e-6)
    free, _ = small_policy.predict_chunk(states, steps=steps)
    assert free.shape == (3, 8, 2) and bool(torch.isfinite(free).all())
    with pytest.raises(ValueError, match=r"0 < d < 8"):
        small_policy.predict_chunk(states, prefix_actions=torch.zeros(3, 8, 2))


def test_bad_observations_get_clear_errors(small_policy):
    good = PushBlockEnv().reset(seed=0)[0]["agent_pos"]
    bad = good.copy()
    bad[4] = np.nan
    with pytest.raises(ObservationError, match="dimension 4"):
        small_policy.predict_chunk(bad)
    with pytest.raises(ObservationError, match=r"shape \(1, 5\)"):
        small_policy.predict_chunk(good[:5])
    with pytest.raises(ObservationError, match="missing"):
        small_policy.predict_chunk(None)
    with pytest.raises(ValueError, match="NaN or inf"):
        small_policy.predict_chunk(good, prefix_actions=torch.full((1, 2, 2), float("inf")))


def test_bundle_round_trip(small_policy, tmp_path):
    save_policy(small_policy, tmp_path / "p")
    loaded = load_policy(tmp_path / "p")
    assert loaded.spec == small_policy.spec and loaded.stats == small_policy.stats
    s = np.stack([PushBlockEnv().reset(seed=s)[0]["agent_pos"] for s in range(2)])
    a, _ = small_policy.predict_chunk(s)
    b, _ = loaded.predict_chunk(s)
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="not an action-policy bundle"):
        load_policy("tiny-text")


def test_expert_dataset_is_a_lerobot_dataset(tmp_path):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    from unmask.modalities.action.data import read_episodes, write_dataset

    root = write_dataset(tmp_path / "robot", episodes=4, progress=False)
    ds = LeRobotDataset("unmask/pushblock", root=root)
    assert ds.num_episodes == 4 and ds.fps == 50
    item = ds[0]
    assert item["observation.state"].shape == (12,) and item["action"].shape == (2,)
    eps = read_episodes(root)
    assert len(eps.actions) == ds.num_frames and sorted(set(eps.episode.tolist())) == [0, 1, 2, 3]
    last = np.flatnonzero(eps.episode == 0)[-1]
    chunk, pad = eps.chunks(np.array([last - 1]), 4)  # two real steps, then padding repeating the last action
    assert np.allclose(chunk[0, :2], eps.actions[last - 1 : last + 1])
    assert np.allclose(chunk[0, 2:], eps.actions[last]) and pad[0].tolist() == [False, False, True, True]
    with pytest.raises(FileNotFoundError, match="unmask data robot"):
        read_episodes(tmp_path / "nothing")


def test_replanned_chunks_run_the_prefix_then_the_noise_free_expert():
    from unmask.modalities.action.data import expert_episode, replan_chunks

    states, actions, _, ok = expert_episode(5)
    states, actions = np.stack(states), np.stack(actions)
    assert ok
    rows = np.array([0, 10, len(states) - 3])  # the last row reaches the goal inside the chunk
    prefixes = np.stack([np.resize(actions[i : i + 8], (8, 2)) for i in rows])
    lengths = np.array([0, 5, 2])
    chunks, pad = replan_chunks(states[rows], prefixes, lengths, horizon=8)
    assert chunks.shape == (3, 8, 2) and pad.shape == (3, 8)
    assert np.array_equal(chunks[1, :5], prefixes[1, :5]) and np.array_equal(chunks[2, :2], prefixes[2, :2])
    # by hand: restore the frame, run the prefix, then the expert acting on the true state
    env = PushBlockEnv()
    env.set_state(states[10])
    assert np.array_equal(env.state(), states[10])
    for k in range(8):
        a = prefixes[1, k] if k < 5 else env.expert_action()
        assert np.allclose(chunks[1, k], a)
        env.step(a)
    assert not pad[:2].any()
    assert pad[2, -1] and not pad[2, 0]  # the block reached the goal: the steps after it are padding
    # the demonstration's own later actions were taken along noisy executions; the replanned ones differ
    assert not np.allclose(chunks[1, 5:], actions[15:18])
    with pytest.raises(ValueError, match="12 finite numbers"):
        env.set_state(np.zeros(5))
