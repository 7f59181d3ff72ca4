from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from unmask.core.backbones import TransformerConfig
from unmask.core.config import config_from_dict
from unmask.core.registry import Registry
from unmask.decoders import SamplingParams, build_policy
from unmask.train.text import TextTrainConfig


def test_unknown_config_key_is_named():
    with pytest.raises(ValueError, match=r"unknown TextTrainConfig key\(s\) \['setps'\].*valid keys"):
        config_from_dict(TextTrainConfig, {"setps": 10}, where="recipe.yaml")
    with pytest.raises(ValueError, match=r"unknown ThresholdConfig key\(s\) \['tau'\]"):
        build_policy("threshold", {"tau": 0.5})


def test_config_values_validated():
    with pytest.raises(ValueError, match="threshold must be in"):
        build_policy("threshold", {"threshold": 1.5})
    with pytest.raises(ValueError, match="not divisible by num_heads"):
        TransformerConfig(vocab_size=8, hidden_size=30, num_layers=1, num_heads=4, num_kv_heads=4,
                          intermediate_size=8)
    with pytest.raises(ValueError, match="multiple of block_length"):
        SamplingParams(gen_length=30, block_length=8)
    with pytest.raises(ValueError, match="number of blocks"):
        SamplingParams(gen_length=32, block_length=8, steps=6)
    with pytest.raises(ValueError, match="unknown task"):
        TextTrainConfig(tasks=["add", "poetry"])


def test_registry_lazy_and_unknown():
    reg: Registry[type] = Registry("widget")
    reg.register_lazy("od", "collections:OrderedDict")
    reg.register("d")(dict)
    assert reg.get("od").__name__ == "OrderedDict" and reg.names() == ["d", "od"]
    with pytest.raises(KeyError, match="unknown widget 'x'; known widget names: d, od"):
        reg.get("x")
    with pytest.raises(ValueError, match="registered twice"):
        reg.register("d")(list)
    with pytest.raises(KeyError, match="unknown policy 'nope'.*low_confidence"):
        build_policy("nope")


def test_core_imports_stay_light():
    code = textwrap.dedent("""
        import sys
        import unmask, unmask.core, unmask.core.checkpoint, unmask.decoders
        heavy = sorted(m for m in ("ray", "transformers") if m in sys.modules)
        print(",".join(heavy))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"light modules imported {out.stdout.strip()}"
