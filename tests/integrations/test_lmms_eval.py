"""lmms-eval's own evaluator runs our model (found through its entry point) on local tasks built from held-out data."""

from __future__ import annotations


def test_lmms_eval_runs_unmask_dvlm_on_local_tasks(small_vlm_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    from lmms_eval.evaluator import simple_evaluate
    from lmms_eval.models import get_model
    from lmms_eval.tasks import TaskManager

    from unmask.integrations.lmms_eval import UnmaskDVLM, write_tasks
    from unmask.modalities.vision.scenes import write_split

    assert get_model("unmask_dvlm") is UnmaskDVLM
    manifest = write_split(tmp_path / "data", "test", 4)
    tasks = write_tasks(tmp_path / "tasks", manifest)
    out = simple_evaluate(model="unmask_dvlm", model_args=f"pretrained={small_vlm_dir},batch_size=2,elbo_samples=2",
                          tasks=["unmask_scenes_short", "unmask_scenes_mc"], task_manager=TaskManager(
                              include_path=str(tasks)), device="cpu", log_samples=True)
    res = out["results"]
    assert 0.0 <= res["unmask_scenes_short"]["exact_match,none"] <= 1.0
    assert 0.0 <= res["unmask_scenes_mc"]["acc,none"] <= 1.0
    samples = out["samples"]["unmask_scenes_mc"]
    assert len(samples) == 4 and all(len(s["filtered_resps"]) == 4 for s in samples)
