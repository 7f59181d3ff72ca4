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
