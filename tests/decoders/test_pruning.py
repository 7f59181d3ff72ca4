"""Visual-token pruning hooks: r=1 is the unpruned run, kept columns keep their positions, caches stay consistent."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import EOS_ID, MASK_ID, PAD_ID, TINY
from unmask.core.backbones import BackboneInfo, TransformerConfig
from unmask.core.backbones.transformer import PruneRequest
from unmask.core.checkpoint import random_backbone
from unmask.decoders import Canvas, ModelRunner, SamplingParams, Segment, build_cache, build_policy, denoise
from unmask.decoders.pruning import PruneConfig, Pruner

WIDE = TransformerConfig(vocab_size=64, hidden_size=32, num_layers=3, num_heads=4, num_kv_heads=2,
                         intermediate_size=48, max_position_embeddings=256)


def _runner(cfg=WIDE):
    info = BackboneInfo(family="llada", mask_id=MASK_ID, eos_id=EOS_ID, pad_id=PAD_ID, shift_logits=False)
    return ModelRunner(random_backbone(cfg, seed=1), info)


def _requests(n_img=12, batch=3):
    gen = torch.Generator().manual_seed(0)
    out = []
    for i in range(batch):
        text = torch.randint(3, 60, (2 + 2 * i,), generator=gen)  # ragged prompts
        out.append([Segment("text", token_ids=text[:1]),
                    Segment("image", embeddings=torch.randn(n_img, WIDE.hidden_size, generator=gen)),
                    Segment("text", token_ids=text[1:])])
    return out


def _decode(runner, spec, cache="none", policy="low_confidence", batch=3, g=16, block=None, steps=8):
    runner.pruner = None if spec is None else Pruner(PruneConfig.parse(spec))
    canvas = Canvas.build(_requests(batch=batch), g, mask_id=MASK_ID, pad_id=PAD_ID)
    params = SamplingParams(gen_length=g, block_length=block, steps=steps, temperature=0.0, seed=0, stop_at_eos=False)
    return denoise(runner, canvas, build_policy(policy), params, eos_id=EOS_ID, cache=build_cache(cache)), canvas


@pytest.mark.parametrize("cache,block", [("none", None), ("prefix", 8), ("dual", 8)])
@pytest.mark.parametrize("schedule", ["first", "late", "progressive"])
@pytest.mark.parametrize("policy", ["low_confidence", "threshold", "credit"])
def test_ratio_one_equals_unpruned(cache, block, schedule, policy):
    runner = _runner()
    ref, _ = _decode(runner, None, cache, policy, block=block)
    got, canvas = _decode(runner, f"fastv:layer=1,ratio=1.0,schedule={schedule},start=1", cache, policy, block=block)
    assert torch.equal(ref.tokens, got.tokens)
    assert canvas.visual_kept is not None and bool(canvas.visual_kept[canvas.visual].all())


def test_pruned_forward_keeps_positions_and_matches_masking():
    """Dropping columns after layer K equals hiding them as keys in the later layers (positions unchanged)."""
    runner = _runner()
    canvas = Canvas.build(_requests(), 8, mask_id=MASK_ID, pad_id=PAD_ID)
    n = canvas.tokens.shape[1]
    x = runner.embed(canvas, None, 0, n)
    keep = torch.ones_like(canvas.key_mask)
    vis = torch.zeros_like(keep)
    vis[:, : canvas.prefix_len] = canvas.visual
    gen = torch.Generator().manual_seed(5)
    for i in range(3):  # drop 7 of the 12 image columns of each row
        cols = vis[i].nonzero().squeeze(1)
        keep[i, cols[torch.randperm(len(cols), generator=gen)[:7]]] = False
    model = runner.model
    with torch.inference_mode():
        req = PruneRequest(1, vis, canvas.key_mask & ~vis, 5, fixed=keep)
        pruned = model(inputs_embeds=x, position_ids=canvas.positions, key_mask=canvas.key_mask, prune=req)
        # reference: full-length stream, dropped columns hidden as keys from layer 2 on
        from unmask.core.backbones.transformer import rope_tables
        cos, sin = rope_tables(canvas.positions, model.cfg.head_dim, model.cfg.rope_theta, x.dtype)
        h = x
        for i, layer in enumerate(model.layers):
            keys = canvas.key_mask if i <= 1 else canvas.key_mask & keep
            h, _ = layer(h, cos, sin, keys[:, None, None, :])
        ref = model.norm(h)
    assert torch.equal(req.kept, keep)
    torch.testing.assert_close(pruned[keep], ref[keep], atol=1e-5, rtol=1e-5)
    assert (pruned[~keep] == 0).all()


def test_fastv_ranks_by_attention_and_vtw_drops_all():
    runner = _runner()
    got, canvas = _decode(runner, "fastv:layer=1,ratio=0.25")
    kept = (canvas.visual_kept & canvas.visual).sum(1)
    assert kept.tolist() == [3, 3, 3]  # round(0.25 * 12)
    assert runner.pruner.stats["pruned_forwards"] == runner.pruner.stats["forwards"] > 0
    assert not (got.tokens == MASK_ID).any()
    _, canvas = _decode(runner, "vtw:layer=1")
    assert not (canvas.visual_kept & canvas.visual).any()


def test_divprune_keeps_one_of_each_group_of_copies():
    """Max-min diversity: of 4 groups of 4 identical rows, 4 kept columns are one per group, whatever FastV's
    attention would say; in a decode it keeps the ratio, and at ratio 1 it is the unpruned run."""
    from unmask.core.backbones.transformer import _max_min_diverse

    gen = torch.Generator().manual_seed(3)
    centres = torch.randn(4, 16, generator=gen)
    h = centres.repeat_interleave(4, dim=0) + 1e-4 * torch.randn(16, 16, generator=gen)
    candidates = torch.ones(18, dtype=torch.bool)
    candidates[[0, 17]] = False  # columns 1..16 are the image
    cols = _max_min_diverse(torch.cat([torch.zeros(1, 16), h, torch.zeros(1, 16)]), candidates, 4)
    assert sorted(((cols - 1) // 4).tolist()) == [0, 1, 2, 3] and bool(candidates[cols].all())
    assert len(_max_min_diverse(h, torch.ones(16, dtype=torch.bool), 40)) == 16
    runner = _runner()
    got, canvas = _decode(runner, "divprune:layer=1,ratio=0.25")
    assert (canvas.visual_kept & canvas.visual).sum(1).tolist() == [3, 3, 3] and not (got.tokens == MASK_ID).any()
    got, _ = _decode(runner, "divprune:layer=0,ratio=1.0", cache="dual", block=8)
    ref, _ = _decode(runner, None, cache="dual", block=8)
    assert torch.equal(ref.tokens, got.tokens)
    assert PruneConfig.parse("divprune:layer=0,ratio=0.5").name == "divprune:layer=0,ratio=0.5,schedule=first"


def test_late_schedule_prunes_only_from_start():
    runner = _runner()
    _decode(runner, "fastv:layer=1,ratio=0.5,schedule=late,start=3", batch=1)
    st = runner.pruner.stats
    assert st["forwards"] == 8 and st["pruned_forwards"] == 5
    assert st["visual_tokens"] == pytest.approx(3 * 12 + 5 * 6)


@pytest.mark.parametrize("cache,block", [("prefix", 8), ("dual", 8)])
def test_pruning_composes_with_kv_caches(cache, block):
    """Under a cache the ranking happens at each refresh; cached steps never see dropped columns. With a cache
    that refreshes every step (one-slot blocks) the result equals the uncached pruned run."""
    runner = _runner()
    ref, _ = _decode(runner, "fastv:layer=1,ratio=0.5", "none", block=1, g=6, steps=6)
    got, _ = _decode(runner, "fastv:layer=1,ratio=0.5", cache, block=1, g=6, steps=6)
    assert torch.equal(ref.tokens, got.tokens)
    res, canvas = _decode(runner, "fastv:layer=1,ratio=0.5", cache, block=block)
    assert not (res.tokens == MASK_ID).any() and (canvas.visual_kept & canvas.visual).sum(1).tolist() == [6, 6, 6]


def test_feature_cache_and_bad_specs_are_refused():
    runner = _runner()
    with pytest.raises(ValueError, match="feature cache"):
        _decode(runner, "fastv:layer=1,ratio=0.5", "feature")
    for bad, msg in (("fastv:ratio=2", "ratio"), ("topk", "unknown"), ("fastv:layer", "key=value"),
                     ("fastv:schedule=sometimes", "schedule")):
        with pytest.raises(ValueError, match=msg):
            PruneConfig.parse(bad)
    assert PruneConfig.parse("none") is None


def test_text_only_requests_are_untouched():
    runner = _runner(TINY)
    runner.pruner = Pruner(PruneConfig())
    canvas = Canvas.build([[Segment("text", token_ids=torch.tensor([5, 6, 7]))]], 4, mask_id=MASK_ID, pad_id=PAD_ID)
    assert canvas.visual is None and runner.pruner.request(canvas, None, 0, 7) is None


@pytest.mark.parametrize("cache", ["prefix", "dual"])
def test_cached_step_hides_dropped_columns(cache):
    """On an unchanged canvas a cached step gives the refresh's logits: its past keys of dropped columns are hidden
    in the layers after K exactly as the pruned full forward never saw them."""
    runner = _runner()
    runner.pruner = Pruner(PruneConfig.parse("fastv:layer=1,ratio=0.25"))
    canvas = Canvas.build(_requests(), 16, mask_id=MASK_ID, pad_id=PAD_ID)
    c = build_cache(cache)
    c.reset(canvas)
    first = c.logits(runner, canvas, None, 0, 8, refresh=True)
    canvas.nfe += 1
    again = c.logits(runner, canvas, None, 0, 8, refresh=False)
    torch.testing.assert_close(again, first, atol=1e-4, rtol=1e-4)
    assert c.stats["positions_computed"] < 2 * canvas.batch_size * canvas.tokens.shape[1]
