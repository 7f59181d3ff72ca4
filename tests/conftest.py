from __future__ import annotations

import pytest
import torch

from unmask.core.backbones import BackboneInfo, TransformerConfig
from unmask.core.checkpoint import random_backbone
from unmask.decoders import ModelRunner

torch.set_num_threads(2)

TINY = TransformerConfig(vocab_size=64, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2,
                         intermediate_size=48, max_position_embeddings=128)
MASK_ID, EOS_ID, PAD_ID = 63, 1, 0


@pytest.fixture
def tiny_runner() -> ModelRunner:
    """A random LLaDA-shaped runner: deterministic, fast, never finishes at EOS by accident."""
    info = BackboneInfo(family="llada", mask_id=MASK_ID, eos_id=EOS_ID, pad_id=PAD_ID, shift_logits=False)
    return ModelRunner(random_backbone(TINY, seed=0), info)


@pytest.fixture(scope="session")
def tiny_text():
    from unmask.pipelines.generate import TextGenerator

    return TextGenerator.from_pretrained("tiny-text")


@pytest.fixture(scope="session")
def random_asr_dir(tmp_path_factory):
    """An ASR checkpoint in tiny-asr's layout with small random weights (structure tests, Ray job tests)."""
    from unmask.core.backbones import Transformer
    from unmask.core.checkpoint import save_backbone
    from unmask.modalities.audio.model import AdapterConfig, AudioAdapter, save_adapter
    from unmask.modalities.text.tokenizer import train_bpe
    from unmask.train.asr import tokenizer_corpus

    out = tmp_path_factory.mktemp("random-asr")
    tok = train_bpe(tokenizer_corpus()[:3000], 300, out)
    torch.manual_seed(0)
    cfg = TransformerConfig(vocab_size=tok.vocab_size, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=4,
                            intermediate_size=48, max_position_embeddings=256)
    info = BackboneInfo(family="llada", mask_id=tok.mask_id, eos_id=tok.eos_id, pad_id=tok.pad_id, shift_logits=False)
    save_backbone(Transformer(cfg), out, family="llada", info=info)
    save_adapter(AudioAdapter(AdapterConfig(384, 32, tok.vocab_size, tok.pad_id)), out, {"sep_token": "<|assistant|>"})
    return out


@pytest.fixture(scope="session")
def small_vlm_dir(tmp_path_factory):
    """A VLM written by ``unmask train vlm`` itself at toy size (40 steps; LLaDA-V layout), for pipeline tests."""
    from unmask.train.vlm import main

    out = tmp_path_factory.mktemp("small-vlm")
    return main(None, {"out_dir": str(out), "hidden_size": 32, "num_layers": 4, "num_heads": 2, "intermediate_size": 64,
                       "vocab_size": 300, "vision_hidden": 32, "vision_layers": 1, "vision_heads": 2, "patch_size": 16,
                       "steps": 40, "batch_size": 8, "warmup": 5, "save_every": 40, "lr": 3e-3,
                       "tokenizer_items": 100, "token_probe": True, "projector_rms": 0.05})
