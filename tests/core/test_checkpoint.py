from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from safetensors import safe_open

from tests.conftest import TINY
from unmask.core.backbones import BACKBONES, BackboneInfo
from unmask.core.checkpoint import load_backbone, random_backbone, save_backbone


@pytest.mark.parametrize("family", BACKBONES.names())
@pytest.mark.parametrize("shard", [None, 20_000])
def test_round_trip(tmp_path, family, shard):
    # Dream's Qwen2 layout always carries q/k/v biases; LLaDA-V's Llama layout has none by default
    model = random_backbone(dataclasses.replace(TINY, qkv_bias=family in ("dream", "dream_vl")), seed=1)
    info = BackboneInfo(family, mask_id=63, eos_id=1, pad_id=0, shift_logits=BACKBONES.get(family).shift_logits)
    save_backbone(model, tmp_path, family=family, info=info, max_shard_bytes=shard)
    if shard:
        index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
        assert len(set(index["weight_map"].values())) > 1
    loaded = load_backbone(tmp_path)
    assert loaded.family.name == family and loaded.info.mask_id == 63 and loaded.info.eos_id == 1
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.model.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    ids = torch.randint(0, 63, (2, 10))
    with torch.no_grad():
        assert torch.equal(model(ids), loaded.model(ids))


def test_real_key_names_written(tmp_path):
    model = random_backbone(TINY)
    save_backbone(model, tmp_path / "l", family="llada", info=BackboneInfo("llada", 63, 1, 0, False))
    save_backbone(model, tmp_path / "d", family="dream", info=BackboneInfo("dream", 63, 1, 0, True))
    with safe_open(str(tmp_path / "l" / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert {"model.transformer.wte.weight", "model.transformer.ln_f.weight", "model.transformer.ff_out.weight",
            "model.transformer.blocks.1.attn_out.weight", "model.transformer.blocks.0.ff_proj.weight",
            "model.transformer.blocks.0.up_proj.weight", "model.transformer.blocks.0.ff_norm.weight"} <= keys
    with safe_open(str(tmp_path / "d" / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert {"model.embed_tokens.weight", "lm_head.weight", "model.layers.1.self_attn.o_proj.weight",
            "model.layers.0.mlp.gate_proj.weight", "model.layers.0.post_attention_layernorm.weight"} <= keys


def test_bf16_load_and_dtype(tmp_path):
    save_backbone(random_backbone(TINY), tmp_path, family="llada", info=BackboneInfo("llada", 63, 1, 0, False),
                  dtype=torch.bfloat16)
    assert load_backbone(tmp_path).model.embed.weight.dtype == torch.float32
    assert load_backbone(tmp_path, dtype="bf16").model.embed.weight.dtype == torch.bfloat16
    with pytest.raises(ValueError, match="unknown dtype"):
        load_backbone(tmp_path, dtype="int3")


def test_missing_weight_file_is_named(tmp_path):
    save_backbone(random_backbone(TINY), tmp_path, family="llada", info=BackboneInfo("llada", 63, 1, 0, False),
                  max_shard_bytes=20_000)
    shard = sorted(tmp_path.glob("model-00002-of-*.safetensors"))[0]
    shard.unlink()
    with pytest.raises(FileNotFoundError, match=shard.name):
        load_backbone(tmp_path)
    for f in tmp_path.glob("model*"):
        f.unlink()
    with pytest.raises(FileNotFoundError, match="no weights"):
        load_backbone(tmp_path)
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_backbone(tmp_path / "nowhere")


def test_unknown_architecture_and_missing_tensor(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(ValueError, match="known backbones: dream, dream_vl, llada, llava_llada"):
        load_backbone(tmp_path)
    save_backbone(random_backbone(TINY), tmp_path, family="llada", info=BackboneInfo("llada", 63, 1, 0, False))
    from safetensors.torch import load_file, save_file

    state = load_file(str(tmp_path / "model.safetensors"))
    del state["model.transformer.blocks.1.up_proj.weight"]
    save_file(state, str(tmp_path / "model.safetensors"))
    with pytest.raises(KeyError, match="blocks.1.up_proj"):
        load_backbone(tmp_path)


def test_unsupported_llada_variant(tmp_path):
    save_backbone(random_backbone(TINY), tmp_path, family="llada", info=BackboneInfo("llada", 63, 1, 0, False),
                  extra_config={"block_type": "sequential"})
    with pytest.raises(ValueError, match="block_type"):
        load_backbone(tmp_path)
