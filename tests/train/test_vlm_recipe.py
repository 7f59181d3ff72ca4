"""``unmask train vlm`` end to end at toy size: the loss falls and the checkpoint loads in LLaDA-V's layout."""

from __future__ import annotations

import json

from unmask.modalities.vision.model import load_vlm
from unmask.modalities.vision.scenes import make_item


def test_train_vlm_tiny_run_writes_a_loadable_checkpoint(small_vlm_dir):
    log = [json.loads(x) for x in (small_vlm_dir / "train_log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 40 and log[-1]["loss"] < log[0]["loss"]
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
    assert out[2.0][1] > 0 and abs(out[2.0][0].item() - out[0.0][0].item() - 2 * out[2.0][1]) < 1e-4
