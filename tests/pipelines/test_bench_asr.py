"""``unmask bench asr`` on a few shipped clips: every method, every field, valid JSON."""

from __future__ import annotations

import json

from unmask.cli import main
from unmask.pipelines.sample_data import speech_sample_shards


def test_bench_asr_quick_json(capsys, random_asr_dir):
    shards = str(speech_sample_shards()[0])
    assert main(["bench", "asr", "--model", str(random_asr_dir), "--shards", shards, "--limit", "3", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [r["method"] for r in report["results"]] == ["from_mask", "prior_guided", "ctc", "faster_whisper"]
    for r in report["results"]:
        assert {"method", "wer", "cer", "rtf", "nfe"} <= set(r) and r["rtf"] > 0 and r["clips"] == 3
    fw = report["results"][-1]
    assert fw["nfe"] is None and fw["wer"] < 1.0  # Whisper tiny.en really transcribes the clips
    assert main(["bench", "asr", "--model", str(random_asr_dir), "--shards", shards, "--methods", "beam"]) == 2
