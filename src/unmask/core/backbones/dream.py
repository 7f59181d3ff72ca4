"""Dream (Dream-org/Dream-v0-*): Qwen2 layout with q/k/v biases and GQA, bidirectional attention, and
logits shifted by one: the output at position i-1 predicts token i (Dream keeps the AR head of the
Qwen2.5 model it was adapted from)."""

from __future__ import annotations

from typing import Any

from .base import BackboneFamily, BackboneInfo, require
from .transformer import TransformerConfig


class DreamFamily(BackboneFamily):
    name = "dream"
    shift_logits = True
    default_mask_id = 151666
    key_rules = [
        (r"embed\.weight", "model.embed_tokens.weight"),
        (r"norm\.weight", "model.norm.weight"),
        (r"lm_head\.weight", "lm_head.weight"),
        (r"layers\.(\d+)\.attn_norm\.weight", "model.layers.{0}.input_layernorm.weight"),
        (r"layers\.(\d+)\.mlp_norm\.weight", "model.layers.{0}.post_attention_layernorm.weight"),
        (r"layers\.(\d+)\.(q|k|v|o)\.(weight|bias)", "model.layers.{0}.self_attn.{1}_proj.{2}"),
        (r"layers\.(\d+)\.(gate|up|down)\.weight", "model.layers.{0}.mlp.{1}_proj.weight"),
    ]

    @classmethod
    def matches(cls, raw: dict[str, Any]) -> bool:
        return str(raw.get("model_type", "")).lower() == "dream" or "DreamModel" in raw.get("architectures", [])

    @classmethod
    def transformer_config(cls, raw: dict[str, Any]) -> TransformerConfig:
        heads = int(require(raw, "num_attention_heads", "dream"))
        return TransformerConfig(
            vocab_size=int(require(raw, "vocab_size", "dream")),
            hidden_size=int(require(raw, "hidden_size", "dream")),
            num_layers=int(require(raw, "num_hidden_layers", "dream")),
            num_heads=heads,
            num_kv_heads=int(raw.get("num_key_value_heads") or heads),
            intermediate_size=int(require(raw, "intermediate_size", "dream")),
            rope_theta=float(raw.get("rope_theta", 10000.0)),
            rms_norm_eps=float(raw.get("rms_norm_eps", 1e-6)),
            qkv_bias=True,
            tie_embeddings=bool(raw.get("tie_word_embeddings", False)),
            max_position_embeddings=int(raw.get("max_position_embeddings", 32768)),
        )

    @classmethod
    def hf_config(cls, cfg: TransformerConfig, info: BackboneInfo) -> dict[str, Any]:
        return {
            "architectures": ["DreamModel"],
            "model_type": "Dream",
            "hidden_size": cfg.hidden_size,
            "num_attention_heads": cfg.num_heads,
            "num_key_value_heads": cfg.num_kv_heads,
            "num_hidden_layers": cfg.num_layers,
            "intermediate_size": cfg.intermediate_size,
            "vocab_size": cfg.vocab_size,
            "rope_theta": cfg.rope_theta,
            "rms_norm_eps": cfg.rms_norm_eps,
            "max_position_embeddings": cfg.max_position_embeddings,
            "tie_word_embeddings": cfg.tie_embeddings,
            "hidden_act": "silu",
            "mask_token_id": info.mask_id,
            "eos_token_id": info.eos_id,
            "pad_token_id": info.pad_id,
        }
