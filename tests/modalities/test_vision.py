"""Vision modality: image front end (errors and conversions), procedural scenes, and the VLM layout loaders on tiny
random weights written in the LLaDA-V and Dream-VL layouts."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from unmask.modalities.vision.image import ImageConfig, ImageError, load_image, preprocess
from unmask.modalities.vision.scenes import (
    TASKS,
    attribute_hits,
    digit_indices,
    long_accuracy,
    make_item,
    parse_clause,
    read_split,
    write_split,
)


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def test_bad_images_are_named_with_the_fix(tmp_path):
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    cases = [(corrupt, "corrupt.png: not a readable image"), (empty, "empty.jpg: empty file"),
             (tmp_path / "missing.png", "no such file"), (np.zeros((0, 4, 3), np.uint8), "no pixels"),
             (np.full((4, 4), np.nan, np.float32), "NaN"), (np.zeros((4, 4, 7), np.uint8), "not an image")]
    for src, msg in cases:
        with pytest.raises(ImageError, match=msg):
            load_image(src)


def test_huge_image_refused_before_decoding(tmp_path, monkeypatch):
    import unmask.modalities.vision.image as image_mod

    path = tmp_path / "big.png"
    Image.new("RGB", (400, 400), "white").save(path)
    monkeypatch.setattr(image_mod, "MAX_PIXELS", 100 * 100)
    with pytest.raises(ImageError, match="big.png: .*downscale"):
        load_image(path)


def test_conversions_gray_rgba_palette_and_letterbox():
    gray = load_image(_png(Image.new("L", (10, 10), 128)))
    assert gray.mode == "RGB" and gray.getpixel((0, 0)) == (128, 128, 128)
    rgba = Image.new("RGBA", (10, 10), (255, 0, 0, 0))
    rgba.putpixel((5, 5), (0, 0, 255, 255))
    out = load_image(_png(rgba))
    assert out.getpixel((0, 0)) == (255, 255, 255) and out.getpixel((5, 5)) == (0, 0, 255)  # alpha on white
    pal = Image.new("P", (6, 6))
    pal.putpalette([0, 200, 0] * 256)
    assert load_image(_png(pal)).getpixel((1, 1)) == (0, 200, 0)
    wide = np.zeros((20, 60, 3), np.uint8)  # black strip, letterboxed on white to a square
    x = preprocess([wide], ImageConfig(size=12))
    assert x.shape == (1, 3, 12, 12)
    assert x[0, :, 0, 6].tolist() == [1.0, 1.0, 1.0] and x[0, :, 6, 6].tolist() == [-1.0, -1.0, -1.0]


def test_scenes_are_deterministic_and_held_out(tmp_path):
    a, img_a = make_item("long", "test", 3)
    b, img_b = make_item("long", "test", 3)
    assert a == b and np.array_equal(img_a, img_b) and img_a.shape == (96, 96, 3)
    assert len(a.answer.split()) >= 8 and a.answer.endswith(".")
    train, test = set(digit_indices("train")), set(digit_indices("test"))
    assert not train & test and len(test) > 300
    for task in TASKS:
        for i in range(30):
            item, _ = make_item(task, "test", i)
            assert all(t.digit_index in test for t in item.scene if t.kind == "digit")
            if task == "mc":
                assert item.answer in "ABCD" and len(set(item.choices)) == 4
    assert long_accuracy("a small red circle at the top. the digit 3 in the center.",
                         "a small red circle at the top. a large blue square at the left.") == 0.5
    manifest = write_split(tmp_path, "test", 2)
    rows = read_split(manifest, tasks=["mc"])
    assert len(rows) == 2 and Image.open(rows[0]["image"]).size == (96, 96)


# ---- layouts --------------------------------------------------------------------------------------------------------

def _tiny_vlm(tmp_path, layout: str):
    from unmask.core.backbones import BackboneInfo, TransformerConfig
    from unmask.core.checkpoint import random_backbone
    from unmask.modalities.text.tokenizer import train_bpe
    from unmask.modalities.vision.model import VLM, VisionSpec, VisionTower, siglip_config

    tok = train_bpe([f"<|user|>\nwhat color is the circle? {w}" for w in ("red", "blue", "green")] * 20, 300,
                    tmp_path / "tok", extra_special=("<|image_pad|>",))
    shift = layout == "dream_vl"
    cfg = TransformerConfig(vocab_size=tok.vocab_size, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2,
                            intermediate_size=48, max_position_embeddings=256, qkv_bias=shift)
    vc = siglip_config({"hidden_size": 24, "intermediate_size": 48, "num_hidden_layers": 2, "num_attention_heads": 2,
                        "image_size": 32, "patch_size": 8})
    spec = VisionSpec(select_layer=-2, image=ImageConfig(size=32),
                      image_token_id=tok.token_id("<|image_pad|>") if shift else None)
    torch.manual_seed(0)
    tower = VisionTower(vc, 32, spec).eval()
    info = BackboneInfo(family=layout, mask_id=tok.mask_id, eos_id=tok.eos_id, pad_id=tok.pad_id, shift_logits=shift)
    return VLM(tower, random_backbone(cfg, seed=2), info, tok, layout)


@pytest.mark.parametrize("layout", ["llava_llada", "dream_vl"])
def test_layout_round_trip(tmp_path, layout):
    from safetensors import safe_open

    from unmask.modalities.vision.model import load_vlm, save_vlm

    vlm = _tiny_vlm(tmp_path, layout)
    path = save_vlm(vlm, tmp_path / "ckpt", dtype=torch.float32)
    with safe_open(str(path / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    if layout == "llava_llada":
        expect = {"model.mm_projector.0.weight", "model.mm_projector.2.bias", "model.embed_tokens.weight",
                  "model.vision_tower.vision_tower.vision_model.embeddings.patch_embedding.weight",
                  "model.layers.1.self_attn.q_proj.weight", "lm_head.weight"}
    else:
        expect = {"multi_modal_projector.linear_1.weight", "multi_modal_projector.linear_2.bias",
                  "vision_tower.vision_model.encoder.layers.1.mlp.fc2.weight", "model.layers.0.self_attn.k_proj.bias"}
    assert expect <= keys
    got = load_vlm(path)
    assert got.layout == layout and got.info.shift_logits == (layout == "dream_vl")
    img = np.random.default_rng(0).integers(0, 255, (40, 30, 3), dtype=np.uint8)
    torch.testing.assert_close(got.encode([img]), vlm.encode([img]))
    segs = got.prefix(got.encode([img])[0], "what color is the circle?")
    assert [s.kind for s in segs] == ["text", "image", "text"] and len(segs[1]) == 16
    ids = torch.cat([s.token_ids for s in segs if s.token_ids is not None]).tolist()
    assert got.tokenizer.token_id("<|image_pad|>") not in ids  # the placeholder became the image span


def test_llava_v_tower_from_local_directory_and_select_layer(tmp_path):
    """A real LLaDA-V config names its tower by hub id; offline it must be a local directory (a transformers
    save_pretrained of the tower) and features come from hidden_states[mm_vision_select_layer]."""
    from unmask.modalities.vision.model import load_vlm, save_vlm

    vlm = _tiny_vlm(tmp_path, "llava_llada")
    path = save_vlm(vlm, tmp_path / "ckpt", dtype=torch.float32)
    tower_dir = tmp_path / "siglip"
    vlm.tower.vision.save_pretrained(tower_dir)
    raw = json.loads((path / "config.json").read_text())
    raw.pop("vision_config")
    raw.pop("unmask_image")
    raw["mm_vision_tower"] = "google/siglip2-so400m-patch14-384"
    (path / "config.json").write_text(json.dumps(raw))
    with pytest.raises(ValueError, match="nothing is downloaded"):
        load_vlm(path)
    raw["mm_vision_tower"] = str(tower_dir)
    (path / "config.json").write_text(json.dumps(raw))
    got = load_vlm(path)
    pixels = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        ref = vlm.tower.vision(pixel_values=pixels, output_hidden_states=True).hidden_states[-2]
        torch.testing.assert_close(got.tower(pixels), vlm.tower.projector(ref))


def test_question_kind_reads_every_short_question():
    """Every kind of short question is recognised from its wording; other tasks are their own kind."""
    from unmask.modalities.vision.scenes import COLORS, SHORT_KINDS, make_item, question_kind

    seen = {make_item("short", "train", i)[0].kind for i in range(80)}
    assert seen == set(SHORT_KINDS)
    item = next(it for it in (make_item("short", "test", i)[0] for i in range(50)) if it.kind == "color")
    assert item.question.startswith("what color") and item.answer in COLORS
    assert question_kind("short", "how many red shapes are there?") == "count_color"
    assert question_kind("short", "how many circles are there?") == "count_shape"
    assert make_item("mc", "test", 0)[0].kind == "mc"
    assert question_kind("short", "what shape is at the top?") == "other"  # a manifest's own wording


def test_description_attributes_score_the_parts_of_each_clause():
    ref = ("a small yellow circle at the left. a large red circle at the right. a small green triangle at the bottom. "
           "the digit 3 at the bottom right.")
    pred = ("a large yellow circle at the left. a small green circle at the top left. a green square at the the right. "
            "the digit 8 at the bottom right. a red square at the left.")
    # left: kind and colour right, size wrong (the second clause at the left is not read); right: the cell is
    # misspelt, so nothing there; bottom: not named; bottom right: a digit, the wrong one
    assert attribute_hits(pred, ref) == {"cell": (2, 4), "kind": (2, 4), "color": (1, 3), "size": (0, 3),
                                         "digit": (0, 1)}
    assert parse_clause("a small  circle at the left") == {"cell": "left", "size": "small", "kind": "circle"}
    assert parse_clause("the digit 7 in the center") == {"cell": "center", "kind": "digit", "digit": "7"}
    for i in range(20):  # the reference itself scores every attribute of every object
        item, _ = make_item("long", "test", i)
        hits = attribute_hits(item.answer, item.answer)
        assert all(h == n for h, n in hits.values()) and hits["cell"][1] == len(item.scene)
        assert attribute_hits("", item.answer)["cell"] == (0, len(item.scene))
