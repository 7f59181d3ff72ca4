"""Contract tests over every registered policy, and the loop's invariants."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import MASK_ID
from unmask.decoders import POLICIES, Canvas, SamplingParams, Segment, StepContext, build_policy, denoise
from unmask.decoders.loop import _finish_at_eos
from unmask.decoders.sampling import select_top_k


def _prompts():
    return [[Segment("text", token_ids=torch.tensor(p))] for p in ([5, 6, 7, 8], [9, 10], [11, 12, 13])]


@pytest.mark.parametrize("name", POLICIES.names())
def test_one_step_contract(name):
    policy = build_policy(name)
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 8, 20, generator=gen)
    eligible = torch.rand(3, 8, generator=gen) < 0.6
    eligible[:, 0] = True
    for steps_left in (1, 3):
        x0, commit = policy.step(logits, StepContext(eligible, steps_left, 0.0, gen))
        assert x0.shape == (3, 8) and commit.dtype == torch.bool
        assert not (commit & ~eligible).any(), "committed a slot that was not eligible"
        assert (commit.sum(1) >= 1).all(), "every row must make progress"
        if steps_left == 1 and policy.follows_budget:
            assert torch.equal(commit, eligible), "the last step of a budget commits everything left"


@pytest.mark.parametrize("name", POLICIES.names())
@pytest.mark.parametrize("block_length", [None, 4])
def test_loop_fills_canvas_and_keeps_fixed_slots(tiny_runner, name, block_length):
    g = 12
    init = torch.full((g,), MASK_ID)
    init[[2, 7]] = torch.tensor([40, 41])
    fixed = torch.zeros(g, dtype=torch.bool)
    fixed[[2, 7]] = True
    canvas = Canvas.build(
        _prompts(), g, mask_id=MASK_ID, pad_id=0, init_tokens=[init, None, init], fixed_masks=[fixed, None, fixed]
    )
    params = SamplingParams(
        gen_length=g, block_length=block_length, steps=6, temperature=0.7, seed=3, stop_at_eos=False
    )
    policy = build_policy(name)
    res = denoise(tiny_runner, canvas, policy, params, eos_id=None)
    assert not (res.tokens == MASK_ID).any()
    assert torch.equal(res.tokens[[0, 2]][:, [2, 7]], torch.tensor([[40, 41], [40, 41]]))
    assert (res.commit_step[1] > 0).all() and (res.commit_step[0, [2, 7]] == 0).all()
    if policy.follows_budget:
        assert res.nfe.max() <= 6, "budgeted policies finish within the step budget"
    if name in ("low_confidence", "random", "margin", "entropy"):
        assert res.nfe.tolist() == [6, 6, 6], "fixed-step policies use exactly the step budget"
    # semi-autoregressive blocks: a later block is never committed before an earlier one finishes
    # (adaptive_block may pull confident later slots forward; the random model is never that confident)
    if block_length:
        free = res.commit_step[1].view(-1, block_length)
        assert (free[:-1].max(1).values < free[1:].min(1).values).all()


def test_low_confidence_spreads_tokens_evenly(tiny_runner):
    canvas = Canvas.build(_prompts()[:1], 10, mask_id=MASK_ID, pad_id=0)
    res = denoise(
        tiny_runner, canvas, build_policy("low_confidence"), SamplingParams(gen_length=10, steps=4), eos_id=None
    )
    per_step = torch.bincount(res.commit_step[0])[1:].tolist()
    assert per_step == [3, 3, 2, 2]  # LLaDA's get_num_transfer_tokens schedule


def test_threshold_commits_above_tau_and_at_least_one():
    policy = build_policy("threshold", {"threshold": 0.5})
    logits = torch.full((2, 3, 4), -10.0)
    logits[0, :, 0] = 10.0  # row 0: all confident
    logits[1, 0, 1] = 1.0  # row 1: nothing above tau, one slot slightly ahead
    elig = torch.ones(2, 3, dtype=torch.bool)
    x0, commit = policy.step(logits, StepContext(elig, 3, 0.0))
    assert commit[0].all() and commit[1].tolist() == [True, False, False]


def test_select_top_k_per_row():
    score = torch.tensor([[0.1, 0.9, 0.5, 0.7], [0.3, 0.2, 0.8, 0.1]])
    elig = torch.tensor([[True, True, False, True], [True, True, True, True]])
    got = select_top_k(score, elig, torch.tensor([2, 1]))
    assert got.tolist() == [[False, True, False, True], [False, False, True, False]]


def test_eos_stops_row_and_fills(tiny_runner):
    """A row that commits EOS with nothing masked before it stops costing forwards."""
    eos = 1
    init = torch.full((8,), MASK_ID)
    init[:3] = torch.tensor([20, 21, eos])
    canvas = Canvas.build(_prompts()[:2], 8, mask_id=MASK_ID, pad_id=0, init_tokens=[init, None])
    res = denoise(tiny_runner, canvas, build_policy("low_confidence"), SamplingParams(gen_length=8), eos_id=eos)
    assert res.nfe[0] == 0 and res.tokens[0, 3:].eq(eos).all()
    assert res.nfe[1] >= 1 and not (res.tokens == MASK_ID).any()


def test_finish_at_eos_only_when_nothing_open_before_eos():
    eos, m = 1, MASK_ID
    rows = [[20, m, eos, m], [20, eos, m, m], [20, m, m, m], [eos, 21, m, eos]]
    canvas = Canvas.build(_prompts()[:1] * 4, 4, mask_id=m, pad_id=0, init_tokens=[torch.tensor(r) for r in rows])
    _finish_at_eos(canvas, eos, canvas.masked())
    assert canvas.done.tolist() == [False, True, False, True]
    assert canvas.canvas.tolist() == [rows[0], [20, eos, eos, eos], rows[2], [eos, 21, eos, eos]]


def test_embedding_segments_replace_token_embeddings(tiny_runner):
    emb = tiny_runner.model.embed(torch.tensor([5, 6, 7]))
    a = Canvas.build([[Segment("text", token_ids=torch.tensor([5, 6, 7]))]], 4, mask_id=MASK_ID, pad_id=0)
    b = Canvas.build([[Segment("image", embeddings=emb.detach())]], 4, mask_id=MASK_ID, pad_id=0)
    assert torch.allclose(tiny_runner.forward(a), tiny_runner.forward(b), atol=1e-5)


def test_bad_requests():
    with pytest.raises(ValueError, match="exceeds the model's context of 16"):
        Canvas.build(_prompts(), 14, mask_id=MASK_ID, pad_id=0, max_length=16)
    with pytest.raises(ValueError, match="batch is empty"):
        Canvas.build([], 4, mask_id=MASK_ID, pad_id=0)
    with pytest.raises(ValueError, match="exactly one of"):
        Segment("text")
    fix0 = [None, torch.tensor([True, False, False, False])]
    Canvas.build(_prompts()[:2], 4, mask_id=MASK_ID, pad_id=0, init_tokens=[None, torch.tensor([5, 6, 7, 8])],
                 fixed_masks=fix0)  # fine: the fixed slot holds token 5
    with pytest.raises(ValueError, match="request 1: a fixed canvas slot holds the mask token"):
        Canvas.build(_prompts()[:2], 4, mask_id=MASK_ID, pad_id=0, fixed_masks=fix0)


@pytest.mark.parametrize("name", ["prefix", "dual"])
def test_kv_cache_step_matches_full_forward(tiny_runner, name):
    """Right after a refresh, reused keys/values are exactly what a full forward computes, so the cached
    step's logits equal the uncached ones (this checks positions, masks and the KV plumbing)."""
    from unmask.decoders import build_cache

    canvas = Canvas.build(_prompts(), 12, mask_id=MASK_ID, pad_id=0)
    cache = build_cache(name)
    cache.reset(canvas)
    first = cache.logits(tiny_runner, canvas, None, 4, 8, refresh=True)
    again = cache.logits(tiny_runner, canvas, None, 4, 8, refresh=False)
    rows = torch.tensor([0, 2])
    subset = cache.logits(tiny_runner, canvas, rows, 4, 8, refresh=False)
    full = tiny_runner.forward(canvas, None, 4, 8)
    assert torch.allclose(first, full, atol=1e-5) and torch.allclose(again, full, atol=1e-5)
    assert torch.allclose(subset, full[rows], atol=1e-5)
    n = canvas.tokens.shape[1]
    step_positions = {"prefix": n - (canvas.prefix_len + 4), "dual": 4}[name]
    assert cache.stats["positions_computed"] == 3 * n + 3 * step_positions + 2 * step_positions


