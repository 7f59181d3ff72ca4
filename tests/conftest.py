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
