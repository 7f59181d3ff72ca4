from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from unmask.modalities.action.model import ActionSpec, new_policy
from unmask.modalities.action.tokenizer import ActionStats
from unmask.train.vla import VlaTrainConfig, chunk_loss


def _policy():
    stats = ActionStats((-1.0, -1.0), (1.0, 1.0), tuple([0.0] * 12), tuple([1.0] * 12))
    return new_policy(ActionSpec(state_dim=12, action_dim=2, horizon=4, bins=32, obs_tokens=2), stats, hidden=32,
                      layers=2, heads=2)


def test_chunk_loss_ignores_padding():
    policy = _policy()
    states, chunks = torch.randn(6, 12), torch.rand(6, 4, 2) * 2 - 1
    pad = torch.zeros(6, 4, dtype=torch.bool)
    pad[:, 2:] = True
    other = chunks.clone()
    other[:, 2:] = -chunks[:, 2:]  # different filler past the episode's end
    a = chunk_loss(policy, states, chunks, torch.Generator().manual_seed(0), pad=pad)
    b = chunk_loss(policy, states, other, torch.Generator().manual_seed(0), pad=pad)
    c = chunk_loss(policy, states, other, torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and not torch.equal(b, c)
    a.backward()
    assert policy.encoder.net[0].weight.grad is not None  # the observation encoder trains through the loss


def test_recipe_rejects_bad_values():
    with pytest.raises(ValueError, match="t_min"):
        VlaTrainConfig(t_min=1.5)


def test_chunk_mask_prefix_rows_show_their_first_steps():
    from unmask.train.vla import chunk_mask

    m = chunk_mask(2000, horizon=16, action_dim=2, gen=torch.Generator().manual_seed(0), prefix_prob=1.0)
    assert m.shape == (2000, 32) and bool(m.any(1).all())
    first_hidden = m.int().argmax(1)  # every row shows 1..8 whole steps, then must predict the next slot
    assert int(first_hidden.min()) >= 2 and int(first_hidden.max()) <= 16
    assert bool((first_hidden % 2 == 0).all())
    plain = chunk_mask(2000, horizon=16, action_dim=2, gen=torch.Generator().manual_seed(0))
    assert float(plain[:, 0].float().mean()) > 0.4  # without prefix rows the first slot is often hidden


def test_chunk_mask_given_prefix_per_row():
    from unmask.train.vla import chunk_mask

    given = torch.tensor([0, 3, 7] * 400)
    m = chunk_mask(1200, horizon=8, action_dim=2, gen=torch.Generator().manual_seed(0), given=given)
    assert not m[given == 3, :6].any() and bool(m[given == 3, 6].all())
    assert not m[given == 7, :14].any() and bool(m[given == 7, 14].all())
    assert float(m[given == 0, 0].float().mean()) > 0.4  # rows given nothing are masked as usual


def test_replan_rows_train_the_policy(tmp_path):
    """A few steps with replanned rows run end to end from a written dataset and save a loadable bundle."""
    from unmask.modalities.action.data import write_dataset
    from unmask.modalities.action.model import load_policy
    from unmask.train.vla import train

    data = write_dataset(tmp_path / "robot", episodes=3, progress=False)
    cfg = VlaTrainConfig(out_dir=str(tmp_path / "run"), data=str(data), hidden_size=32, num_layers=1, num_heads=2,
                         intermediate_size=64, horizon=8, bins=32, obs_tokens=2, steps=3, batch_size=8,
                         save_every=3, eval_episodes=0, replan_share=0.5, replan_delay=5, replan_rows=40)
    policy = load_policy(train(cfg))
    assert policy.spec.horizon == 8
    chunk, _ = policy.predict_chunk(np.full(12, 0.5, np.float32), prefix_actions=np.zeros((1, 3, 2), np.float32))
    assert chunk.shape == (1, 8, 2)
    with pytest.raises(ValueError, match="replan_share"):
        VlaTrainConfig(replan_share=1.5)
    with pytest.raises(ValueError, match="set one of them to 0"):
        VlaTrainConfig(replan_share=0.5, prefix_prob=0.5)

    # the prefix: the frame's own demonstration, or the tail of a plan made a few frames earlier
    from unmask.modalities.action.data import read_episodes
    from unmask.train.vla import replanned

    eps = read_episodes(data)
    states, chunks, pad, d = replanned(eps, cfg, 8)
    rows = {tuple(s): i for i, s in enumerate(eps.states)}
    frame = np.array([rows[tuple(s)] for s in states])
    own, _ = eps.chunks(frame, 8)  # each row's own demonstrated actions
    shown = d > 0
    assert shown.sum() > 20 and all(np.array_equal(chunks[i, : d[i]], own[i, : d[i]]) for i in np.flatnonzero(shown))
    stale = replace(cfg, replan_stale=4)
    _, chunks_s, _, d_s = replanned(eps, stale, 8)
    assert np.array_equal(d_s, d)
    differs = [not np.array_equal(chunks_s[i, : d[i]], own[i, : d[i]]) for i in np.flatnonzero(shown)]
    assert np.mean(differs) > 0.8
