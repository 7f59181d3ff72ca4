"""LLaDA (GSAI-ML/LLaDA-8B-*): OLMo-derived layout, bidirectional, in-place (unshifted) logits.

Key and config names follow the public ``modeling_llada.py`` (``LLaDAModelLM`` wraps ``LLaDAModel`` as
``model``; the Llama-style block has q/k/v_proj, attn_out, ff_proj (gate), up_proj, ff_out (down)).
"""

from __future__ import annotations

from typing import Any

from .base import BackboneFamily, BackboneInfo, require
from .transformer import TransformerConfig

_T = "model.transformer"


class LLaDAFamily(BackboneFamily):
    name = "llada"
    shift_logits = False
    default_mask_id = 126336
    key_rules = [
        (r"embed\.weight", f"{_T}.wte.weight"),
        (r"norm\.weight", f"{_T}.ln_f.weight"),
        (r"lm_head\.weight", f"{_T}.ff_out.weight"),
        (r"layers\.(\d+)\.attn_norm\.weight", f"{_T}.blocks.{{0}}.attn_norm.weight"),
        (r"layers\.(\d+)\.mlp_norm\.weight", f"{_T}.blocks.{{0}}.ff_norm.weight"),
        (r"layers\.(\d+)\.(q|k|v)\.(weight|bias)", f"{_T}.blocks.{{0}}.{{1}}_proj.{{2}}"),
        (r"layers\.(\d+)\.o\.weight", f"{_T}.blocks.{{0}}.attn_out.weight"),
        (r"layers\.(\d+)\.gate\.weight", f"{_T}.blocks.{{0}}.ff_proj.weight"),
        (r"layers\.(\d+)\.up\.weight", f"{_T}.blocks.{{0}}.up_proj.weight"),
        (r"layers\.(\d+)\.down\.weight", f"{_T}.blocks.{{0}}.ff_out.weight"),
    ]

    @classmethod
    def matches(cls, raw: dict[str, Any]) -> bool:
        return str(raw.get("model_type", "")).lower() == "llada" or "LLaDAModelLM" in raw.get(
            "architectures", []
        )

    @classmethod
    def transformer_config(cls, raw: dict[str, Any]) -> TransformerConfig:
        unsupported = {
            "block_type": ("llama",),
            "layer_norm_type": ("rms",),
            "activation_type": ("silu", "swiglu"),
            "alibi": (False,),
            "rope": (True,),
        }
        for key, ok in unsupported.items():
            if key in raw and raw[key] not in ok:
                raise ValueError(f"llada config.json: {key}={raw[key]!r} is not supported (supported: {ok})")
        if raw.get("include_bias"):
            raise ValueError("llada config.json: include_bias=true is not supported (LLaDA has no biases)")
        d = int(require(raw, "d_model", "llada"))
        heads = int(require(raw, "n_heads", "llada"))
        mlp = raw.get("mlp_hidden_size") or int(raw.get("mlp_ratio", 4) * d)
        return TransformerConfig(
            vocab_size=int(raw.get("embedding_size") or require(raw, "vocab_size", "llada")),
            hidden_size=d,
            num_layers=int(require(raw, "n_layers", "llada")),
            num_heads=heads,
            num_kv_heads=int(raw.get("n_kv_heads") or heads),
            intermediate_size=int(mlp),
            rope_theta=float(raw.get("rope_theta", 10000.0)),
            rms_norm_eps=float(raw.get("rms_norm_eps", 1e-5)),
            qkv_bias=bool(raw.get("include_qkv_bias", False)),
            tie_embeddings=bool(raw.get("weight_tying", False)),
            max_position_embeddings=int(raw.get("max_sequence_length", 4096)),
        )

    @classmethod
    def hf_config(cls, cfg: TransformerConfig, info: BackboneInfo) -> dict[str, Any]:
        return {
            "architectures": ["LLaDAModelLM"],
            "model_type": "llada",
            "d_model": cfg.hidden_size,
            "n_heads": cfg.num_heads,
            "n_kv_heads": cfg.num_kv_heads,
            "n_layers": cfg.num_layers,
            "mlp_hidden_size": cfg.intermediate_size,
            "vocab_size": cfg.vocab_size,
            "embedding_size": cfg.vocab_size,
            "rope_theta": cfg.rope_theta,
            "rms_norm_eps": cfg.rms_norm_eps,
            "max_sequence_length": cfg.max_position_embeddings,
            "include_bias": False,
            "include_qkv_bias": cfg.qkv_bias,
            "weight_tying": cfg.tie_embeddings,
            "block_type": "llama",
            "layer_norm_type": "rms",
            "activation_type": "silu",
            "rope": True,
            "alibi": False,
            "mask_token_id": info.mask_id,
            "eos_token_id": info.eos_id,
            "pad_token_id": info.pad_id,
        }