@pytest.mark.parametrize("name", ["none", "prefix", "dual"])
def test_caches_refresh_once_per_block(tiny_runner, name):
    from unmask.decoders import build_cache

    canvas = Canvas.build(_prompts(), 12, mask_id=MASK_ID, pad_id=0)
    cache = build_cache(name)
    params = SamplingParams(gen_length=12, block_length=4, steps=12, stop_at_eos=False)
    res = denoise(tiny_runner, canvas, build_policy("low_confidence"), params, cache=cache)
    assert not (res.tokens == MASK_ID).any()
    assert res.cache_stats["forwards"] == 12
    assert res.cache_stats["refreshes"] == (0 if name == "none" else 3)
    per_step = {"none": canvas.tokens.shape[1], "prefix": None, "dual": 4}[name]
    if per_step:
        n = canvas.tokens.shape[1]
        expect = 3 * (3 * n + 3 * 3 * per_step) if name == "dual" else 3 * 12 * n
        assert res.cache_stats["positions_computed"] == expect


def test_factor_rule_counts():
    """(n + 1)(1 - c_n) < f: confidences .99, .95, .9, .5 with f = 1 commit 3 (4 * .1 = .4 < 1, 5 * .5 >= 1)."""
    probs = torch.tensor([[0.99, 0.95, 0.9, 0.5]])
    logits = torch.stack([probs.log(), (1 - probs).log()], -1)  # token 0 with confidence c
    x0, commit = build_policy("factor", {"factor": 1.0}).step(
        logits, StepContext(torch.ones(1, 4, dtype=torch.bool), 4, 0.0)
    )
    assert commit.tolist() == [[True, True, True, False]]


