from __future__ import annotations

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
    import pytest

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
