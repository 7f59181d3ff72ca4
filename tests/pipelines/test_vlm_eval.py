"""VLM evaluation pipeline end to end on a few held-out items: JSON fields, predictions, pruning settings, the sweep
plot, and bad images recorded without losing the rest of the batch."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from unmask.decoders.pruning import PruneConfig
from unmask.modalities.vision.scenes import question_kind, read_split, write_split
from unmask.pipelines.vlm_eval import SWEEP, EvalOptions, VLMEvaluator

FIELDS = {"task", "prune", "accuracy", "latency_s", "nfe", "visual_tokens"}


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    return write_split(tmp_path_factory.mktemp("vision"), "test", 3)


def test_every_task_runs_and_reports(small_vlm_dir, manifest):
    ev = VLMEvaluator.from_pretrained(small_vlm_dir)
    records = read_split(manifest)
    for task in ("short", "mc", "mc_elbo", "long"):
        row, preds = ev.run(task, records, None, EvalOptions(batch_size=2, elbo_samples=2))
        assert FIELDS <= set(row) and row["items"] == 3 and row["errors"] == 0 and len(preds) == 3
        assert 0.0 <= row["accuracy"] <= 1.0 and row["nfe"] >= 1 and row["visual_tokens"] == 36
        if task == "mc_elbo":
            assert row["nfe"] == 4 * 2 and all(p["prediction"] in "ABCD" for p in preds)
        if task == "short":  # accuracy per kind of question, weighted back to the task's accuracy
            kinds = row["by_kind"]
            assert sum(k["items"] for k in kinds.values()) == 3
            assert sum(k["accuracy"] * k["items"] for k in kinds.values()) == pytest.approx(3 * row["accuracy"])
            assert set(kinds) == {question_kind("short", p["question"]) for p in preds}
        else:
            assert "by_kind" not in row
        if task == "long":  # the parts of each clause: one count per object and attribute, within [0, 1]
            objects = sum(len(r["objects"]) for r in records if r["task"] == "long")
            attrs = row["by_attribute"]
            assert attrs["cell"]["objects"] == attrs["kind"]["objects"] == objects
            assert all(0.0 <= a["accuracy"] <= 1.0 for a in attrs.values())
        else:
            assert "by_attribute" not in row
    row, _ = ev.run("long", records, PruneConfig.parse("fastv:layer=0,ratio=0.25"), EvalOptions(batch_size=3))
    assert row["prune"].startswith("fastv:layer=0,ratio=0.25") and row["visual_tokens"] == 9
    row, _ = ev.run("short", records, PruneConfig.parse("vtw:layer=1"))
    assert row["visual_tokens"] == 0


def test_ratio_one_pruning_gives_the_unpruned_predictions(small_vlm_dir, manifest):
    ev = VLMEvaluator.from_pretrained(small_vlm_dir)
    records = read_split(manifest, tasks=["long"])
    _, ref = ev.run("long", records)
    _, got = ev.run("long", records, PruneConfig.parse("fastv:layer=1,ratio=1.0,schedule=late,start=1"))
    assert [p["prediction"] for p in ref] == [p["prediction"] for p in got]


def test_interleaved_settings_match_separate_runs(small_vlm_dir, manifest):
    """The sweep decodes each batch under every setting in turn; answers and counts equal one run per setting."""
    ev = VLMEvaluator.from_pretrained(small_vlm_dir)
    records = read_split(manifest, tasks=["long"])
    prunes = [None, PruneConfig.parse("fastv:layer=0,ratio=0.25"), PruneConfig.parse("vtw:layer=1")]
    opts = EvalOptions(batch_size=2)
    together = ev.run_settings("long", records, prunes, opts)
    assert [row["prune"] for row, _ in together] == ["none", prunes[1].name, "vtw:layer=1"]
    for (row, preds), prune in zip(together, prunes, strict=True):
        alone, alone_preds = ev.run("long", records, prune, opts)
        assert [p["prediction"] for p in preds] == [p["prediction"] for p in alone_preds]
        keys = ("items", "nfe", "visual_tokens")
        assert [row[k] for k in keys] == [alone[k] for k in keys]
    assert ev.runner.pruner is None


def test_bad_images_become_error_records(small_vlm_dir, manifest, tmp_path):
    records = read_split(manifest, tasks=["short"])
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"garbage")
    records[1] = records[1] | {"image": str(broken)}
    row, preds = VLMEvaluator.from_pretrained(small_vlm_dir).run("short", records, None, EvalOptions(batch_size=3))
    assert row["items"] == 2 and row["errors"] == 1
    err = [p for p in preds if "error" in p]
    assert len(err) == 1 and "broken.png: not a readable image" in err[0]["error"]


def test_cli_sweep_json_and_plot(small_vlm_dir, manifest, tmp_path):
    out = subprocess.run([sys.executable, "-m", "unmask.cli", "eval-vlm", "--model", str(small_vlm_dir), "--data",
                          str(manifest), "--tasks", "short,long", "--sweep", "--blind", "--limit", "2", "--out",
                          str(tmp_path), "--json"], capture_output=True, text=True, check=True).stdout
    report = json.loads(out)
    prunes = {r["prune"] for r in report["results"]}
    settings = 1 + len(SWEEP)  # none, then every pruning setting (fastv, vtw and divprune among them)
    assert "none" in prunes and len(prunes) == settings and all(FIELDS <= set(r) for r in report["results"])
    assert {p.split(":")[0] for p in prunes} == {"none", "fastv", "vtw", "divprune"}
    blind = [r for r in report["results"] if r["images"] == "shuffled"]
    assert [(r["task"], r["prune"]) for r in blind] == [("short", "none"), ("long", "none")]
    assert sum(r["images"] == "own" for r in report["results"]) == 2 * settings
    assert (tmp_path / "sweep.png").stat().st_size > 10_000
    preds = [json.loads(x) for x in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert len(preds) == 2 * 2 * (settings + 1) and sum(p["images"] == "shuffled" for p in preds) == 2 * 2


def test_cli_repeated_prune_compares_settings_side_by_side(small_vlm_dir, manifest, tmp_path):
    out = subprocess.run([sys.executable, "-m", "unmask.cli", "eval-vlm", "--model", str(small_vlm_dir), "--data",
                          str(manifest), "--tasks", "long", "--prune", "none", "--prune",
                          "divprune:layer=0,ratio=0.5", "--limit", "2", "--out", str(tmp_path), "--json"],
                         capture_output=True, text=True, check=True).stdout
    rows = json.loads(out)["results"]
    assert [(r["task"], r["prune"]) for r in rows] == [("long", "none"), ("long", "divprune:layer=0,ratio=0.5,"
                                                                             "schedule=first")]
    assert rows[0]["visual_tokens"] == 36 and rows[1]["visual_tokens"] == 18 and "plot" not in json.loads(out)


def test_shuffle_images_gives_each_question_another_scene_of_its_task(manifest):
    from unmask.pipelines.vlm_eval import shuffle_images

    records = read_split(manifest)
    shuffled = shuffle_images(records)
    assert [r | {"image": None} for r in shuffled] == [r | {"image": None} for r in records]
    for task in ("short", "mc", "long"):
        own = [r["image"] for r in records if r["task"] == task]
        other = [r["image"] for r in shuffled if r["task"] == task]
        assert sorted(own) == sorted(other) and all(a != b for a, b in zip(own, other, strict=True))


def test_prune_layer_outside_the_model_is_refused_before_work(small_vlm_dir, manifest):
    from unmask.pipelines.vlm_eval import evaluate

    with pytest.raises(ValueError, match="layer 9 does not exist"):
        evaluate(str(small_vlm_dir), ["short"], manifest, ["none", "vtw:layer=9"])
