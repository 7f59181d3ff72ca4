"""Vision-language layouts whose language model the shared ``Transformer`` runs.

* ``llava_llada`` (LLaDA-V, GSAI-ML/LLaDA-V): LLaVA-NeXT code around a Llama-layout LLaDA
  (``model.layers.N.self_attn.q_proj`` …, in-place logits, mask id 126336);
* ``dream_vl`` (Dream-VL style): a Qwen2-layout Dream language model (q/k/v biases, shifted logits) whose prompt
  carries an image placeholder token expanded to the image's embeddings.

The vision tower and projector weights of these checkpoints are read by ``unmask.modalities.vision``.
"""

from __future__ import annotations

from typing import Any

from .base import BackboneInfo, require
from .dream import DreamFamily
from .transformer import TransformerConfig


class LLaVALLaDAFamily(DreamFamily):
    name = "llava_llada"
    shift_logits = False
    default_mask_id = 126336

    @classmethod
    def matches(cls, raw: dict[str, Any]) -> bool:
        return str(raw.get("model_type", "")).lower() == "llava_llada"

    @classmethod
    def transformer_config(cls, raw: dict[str, Any]) -> TransformerConfig:
        heads = int(require(raw, "num_attention_heads", cls.name))
        return TransformerConfig(
            vocab_size=int(require(raw, "vocab_size", cls.name)),
            hidden_size=int(require(raw, "hidden_size", cls.name)),
            num_layers=int(require(raw, "num_hidden_layers", cls.name)),
            num_heads=heads,
            num_kv_heads=int(raw.get("num_key_value_heads") or heads),
            intermediate_size=int(require(raw, "intermediate_size", cls.name)),
            rope_theta=float(raw.get("rope_theta", 500000.0)),
            rms_norm_eps=float(raw.get("rms_norm_eps", 1e-5)),
            qkv_bias=bool(raw.get("attention_bias", False)),
            tie_embeddings=bool(raw.get("tie_word_embeddings", False)),
            max_position_embeddings=int(raw.get("max_position_embeddings", 8192)),
        )

    @classmethod
    def hf_config(cls, cfg: TransformerConfig, info: BackboneInfo) -> dict[str, Any]:
        base = super().hf_config(cfg, info)
        return base | {"architectures": ["LlavaLLaDAModelLM"], "model_type": "llava_llada",
                       "attention_bias": cfg.qkv_bias}


class DreamVLFamily(DreamFamily):
    name = "dream_vl"

    @classmethod
    def matches(cls, raw: dict[str, Any]) -> bool:
        return str(raw.get("model_type", "")).lower() == "dream_vl"

    @classmethod
    def hf_config(cls, cfg: TransformerConfig, info: BackboneInfo) -> dict[str, Any]:
        return super().hf_config(cfg, info) | {"architectures": ["DreamVLModel"], "model_type": "dream_vl"}