@pytest.mark.parametrize("name", ["early_commit", "early_exit"])
def test_early_policies_fill_everything_when_sure(name):
    sure = torch.full((2, 6, 5), -20.0)
    sure[..., 0] = 20.0
    unsure = torch.zeros(2, 6, 5)
    unsure[..., 0] = 0.1
    elig = torch.ones(2, 6, dtype=torch.bool)
    policy = build_policy(name)
    assert policy.step(sure, StepContext(elig, 6, 0.0))[1].all()
    assert policy.step(unsure, StepContext(elig, 6, 0.0))[1].sum(-1).tolist() == [1, 1]


def test_early_commit_fast_path_matches_the_general_rule():
    """When every row's gap is settled, greedy early commit skips probabilities and ranking; its tokens and commits
    are what the general rule gives (forced through it with one unsettled row added)."""
    gen = torch.Generator().manual_seed(0)
    sure = torch.randn(3, 6, 9, generator=gen)
    sure.scatter_(-1, torch.randint(0, 9, (3, 6, 1), generator=gen), 30.0)
    elig = torch.rand(3, 6, generator=gen) < 0.7
    elig[:, 0] = True
    policy = build_policy("early_commit")
    fast = policy.step(sure, StepContext(elig, 6, 0.0))
    mixed = policy.step(torch.cat([sure, torch.zeros(1, 6, 9)]), StepContext(torch.cat([elig, elig[:1]]), 6, 0.0))
    assert torch.equal(fast[0][elig], mixed[0][:3][elig]) and torch.equal(fast[1], mixed[1][:3])
    assert torch.equal(fast[1], elig) and mixed[1][3].sum() == 1


