"""Every shipped recipe file parses into its recipe (an unknown or misspelt key fails here, not an hour into a run),
and every later phase continues from an earlier phase's output rather than from the shipped weights it produced."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from unmask.train.asr import AsrTrainConfig
from unmask.train.common import load_recipe
from unmask.train.text import TextTrainConfig
from unmask.train.vla import VlaTrainConfig
from unmask.train.vlm import VlmTrainConfig

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / "configs").glob("train_*.yaml"))
RECIPES = {"asr": AsrTrainConfig, "text": TextTrainConfig, "vla": VlaTrainConfig, "vlm": VlmTrainConfig}


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_recipe_file_parses(path):
    kind = path.stem.split("_")[1]
    cfg = load_recipe(RECIPES[kind], str(path))
    assert cfg.out_dir.startswith("runs/"), cfg.out_dir
    if "_phase" not in path.stem:
        return
    outs = {load_recipe(RECIPES[kind], str(p)).out_dir for p in CONFIGS if p.stem.split("_")[1] == kind}
    if cfg.init_from in outs:
        return
    # continuing shipped weights is fine unless this very recipe produced them (it would train on its own output)
    shipped = json.loads((ROOT / cfg.init_from / "config.json").read_text())
    assert shipped["unmask_recipe"]["out_dir"] != cfg.out_dir, f"{path.name} continues its own output {cfg.init_from}"


def test_there_are_recipe_files():
    assert {p.stem.split("_")[1] for p in CONFIGS} == set(RECIPES)
