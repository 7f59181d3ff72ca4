"""Parity of the native backbones with transformers' Llama / Qwen2 on identical tiny random weights,
loaded through our HF-layout loader from the real LLaDA and Dream key names."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from unmask.core.checkpoint import load_backbone

transformers = pytest.importorskip("transformers")


def _bidirectional_mask(key_mask: torch.Tensor) -> torch.Tensor:
    # transformers 5 treats a None or 2D mask as causal for Llama/Qwen2; a 4D mask is used as given.
    b, n = key_mask.shape
    allowed = key_mask[:, None, None, :].expand(b, 1, n, n)
    return torch.zeros(b, 1, n, n).masked_fill(~allowed, torch.finfo(torch.float32).min)


def _batch(vocab: int):
    torch.manual_seed(0)
    lens = [9, 5, 7]
    n = max(lens)
    ids = torch.randint(2, vocab, (3, n))
    key_mask = torch.zeros(3, n, dtype=torch.bool)
    for i, length in enumerate(lens):
        key_mask[i, n - length :] = True  # left padding
        ids[i, : n - length] = 0
    pos = (key_mask.long().cumsum(1) - 1).clamp_min(0)
    return ids, key_mask, pos


LLADA_NAMES = {
    "model.embed_tokens.weight": "model.transformer.wte.weight",
    "model.norm.weight": "model.transformer.ln_f.weight",
    "lm_head.weight": "model.transformer.ff_out.weight",
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ff_norm",
    "self_attn.o_proj": "attn_out",
    "self_attn.q_proj": "q_proj",
    "self_attn.k_proj": "k_proj",
    "self_attn.v_proj": "v_proj",
    "mlp.gate_proj": "ff_proj",
    "mlp.up_proj": "up_proj",
    "mlp.down_proj": "ff_out",
}


def _to_llada_key(k: str) -> str:
    if k in LLADA_NAMES:
        return LLADA_NAMES[k]
    k = k.replace("model.layers.", "model.transformer.blocks.")
    for hf, ll in LLADA_NAMES.items():
        if not hf.startswith(("model.", "lm_head")):
            k = k.replace(f".{hf}.", f".{ll}.")
    return k


def test_llada_matches_transformers_llama(tmp_path):
    cfg = transformers.LlamaConfig(
        vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=4, rms_norm_eps=1e-5, rope_theta=500000.0, max_position_embeddings=64,
        tie_word_embeddings=False, attention_bias=False,
    )
    ref = transformers.LlamaForCausalLM(cfg).eval()
    state = {_to_llada_key(k): v.contiguous() for k, v in ref.state_dict().items() if "rotary" not in k}
    assert "model.transformer.blocks.1.ff_out.weight" in state and "model.transformer.ff_out.weight" in state
    save_file(state, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps({
        "model_type": "llada", "architectures": ["LLaDAModelLM"], "d_model": 64, "n_heads": 4, "n_kv_heads": 4,
        "n_layers": 2, "mlp_hidden_size": 96, "vocab_size": 97, "embedding_size": 97, "rope_theta": 500000.0,
        "rms_norm_eps": 1e-5, "max_sequence_length": 64, "block_type": "llama", "include_bias": False,
        "weight_tying": False, "mask_token_id": 96,
    }))
    loaded = load_backbone(tmp_path)
    assert loaded.info.mask_id == 96 and not loaded.info.shift_logits
    ids, key_mask, pos = _batch(97)
    with torch.no_grad():
        want = ref(input_ids=ids, attention_mask=_bidirectional_mask(key_mask), position_ids=pos).logits
        got = loaded.model.logits(loaded.model(ids, position_ids=pos, key_mask=key_mask))
    assert torch.allclose(got[key_mask], want[key_mask], atol=1e-4, rtol=1e-4)
    # and the mask really is bidirectional: a causal reference differs
    with torch.no_grad():
        causal = ref(input_ids=ids[:1, 2:], position_ids=pos[:1, 2:]).logits
    assert not torch.allclose(got[0, 2:], causal[0], atol=1e-3)


def test_dream_matches_transformers_qwen2(tmp_path):
    cfg = transformers.Qwen2Config(
        vocab_size=101, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, rms_norm_eps=1e-6, rope_theta=1_000_000.0, max_position_embeddings=64,
        tie_word_embeddings=False,
    )
    ref = transformers.Qwen2ForCausalLM(cfg).eval()
    state = {k: v.contiguous() for k, v in ref.state_dict().items() if "rotary" not in k}
    assert "model.layers.0.self_attn.q_proj.bias" in state  # Qwen2 layout: q/k/v carry biases
    save_file(state, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps({
        "model_type": "Dream", "architectures": ["DreamModel"], "hidden_size": 64, "intermediate_size": 96,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 101,
        "rms_norm_eps": 1e-6, "rope_theta": 1_000_000.0, "max_position_embeddings": 64,
        "tie_word_embeddings": False, "mask_token_id": 100,
    }))
    loaded = load_backbone(tmp_path)
    assert loaded.info.shift_logits and loaded.info.mask_id == 100
    ids, key_mask, pos = _batch(101)
    with torch.no_grad():
        want = ref(input_ids=ids, attention_mask=_bidirectional_mask(key_mask), position_ids=pos).logits
        got = loaded.model.logits(loaded.model(ids, position_ids=pos, key_mask=key_mask))
    assert torch.allclose(got[key_mask], want[key_mask], atol=1e-4, rtol=1e-4)


def test_dream_runner_shifts_logits(tmp_path):
    """Dream's canvas slot i is read from the hidden state at i-1."""
    from tests.conftest import TINY
    from unmask.core.backbones import BackboneInfo
    from unmask.core.checkpoint import random_backbone
    from unmask.decoders import Canvas, ModelRunner, Segment

    model = random_backbone(TINY, seed=3)
    canvas = Canvas.build([[Segment("text", token_ids=torch.tensor([5, 6, 7]))]], 4, mask_id=63, pad_id=0)
    shifted = ModelRunner(model, BackboneInfo("dream", 63, None, None, True)).forward(canvas)
    plain = ModelRunner(model, BackboneInfo("llada", 63, None, None, False)).forward(canvas)
    full = model.logits(model(canvas.tokens)).float()
    full[..., 63] = float("-inf")
    assert torch.allclose(shifted, full[:, 2:6]) and torch.allclose(plain, full[:, 3:7])