def test_credit_rewards_stable_predictions():
    """The same logits twice: the second step commits more, because the slots kept their top token."""
    policy = build_policy("credit", {"threshold": 0.8})
    policy.reset(1, 4, torch.device("cpu"))
    probs = torch.tensor([[0.75, 0.7, 0.6, 0.3]])
    logits = torch.stack([probs.log(), (1 - probs).log()], -1)
    elig = torch.ones(1, 4, dtype=torch.bool)
    first = policy.step(logits, StepContext(elig, 4, 0.0))[1]
    second = policy.step(logits, StepContext(elig, 4, 0.0))[1]
    assert first.sum() < second.sum()
    assert (policy.credit[0] > probs[0]).all()


@pytest.mark.parametrize("name", ["low_confidence", "threshold", "factor", "credit", "adaptive_block"])
@pytest.mark.parametrize("batch", [1, 4])
def test_block_causal_cache_is_exact(name, batch):
    """On a block-causal backbone the block_causal cache gives the same tokens as no cache."""
    import dataclasses

    from tests.conftest import TINY
    from unmask.core.backbones import BackboneInfo
    from unmask.core.checkpoint import random_backbone
    from unmask.decoders import ModelRunner, build_cache

    info = BackboneInfo("llada", MASK_ID, None, 0, False, block_size=4)
    runner = ModelRunner(random_backbone(dataclasses.replace(TINY, num_layers=3), seed=7), info)
    params = SamplingParams(gen_length=12, block_length=4, steps=12, stop_at_eos=False)
    out = {}
    for cache in ("none", "block_causal"):
        ragged = [*_prompts(), [Segment("text", token_ids=torch.tensor([20, 21, 22, 23, 24, 25, 26]))]]
        canvas = Canvas.build(ragged[:batch], 12, mask_id=MASK_ID, pad_id=0)
        policy = build_policy(name, {"lookahead": 0} if name == "adaptive_block" else None)
        out[cache] = denoise(runner, canvas, policy, params, cache=build_cache(cache))
    assert torch.equal(out["none"].tokens, out["block_causal"].tokens)
    assert torch.equal(out["none"].nfe, out["block_causal"].nfe)
    assert build_cache("block_causal").exact and not build_cache("dual").exact
    n = out["none"].cache_stats["positions_computed"]
    assert out["block_causal"].cache_stats["positions_computed"] < n / 2


def test_block_causal_mask_hides_later_blocks():
    """Changing a later block leaves earlier slots' logits untouched; on a bidirectional model it does not."""
    import dataclasses

    from tests.conftest import TINY
    from unmask.core.backbones import BackboneInfo
    from unmask.core.checkpoint import random_backbone
    from unmask.decoders import ModelRunner

    model = random_backbone(dataclasses.replace(TINY, num_layers=2), seed=2)
    for block_size, same in ((4, True), (None, False)):
        runner = ModelRunner(model, BackboneInfo("llada", MASK_ID, None, 0, False, block_size=block_size))
        a = Canvas.build(_prompts()[:1], 8, mask_id=MASK_ID, pad_id=0)
        b = Canvas.build(_prompts()[:1], 8, mask_id=MASK_ID, pad_id=0)
        b.tokens[0, -2:] = 30
        la, lb = runner.forward(a, None, 0, 4), runner.forward(b, None, 0, 4)
        assert torch.allclose(la, lb, atol=1e-6) == same


def test_block_causal_cache_refuses_bidirectional(tiny_runner):
    from unmask.decoders import build_cache

    canvas = Canvas.build(_prompts(), 8, mask_id=MASK_ID, pad_id=0)
    with pytest.raises(ValueError, match="only for block-causal backbones"):
        denoise(tiny_runner, canvas, build_policy("low_confidence"), SamplingParams(gen_length=8, block_length=4),
                cache=build_cache("block_causal"))


