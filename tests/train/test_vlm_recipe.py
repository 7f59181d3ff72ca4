"""``unmask train vlm`` end to end at toy size: the loss falls and the checkpoint loads in LLaDA-V's layout."""

from __future__ import annotations

import json

from unmask.modalities.vision.model import load_vlm
from unmask.modalities.vision.scenes import make_item


def test_train_vlm_tiny_run_writes_a_loadable_checkpoint(small_vlm_dir):
    log = [json.loads(x) for x in (small_vlm_dir / "train_log.jsonl").read_text().splitlines()]
    losses = [r for r in log if "loss" in r]
    assert losses[-1]["step"] == 40 and losses[-1]["loss"] < losses[0]["loss"]
    assert all(r["image_rms"] > 0 and r["probe"] > 0 for r in losses)
    raw = json.loads((small_vlm_dir / "config.json").read_text())
    assert raw["model_type"] == "llava_llada" and raw["unmask_recipe"]["steps"] == 40
    vlm = load_vlm(small_vlm_dir)
    item, image = make_item("short", "test", 0)
    segs = vlm.prefix(vlm.encode([image])[0], item.question)
    assert [s.kind for s in segs] == ["text", "image", "text"] and len(segs[1]) == (96 // 16) ** 2


def test_probe_weight_scales_the_probe_loss(small_vlm_dir):
    import random

    import torch

    from unmask.train.vlm import CellProbe, vlm_loss

    vlm = load_vlm(small_vlm_dir)
    items, images = zip(*[make_item("long", "train", i) for i in range(4)], strict=True)
    probe = CellProbe(vlm.tower.vision.config.hidden_size)
    out = {}
    for w in (0.0, 2.0):
        with torch.no_grad():
            out[w] = vlm_loss(vlm, list(items), list(images), 4, random.Random(0), torch.Generator().manual_seed(0),
                              probe=probe, probe_weight=w)
    assert out[2.0][1]["probe"] > 0
    assert abs(out[2.0][0].item() - out[0.0][0].item() - 2 * out[2.0][1]["probe"]) < 1e-4


def test_token_probe_and_projector_bound(small_vlm_dir):
    """The token probe adds a per-token loss (its ``where`` head learns each patch's cell); the RMS bound adds
    ``weight * mean(max(0, rms - bound)^2)`` and nothing when every token is under it."""
    import random

    import torch

    from unmask.train.vlm import CellProbe, vlm_loss

    vlm = load_vlm(small_vlm_dir)
    items, images = zip(*[make_item("long", "train", i) for i in range(4)], strict=True)
    dim = vlm.tower.vision.config.hidden_size
    torch.manual_seed(0)
    cell = CellProbe(dim)
    tok = CellProbe(dim, tokens=True)
    tok.heads.load_state_dict(cell.heads.state_dict())

    def run(**kw):
        with torch.no_grad():
            return vlm_loss(vlm, list(items), list(images), 4, random.Random(0), torch.Generator().manual_seed(0), **kw)

    base, parts = run(probe=cell)
    assert run(probe=tok)[1]["probe"] > parts["probe"]  # the same pooled heads plus the per-token terms
    rms = parts["image_rms"]
    assert run(probe=cell, projector_rms=1e6)[0].item() == base.item()  # under the bound: no penalty
    bounded = run(probe=cell, projector_rms=rms / 2, projector_weight=3.0)[0].item()
    assert bounded > base.item() + 3.0 * (rms / 2) ** 2 * 0.5  # roughly weight x excess^2 (RMS varies by token)
    feats = torch.randn(2, 36, dim, requires_grad=True)
    scene = [it.scene for it in items[:2]]
    opt = torch.optim.SGD(list(tok.parameters()) + [feats], lr=0.5)
    first = tok(feats, scene).item()
    for _ in range(30):
        opt.zero_grad()
        loss = tok(feats, scene)
        loss.backward()
        opt.step()
    assert loss.item() < first / 2


def test_attribute_nll_tells_a_model_that_ignores_the_image(small_vlm_dir):
    import math

    import torch

    from unmask.train.vlm import attribute_nll

    log = [json.loads(x) for x in (small_vlm_dir / "train_log.jsonl").read_text().splitlines()]
    assert "attribute_nll" in log[-1]  # the recipe scores its model at the end
    vlm = load_vlm(small_vlm_dir)
    got = attribute_nll(vlm, n=3)
    assert set(got) == {"color", "shape", "size", "cell"}
    assert all(v["words"] > 0 and math.isfinite(v["own_image"]) and v["own_image"] > 0 for v in got.values())
    assert any(abs(v["own_image"] - v["other_image"]) > 1e-6 for v in got.values())  # the image moves the scores
    with torch.no_grad():
        for p in vlm.tower.projector.parameters():
            p.zero_()  # every image now embeds to zeros: own and other image are the same input
    blind = attribute_nll(vlm, n=3)
    assert all(abs(v["own_image"] - v["other_image"]) < 1e-5 for v in blind.values())


def test_curriculum_stages_and_question_kinds():
    """Steps up to a stage's ``until`` draw from its weights, later steps from ``task_weights``; ``short.KIND`` draws
    only that kind of short question, from the task's own deterministic stream; bad stages are named."""
    import pytest

    from unmask.modalities.vision.scenes import COLORS, SHORT_KINDS
    from unmask.train.vlm import VlmTrainConfig, draw_item

    cfg = VlmTrainConfig(steps=30, curriculum=[{"until": 10, "task_weights": {"short.color": 1.0}},
                                               {"until": 20, "task_weights": {"mc": 1.0}}])
    assert [cfg.weights_at(s) for s in (1, 10, 11, 20, 21, 30)] == [
        {"short.color": 1.0}, {"short.color": 1.0}, {"mc": 1.0}, {"mc": 1.0}, cfg.task_weights, cfg.task_weights]

    counters: dict[str, int] = {}
    drawn = [draw_item("short.color", counters, seed=3)[0] for _ in range(6)]
    assert all(it.kind == "color" and it.question.startswith("what color") and it.answer in COLORS for it in drawn)
    assert len({it.id for it in drawn}) == 6 and counters["short"] > 3 * 10_000_000 + 6  # other kinds were skipped
    again: dict[str, int] = {}
    assert [draw_item("short.color", again, seed=3)[0].id for _ in range(6)] == [it.id for it in drawn]
    kinds = {draw_item("short", counters, seed=3)[0].kind for _ in range(60)}
    assert kinds == set(SHORT_KINDS)
    assert draw_item("mc", counters)[0].kind == "mc"

    with pytest.raises(ValueError, match=r"curriculum\[0\] names unknown task\(s\) \['short.colour'\]"):
        VlmTrainConfig(steps=30, curriculum=[{"until": 10, "task_weights": {"short.colour": 1.0}}])
    with pytest.raises(ValueError, match=r"curriculum\[1\].until must increase"):
        VlmTrainConfig(steps=30, curriculum=[{"until": 10, "task_weights": {"mc": 1}},
                                             {"until": 5, "task_weights": {}}])
    with pytest.raises(ValueError, match=r"curriculum\[0\] must be \{until"):
        VlmTrainConfig(steps=30, curriculum=[{"steps": 10, "task_weights": {"mc": 1}}])


def test_group_by_task_draws_whole_batches_from_one_task():
    """Under ``group_by_task`` every question of a step comes from one task (so a one-word answer is not padded to
    a description's length); otherwise tasks mix within a step. Both follow the weights over steps."""
    import random
    from collections import Counter

    from unmask.train.vlm import VlmTrainConfig, draw_batch

    for grouped in (True, False):
        cfg = VlmTrainConfig(steps=40, batch_size=6, group_by_task=grouped,
                             task_weights={"short.color": 0.5, "mc": 0.5})
        rng, counters = random.Random(0), {}
        batches = [draw_batch(cfg, s, rng, counters)[0] for s in range(1, 41)]
        kinds = [{it.kind for it in b} for b in batches]
        assert all(len(b) == 6 for b in batches)
        if grouped:
            assert all(len(k) == 1 for k in kinds)
            assert 10 <= Counter(next(iter(k)) for k in kinds)["color"] <= 30
        else:
            assert sum(len(k) == 2 for k in kinds) > 30


def test_fresh_backbone_on_a_frozen_tower(small_vlm_dir, tmp_path):
    """``reinit_backbone`` + ``freeze_tower``: the continued run's tower is the checkpoint's, bit for bit, while the
    backbone is built afresh to the recipe's shape; ``projector_from_probe`` + ``freeze_projector``: the saved
    projector's first layer reads each token's grid cell off the tower's features; without ``init_from`` each is
    refused by name."""
    import pytest
    import torch
    import torch.nn.functional as F

    from unmask.modalities.vision.image import preprocess
    from unmask.train.vlm import VlmTrainConfig, main, patch_cells, probe_projector

    base = load_vlm(small_vlm_dir)
    out = main(None, {"out_dir": str(tmp_path / "fresh"), "init_from": str(small_vlm_dir), "reinit_backbone": True,
                      "projector_from_probe": 6, "freeze_projector": True, "freeze_tower": True, "probe_weight": 0.0,
                      "hidden_size": 64, "num_layers": 2, "num_heads": 2, "intermediate_size": 64, "steps": 6,
                      "batch_size": 4, "warmup": 2, "save_every": 6, "group_by_task": True, "eval_items": 0})
    new = load_vlm(out)
    old_tower, new_tower = base.tower.vision.state_dict(), new.tower.vision.state_dict()
    assert old_tower.keys() == new_tower.keys()
    assert all(torch.equal(old_tower[k], new_tower[k]) for k in old_tower)
    # the recipe's own backbone shape (the checkpoint's: width 32, 4 layers), so built afresh
    assert (new.backbone.cfg.hidden_size, new.backbone.cfg.num_layers) == (64, 2)
    hits = total = 0
    for i in range(6):  # the scenes the probes were fitted on (seed 0)
        _, image = make_item("long", "train", 9_000_000 + i)
        with torch.no_grad():
            first = F.linear(new.tower.features(preprocess([image], new.spec.image))[0].float(),
                             new.tower.projector.fc1.weight.float(), new.tower.projector.fc1.bias.float())
        cells = patch_cells(len(first))
        hits += (first[:, 25:34].argmax(-1) == cells).sum().item()  # rows 25-33: the cell probe
        total += len(cells)
    assert hits / total > 0.3  # chance 1/9; the toy tower (1 layer, 40 steps) measured 0.58
    with pytest.raises(ValueError, match="projector units"):
        probe_projector(base.tower, 16, 1)
    log = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r][-1] == 6
    for key in ("freeze_tower", "reinit_backbone", "projector_from_probe"):
        with pytest.raises(ValueError, match="init_from"):
            VlmTrainConfig(**{key: True})


