"""``unmask train asr`` end to end at toy size: features cached from shards, both losses fall, the checkpoint
loads into the Transcriber."""

from __future__ import annotations

import json
import shutil

from unmask.pipelines.sample_data import speech_sample_shards
from unmask.pipelines.transcribe import DecodeOptions, Transcriber
from unmask.train.asr import main


def test_train_asr_tiny_run_writes_a_loadable_checkpoint(tmp_path):
    data = tmp_path / "speech"
    data.mkdir()
    for i, s in enumerate(speech_sample_shards()):
        shutil.copy(s, data / f"train-{i:06d}.tar")
    out = main(None, {"data_dir": str(data), "out_dir": str(tmp_path / "asr"), "hidden_size": 32, "num_layers": 1,
                      "num_heads": 2, "intermediate_size": 64, "vocab_size": 300, "steps": 30, "batch_size": 8,
                      "warmup": 5, "save_every": 30, "lr": 3e-3})
    assert (data / "feats-train.pt").is_file()
    log = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 30 and log[-1]["ctc"] < log[0]["ctc"] and log[-1]["diffusion"] < log[0]["diffusion"]
    asr = Transcriber.from_pretrained(out)
    from unmask.modalities.audio.frontend import load_audio
    from unmask.modalities.audio.shards import iter_shards

    clip = next(iter_shards(speech_sample_shards()))
    res = asr.transcribe([load_audio(clip.audio)], DecodeOptions(method="from_mask", gen_length=8))
    assert res[0].nfe >= 1