def test_feature_cache_matches_full_forward_when_nothing_changed(tiny_runner):
    from unmask.decoders import build_cache

    canvas = Canvas.build(_prompts(), 12, mask_id=MASK_ID, pad_id=0)
    cache = build_cache("feature", {"ratio": 0.25, "response_interval": 100})
    cache.reset(canvas)
    full = tiny_runner.forward(canvas, None, 4, 8)
    assert torch.allclose(cache.logits(tiny_runner, canvas, None, 4, 8, refresh=True), full, atol=1e-5)
    rows = torch.tensor([1, 2])
    assert torch.allclose(cache.logits(tiny_runner, canvas, rows, 4, 8, refresh=False), full[rows], atol=1e-5)
    # a changed canvas: the partial step differs from a full recompute, but not by much on the picked slots
    canvas.tokens[:, canvas.prefix_len + 4 : canvas.prefix_len + 6] = 17
    assert not torch.allclose(cache.logits(tiny_runner, canvas, None, 4, 8, refresh=False),
                              tiny_runner.forward(canvas, None, 4, 8), atol=1e-5)


def test_feature_cache_refresh_schedule(tiny_runner):
    """One block of 12 steps, K_p = 8, K_r = 3, ratio 0.25: everything at steps 1 and 9, the whole response
    at steps 4, 7 and 10, a quarter of it (3 slots) at the other 7 steps."""
    from unmask.decoders import build_cache

    canvas = Canvas.build(_prompts(), 12, mask_id=MASK_ID, pad_id=0)
    n, resp = canvas.tokens.shape[1], 12
    cache = build_cache("feature", {"prompt_interval": 8, "response_interval": 3, "ratio": 0.25})
    params = SamplingParams(gen_length=12, steps=12, stop_at_eos=False)
    res = denoise(tiny_runner, canvas, build_policy("low_confidence"), params, cache=cache)
    assert not (res.tokens == MASK_ID).any()
    st = res.cache_stats
    assert st["forwards"] == 12 and st["refreshes"] == 2 and st["response_refreshes"] == 3  # steps 4, 7, 10
    assert st["positions_computed"] == 3 * (2 * n + 3 * resp + 7 * 3)


def test_adaptive_block_without_growth_is_threshold(tiny_runner):
    params = SamplingParams(gen_length=12, block_length=4, temperature=0.5, seed=1, stop_at_eos=False)
    runs = []
    for policy in (build_policy("threshold", {"threshold": 0.05}),
                   build_policy("adaptive_block", {"threshold": 0.05, "lookahead": 0})):
        canvas = Canvas.build(_prompts(), 12, mask_id=MASK_ID, pad_id=0)
        runs.append(denoise(tiny_runner, canvas, policy, params))
    assert torch.equal(runs[0].tokens, runs[1].tokens) and torch.equal(runs[0].nfe, runs[1].nfe)


def test_adaptive_block_grows_over_confident_slots(tiny_runner):
    params = SamplingParams(gen_length=16, block_length=4, stop_at_eos=False)
    canvas = Canvas.build(_prompts(), 16, mask_id=MASK_ID, pad_id=0)
    grow = build_policy("adaptive_block", {"threshold": 0.99, "grow": 1e-6, "lookahead": 16})
    res = denoise(tiny_runner, canvas, grow, params)
    assert not (res.tokens == MASK_ID).any()
    # step 1 takes one slot of the first block and grows over every later slot; the block then finishes alone
    assert (res.commit_step[:, 4:] == 1).all() and res.nfe.tolist() == [4, 4, 4]
    canvas = Canvas.build(_prompts(), 16, mask_id=MASK_ID, pad_id=0)
    base = denoise(tiny_runner, canvas, build_policy("threshold", {"threshold": 0.99}), params)
    assert base.nfe.tolist() == [16, 16, 16]
    # a low-confidence stretch stops the growth: with a high bar nothing past the block is taken early
    canvas = Canvas.build(_prompts(), 16, mask_id=MASK_ID, pad_id=0)
    strict = denoise(tiny_runner, canvas, build_policy("adaptive_block", {"threshold": 0.99, "grow": 0.99}), params)
    free = strict.commit_step.view(3, 4, 4)
    assert (free[:, :-1].amax(-1) < free[:, 1:].amin(-1)).all()
