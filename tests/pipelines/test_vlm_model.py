"""The shipped ``tiny-vlm``: it loads from the package, reads the image where it has learnt to (colour questions, and
the cells and colours its descriptions state: right far more often with the scene's own image than with
another scene's, and still with 35% of the image tokens after layer 0), and keeps its measured accuracy on the
shipped held-out sample."""

from __future__ import annotations

from unmask.decoders.pruning import PruneConfig
from unmask.modalities.vision.model import load_vlm
from unmask.modalities.vision.scenes import make_item
from unmask.pipelines.vlm_eval import EvalOptions, VLMEvaluator, sample_manifest, shuffle_images


def _held_out(tmp_path, task: str, n: int, kind: str | None = None) -> list[dict]:
    from PIL import Image

    records, i = [], 0
    while len(records) < n:
        item, image = make_item(task, "test", i)
        i += 1
        if kind is None or item.kind == kind:
            path = tmp_path / f"{item.id}.png"
            Image.fromarray(image).save(path)
            records.append(item.record(str(path)))
    return records


def test_tiny_vlm_reads_colours_from_its_images(tmp_path):
    assert load_vlm("tiny-vlm").layout == "llava_llada"
    records = _held_out(tmp_path, "short", 32, "color")  # "what color is the circle?"
    ev = VLMEvaluator.from_pretrained("tiny-vlm")
    own, _ = ev.run("short", records, None, EvalOptions(batch_size=16))
    other, _ = ev.run("short", shuffle_images(records), None, EvalOptions(batch_size=16))
    # measured 0.781 with the right images, 0.031 with shuffled ones (chance 0.2; stop 20's model: 0.844 / 0.031)
    assert own["accuracy"] >= 0.65 and other["accuracy"] <= 0.25, (own["accuracy"], other["accuracy"])


def test_tiny_vlm_short_answer_floor():
    from unmask.modalities.vision.scenes import read_split

    ev = VLMEvaluator.from_pretrained("tiny-vlm")
    row, _ = ev.run("short", read_split(sample_manifest(), tasks=["short"]), None, EvalOptions(batch_size=16))
    assert row["items"] == 48 and row["accuracy"] >= 0.45, row["accuracy"]  # measured 0.5417 (stop 19: 0.4375)


def test_tiny_vlm_describes_what_is_where(tmp_path):
    records = _held_out(tmp_path, "long", 16)  # "describe the image.", 53 objects
    ev = VLMEvaluator.from_pretrained("tiny-vlm")
    own, _ = ev.run("long", records, None, EvalOptions(batch_size=8))
    other, _ = ev.run("long", shuffle_images(records), None, EvalOptions(batch_size=8))
    pruned, _ = ev.run("long", records, PruneConfig.parse("fastv:layer=0,ratio=0.35"), EvalOptions(batch_size=8))
    got = {a: (own["by_attribute"][a]["accuracy"], other["by_attribute"][a]["accuracy"]) for a in ("cell", "color")}
    # measured: cells named 1.0 / 0.528 (own / shuffled images), colours stated at them 0.667 / 0.111, whole
    # clauses 0.362 / 0.016; with 50 of the 144 image tokens after layer 0 (1.47-1.58x faster on this CPU) clauses
    # 0.455, colours 0.711 (the model shipped at stop 20, trained unpruned, lost 12 points on the 200 held-out
    # under this setting)
    assert got["cell"][0] >= 0.85 and got["cell"][1] <= 0.75, got
    assert got["color"][0] >= 0.5 and got["color"][1] <= 0.25, got
    assert own["accuracy"] >= 0.2 and other["accuracy"] <= 0.05, (own["accuracy"], other["accuracy"])
    kept = pruned["by_attribute"]["color"]["accuracy"]
    assert pruned["accuracy"] >= max(0.3, own["accuracy"] - 0.05) and kept >= 0.5, (pruned["accuracy"], kept)