def test_pad_weight_moves_the_loss_towards_the_answers_own_slots(small_vlm_dir):
    """The diffusion loss is a weighted mean over the masked slots: at ``pad_weight`` 1 the plain mean, and as it
    falls the mean moves monotonically towards that of the answers' own slots (same masks, same per-slot losses);
    out of (0, 1] it is refused."""
    import random

    import pytest
    import torch

    from unmask.train.vlm import VlmTrainConfig, vlm_loss

    vlm = load_vlm(small_vlm_dir)
    items, images = zip(*[make_item("short", "train", i) for i in range(8)], strict=True)

    def loss(**kw):
        with torch.no_grad():
            return vlm_loss(vlm, list(items), list(images), 12, random.Random(3), torch.Generator().manual_seed(3),
                            **kw)[0].item()

    plain = loss()
    assert loss(pad_weight=1.0) == plain
    curve = [loss(pad_weight=w) for w in (1.0, 0.5, 0.1, 1e-6)]
    steps = [b - a for a, b in zip(curve, curve[1:], strict=False)]
    assert all(s > 1e-6 for s in steps) or all(s < -1e-6 for s in steps), curve
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match="pad_weight"):
            VlmTrainConfig(pad_weight=bad)


def test_tower_only_trains_the_tower_through_the_probe_and_nothing_else(tmp_path):
    """``tower_only``: the probe loss falls, the tower's weights move, the saved backbone is the one the run built
    (untouched: no forward, no gradient); the option is refused without the token probe."""
    import pytest
    import torch

    from unmask.train.vlm import VlmTrainConfig, main

    shape = {"hidden_size": 32, "num_layers": 2, "num_heads": 2, "intermediate_size": 64, "vocab_size": 300,
             "vision_hidden": 32, "vision_layers": 1, "vision_heads": 2, "patch_size": 16, "batch_size": 8,
             "warmup": 2, "lr": 3e-3, "tokenizer_items": 100, "token_probe": True, "eval_items": 0}
    first = main(None, {**shape, "out_dir": str(tmp_path / "a"), "tower_only": True, "steps": 1, "save_every": 1})
    out = main(None, {**shape, "out_dir": str(tmp_path / "b"), "tower_only": True, "steps": 30, "save_every": 30})
    log = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    probe = [r["probe"] for r in log if "probe" in r]
    assert [r["step"] for r in log if "probe" in r][-1] == 30 and probe[-1] < probe[0]
    assert not any("loss" in r for r in log)  # no diffusion loss was computed
    a, b = load_vlm(first), load_vlm(out)
    same_seed_backbone = all(torch.equal(x, y) for x, y in zip(a.backbone.state_dict().values(),
                                                                b.backbone.state_dict().values(), strict=True))
    tower_moved = any(not torch.equal(x, y) for x, y in zip(a.tower.vision.state_dict().values(),
                                                            b.tower.vision.state_dict().values(), strict=True))
    assert same_seed_backbone and tower_moved  # 1 step vs 30 steps from the same seed: only the tower differs
    with pytest.raises(ValueError, match="token_probe"):
        VlmTrainConfig(tower_only=True)
    with pytest.raises(ValueError, match="probe_weight"):
        VlmTrainConfig(tower_only=True, token_probe=True, probe_weight=0.0)


