"""The shipped reference model through the full text pipeline."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from unmask.decoders import SamplingParams
from unmask.modalities.text.tasks import TASKS, held_out, is_held_out, stream
from unmask.pipelines.eval_text import evaluate

# Floors set below what the shipped model measured on these 84 held-out prompts (exact match 0.25, token
# accuracy 0.66, story token accuracy 0.94, threshold TPF 9.1; chance is ~0.01): a broken decoder, loader or
# tokenizer falls through them.
FLOOR_EXACT_MATCH = 0.15
FLOOR_TOKEN_ACCURACY = 0.55


def test_held_out_split_is_disjoint():
    gen = stream("train", 0)
    train = {next(gen).prompt for _ in range(3000)}
    test = held_out(20)
    assert {it.task for it in test} == set(TASKS) and len(test) == 20 * len(TASKS)
    assert not train & {it.prompt for it in test}
    assert all(is_held_out(it.prompt) for it in test) and not any(map(is_held_out, train))


def test_shipped_model_accuracy(tiny_text):
    items = held_out(12)
    r = evaluate(tiny_text, SamplingParams(gen_length=32), "low_confidence", items=items, batch_size=42)
    assert r["accuracy"] >= FLOOR_EXACT_MATCH and r["token_accuracy"] >= FLOOR_TOKEN_ACCURACY, r
    assert r["token_accuracy_per_task"]["story"] >= 0.85, r
    assert r["nfe"] <= 32
    fast = evaluate(tiny_text, SamplingParams(gen_length=32), "threshold", items=items, batch_size=42)
    assert fast["accuracy"] >= FLOOR_EXACT_MATCH and fast["token_accuracy"] >= FLOOR_TOKEN_ACCURACY, fast
    assert fast["tpf"] > 6, "threshold decoding should commit several tokens per forward on this model"


def test_batch_invariance(tiny_text):
    prompts = ["47+385=", "sort: 9 2 7 4 1", "Tell a story about Leo the fox, a red kite and the hill.", "copy: q r s"]
    params = SamplingParams(gen_length=32, block_length=8, steps=32)
    together = tiny_text.generate(prompts, params)
    for p, batched in zip(prompts, together, strict=True):
        alone = tiny_text.generate([p], params)[0]
        assert alone.token_ids == batched.token_ids, p


def test_bad_prompts_are_named(tiny_text):
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        tiny_text.generate(["1+1=", "   "])
    with pytest.raises(ValueError, match="exceeds the model's context of 512"):
        tiny_text.generate(["1+1=", "copy: " + "a " * 400], SamplingParams(gen_length=128))


def test_chat_template_applied(tiny_text):
    tok = tiny_text.tokenizer
    assert tok.format_prompt("2+2=") == "<|user|>2+2=<|assistant|>"
    assert tok.format_prompt("2+2=", use_chat_template=False) == "2+2="


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "unmask.cli", *args], capture_output=True, text=True, timeout=900)


def test_cli_generate_and_errors():
    ok = _cli("generate", "--model", "tiny-text", "--prompt", "copy: a b c", "--policy", "threshold")
    assert ok.returncode == 0, ok.stderr
    assert "> copy: a b c" in ok.stdout and "tokens/forward" in ok.stdout
    bad = _cli("generate", "--model", "tiny-text", "--prompt", "x", "--policy", "fastest")
    assert bad.returncode == 2 and "unknown policy 'fastest'" in bad.stderr and "low_confidence" in bad.stderr
    missing = _cli("generate", "--model", "/nonexistent/ckpt", "--prompt", "x")
    assert missing.returncode == 2 and "never downloads" in missing.stderr
    models = _cli("models")
    assert models.returncode == 0 and "tiny-text" in models.stdout and "llada" in models.stdout


def test_training_recipe_runs(tmp_path):
    from unmask.pipelines.generate import TextGenerator
    from unmask.train.text import TextTrainConfig, train

    cfg = TextTrainConfig(out_dir=str(tmp_path), hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64,
                          steps=4, batch_size=4, save_every=2, warmup=2)
    out = train(cfg)
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    assert (out / "train_log.jsonl").exists() and (out / "loss.png").is_file()
    gen = TextGenerator.from_pretrained(out)
    assert gen.runner.info.family == "llada"
    assert len(gen.generate(["1+2="], SamplingParams(gen_length=8))) == 1


def test_random_shape_models():
    from unmask.core.backbones import Transformer, TransformerConfig
    from unmask.core.models import random_shape
    from unmask.pipelines.generate import TextGenerator

    fields, mask_id = random_shape("random:llada-8b")
    with torch.device("meta"):
        n = sum(p.numel() for p in Transformer(TransformerConfig(**fields)).parameters())
    assert 7.9e9 < n < 8.1e9 and mask_id == 126336, n  # LLaDA-8B: about 8.0B parameters
    gen = TextGenerator.from_pretrained("random:llada-tiny")
    outs = gen.generate(["12+34=", "copy: a b"], SamplingParams(gen_length=16, block_length=8, steps=8))
    # a random model never ends early: NFE is the step budget, whatever it predicts
    assert [o.nfe for o in outs] == [8, 8] and all(len(o.token_ids) == 16 for o in outs)
    with pytest.raises(ValueError, match="unknown random model shape 'gpt5'; known shapes: llada-8b, llada-tiny"):
        TextGenerator.from_pretrained("random:gpt5")


def test_random_backbone_is_built_in_its_dtype():
    from unmask.core.backbones import TransformerConfig
    from unmask.core.checkpoint import random_backbone
    from unmask.core.models import random_shape

    fields, _ = random_shape("random:llada-tiny")
    half = random_backbone(TransformerConfig(**fields), seed=3, dtype=torch.bfloat16)
    full = random_backbone(TransformerConfig(**fields), seed=3)
    assert {p.dtype for p in half.parameters()} == {torch.bfloat16} and torch.get_default_dtype() == torch.float32
    # same draws whatever the dtype: the bf16 model is the float32 one rounded
    for (name, a), b in zip(half.named_parameters(), full.parameters(), strict=True):
        assert torch.equal(a, b.to(torch.bfloat16)), name
