"""The Ray batch transcription job end to end on a local Ray (2 CPUs): shards and files, bad files recorded with
reasons while every other record completes, restart without loss or duplicates, a dying worker retried."""

from __future__ import annotations

import io
import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from unmask.cluster.transcribe import resolve_inputs, run
from unmask.modalities.audio.shards import iter_shards
from unmask.pipelines.sample_data import speech_sample_shards
from unmask.pipelines.transcribe import DecodeOptions

FAST = DecodeOptions(method="prior_guided", slack=1, prior_threshold=0.0)


@pytest.fixture(scope="module")
def ray_local():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    yield
    ray.shutdown()


@pytest.fixture
def audio_dir(tmp_path):
    """Four good clips (flac, wav at 44.1 kHz stereo, ogg) and five bad files."""
    d = tmp_path / "audio"
    d.mkdir()
    clips = list(iter_shards(speech_sample_shards()))[:4]
    (d / "a.flac").write_bytes(clips[0].audio)
    x, _ = sf.read(io.BytesIO(clips[1].audio), dtype="float32")
    import torch
    import torchaudio.functional as AF

    up = AF.resample(torch.from_numpy(x), 16000, 44100).numpy()
    sf.write(d / "b.wav", np.stack([up, up], 1), 44100)
    sf.write(d / "c.ogg", sf.read(io.BytesIO(clips[2].audio), dtype="float32")[0], 16000)
    (d / "d.flac").write_bytes(clips[3].audio)
    (d / "corrupt.wav").write_bytes(b"RIFF....WAVEfmt " + bytes(range(200)))
    (d / "empty.flac").write_bytes(b"")
    sf.write(d / "silent.wav", np.zeros(16000, np.float32), 16000)
    sf.write(d / "lowrate.wav", np.sin(np.arange(4000) / 3).astype(np.float32) * 0.3, 4000)
    sf.write(d / "long.flac", np.sin(np.arange(16000 * 31) / 5).astype(np.float32) * 0.3, 16000)
    return d


def test_resolve_inputs_names_what_is_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="matches nothing"):
        resolve_inputs(str(tmp_path / "nope-*.flac"))
    srcs = resolve_inputs([str(p) for p in speech_sample_shards()])
    assert [s["kind"] for s in srcs] == ["shard", "shard"]


def test_files_with_bad_records_and_restart(ray_local, audio_dir, tmp_path, random_asr_dir):
    out = tmp_path / "out"
    report = run(str(audio_dir), out, model=str(random_asr_dir), batch_size=3, options=FAST, progress=False)
    rows = [json.loads(x) for x in (out / "transcripts.jsonl").read_text().splitlines()]
    errors = {json.loads(x)["key"].rsplit("/", 1)[-1]: json.loads(x)["error"]
              for x in (out / "errors.jsonl").read_text().splitlines()}
    assert sorted(r["key"].rsplit("/", 1)[-1] for r in rows) == ["a.flac", "b.wav", "c.ogg", "d.flac"]
    assert set(errors) == {"corrupt.wav", "empty.flac", "silent.wav", "lowrate.wav", "long.flac"}
    assert "not readable" in errors["corrupt.wav"] and "empty" in errors["empty.flac"]
    assert "silent" in errors["silent.wav"] and "too low" in errors["lowrate.wav"] and "30 s" in errors["long.flac"]
    assert report["count"] == 4 and report["errors"] == 5 and report["rtf"] > 0
    assert pq.read_table(out / "transcripts.parquet").num_rows == 4
    assert {"key", "text", "confidence", "audio_s", "decode_steps", "encode_s", "decode_s"} <= set(rows[0])
    # a restart skips everything that is done and changes nothing
    again = run(str(audio_dir), out, model=str(random_asr_dir), batch_size=3, options=FAST, progress=False)
    assert again["processed_this_run"] == 0 and again["skipped_done"] == 9 and again["count"] == 4
    assert (out / "transcripts.jsonl").read_text().splitlines() == [json.dumps(r) for r in rows]


def test_shards_interrupted_run_and_dying_worker(ray_local, tmp_path, random_asr_dir):
    """Half the work is done (first shard), the restart finishes the rest with a worker that dies once on its
    first batch: every key exactly once, WER scored against the shards' references."""
    shards = speech_sample_shards()
    out = tmp_path / "out"
    first = run([str(shards[0])], out, model=str(random_asr_dir), batch_size=4, options=FAST, progress=False)
    assert first["count"] == 12
    marker = tmp_path / "crashed"
    report = run([str(s) for s in shards], out, model=str(random_asr_dir), batch_size=4, options=FAST,
                 progress=False, crash_once_marker=str(marker))
    assert marker.exists()  # the actor really died once
    keys = [json.loads(x)["key"] for x in (out / "transcripts.jsonl").read_text().splitlines()]
    assert len(keys) == len(set(keys)) == 24
    assert report["skipped_done"] == 12 and report["processed_this_run"] == 12 and report["errors"] == 0
    assert "wer" in report and report["scored"] == 24


def test_corrupt_shard_is_an_error_not_a_crash(ray_local, tmp_path, random_asr_dir):
    bad = tmp_path / "bad-000000.tar"
    bad.write_bytes(speech_sample_shards()[0].read_bytes()[:30000])  # truncated mid-member
    good = tmp_path / "good-000000.tar"
    shutil.copy(speech_sample_shards()[1], good)
    report = run([str(bad), str(good)], tmp_path / "out", model=str(random_asr_dir), batch_size=6, options=FAST,
                 progress=False)
    errs = [json.loads(x) for x in (tmp_path / "out" / "errors.jsonl").read_text().splitlines()]
    assert report["count"] == 12 and len(errs) == 1 and "corrupt shard" in errs[0]["error"]