def test_where_scaffold_asks_for_the_thing_at_a_cell():
    """``where`` (training only) asks what is at an occupied cell and answers with the thing's short phrase, the
    same phrase ``mc`` lists as the right option; recipes accept it by name, evaluation tasks do not include it."""
    from unmask.modalities.vision.scenes import CELLS, SCAFFOLDS, TASKS
    from unmask.train.vlm import VlmTrainConfig

    assert "where" in SCAFFOLDS and "where" not in TASKS
    for i in range(20):
        item, _ = make_item("where", "train", i)
        cell = next(c for c in sorted(CELLS, key=len, reverse=True) if item.question == f"what is at the {c}?")
        thing = next(t for t in item.scene if CELLS[t.cell] == cell)
        assert item.answer == thing.short()
    VlmTrainConfig(task_weights={"where": 1.0})


def test_pruned_steps_train_on_the_tokens_that_pruning_keeps(small_vlm_dir, tmp_path):
    """``prune_share``/``prune_settings``: a pruned step's layers after K see the text, the canvas and round(ratio x N)
    image tokens; keeping them all gives the unpruned loss; a run whose every step keeps them all ends with the
    weights of an unpruned run (the data drawn do not depend on the pruning), one that withdraws them does not;
    settings a run cannot use are named."""
    import random

    import pytest
    import torch

    from unmask.decoders.pruning import PruneConfig
    from unmask.train.vlm import VlmTrainConfig, main, vlm_loss

    vlm = load_vlm(small_vlm_dir)
    items, images = zip(*[make_item("long", "train", i) for i in range(4)], strict=True)
    seen: list[int] = []
    vlm.backbone.layers[1].register_forward_pre_hook(lambda _m, args: seen.append(args[0].shape[1]))
    losses = []
    for spec in ("none", "fastv:layer=0,ratio=0.25", "fastv:layer=0,ratio=1.0"):
        with torch.no_grad():
            losses.append(vlm_loss(vlm, list(items), list(images), 4, random.Random(0),
                                   torch.Generator().manual_seed(0), prune=PruneConfig.parse(spec))[0].item())
    n_vis = (96 // 16) ** 2
    assert seen[0] - seen[1] == n_vis - round(0.25 * n_vis) and seen[2] == seen[0]
    assert losses[1] != losses[0] and abs(losses[2] - losses[0]) < 1e-5

    base = {"init_from": str(small_vlm_dir), "hidden_size": 32, "num_layers": 4, "num_heads": 2,
            "intermediate_size": 64, "steps": 3, "batch_size": 4, "warmup": 1, "save_every": 3, "lr": 3e-3,
            "probe_weight": 0.0, "eval_items": 0}
    runs = {}
    for name, extra in {"plain": {}, "all_kept": {"prune_share": 1.0, "prune_settings": ["fastv:layer=0,ratio=1.0"]},
                        "withdrawn": {"prune_share": 1.0, "prune_settings": ["vtw:layer=0"]}}.items():
        out = main(None, {**base, **extra, "out_dir": str(tmp_path / name)})
        runs[name] = load_vlm(out).backbone.state_dict()
    diff = {n: max((runs[n][k].float() - runs["plain"][k].float()).abs().max().item() for k in runs["plain"])
            for n in ("all_kept", "withdrawn")}
    assert diff["all_kept"] < 1e-3 < diff["withdrawn"], diff

    with pytest.raises(ValueError, match="prune_share > 0 needs prune_settings"):
        VlmTrainConfig(prune_share=0.5)
    with pytest.raises(ValueError, match=r"'vtw:layer=4' must prune after a layer of the backbone's 4"):
        VlmTrainConfig(prune_share=0.5, prune_settings=["vtw:layer=4"])
    with pytest.raises(ValueError, match="prune method 'fast' is unknown"):
        VlmTrainConfig(prune_share=0.5, prune_settings=["fast:layer=0"])
