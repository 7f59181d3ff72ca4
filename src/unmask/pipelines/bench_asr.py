"""``unmask bench asr``: WER/CER, real-time factor and decoder forwards of each ASR method on the same held-out
clips, side by side in one run: ``from_mask``, ``prior_guided``, ``ctc`` (ours) and ``faster_whisper`` (Whisper
tiny.en decoding autoregressively, greedy, with faster-whisper on the same CPU threads)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from ..modalities.audio.frontend import load_audio
from ..modalities.audio.shards import iter_shards
from .transcribe import DecodeOptions, Transcriber, error_rates

METHODS = ("from_mask", "prior_guided", "ctc", "faster_whisper")


def load_clips(shards: list[str | Path], limit: int | None = None) -> list[tuple[str, object, str]]:
    clips = []
    for c in iter_shards(shards):
        clips.append((c.key, load_audio(c.audio, c.key), c.text or ""))
        if limit and len(clips) >= limit:
            break
    return clips


def run_method(method: str, clips, model: Transcriber | None, batch_size: int, threads: int,
               options: DecodeOptions | None = None) -> dict:
    audio_s = sum(len(a) for _, a, _ in clips) / 16000
    hyps: list[str] = []
    nfe = 0
    t0 = time.perf_counter()
    if method == "faster_whisper":
        from faster_whisper import WhisperModel

        from ..modalities.audio.encoder import tiny_en_path

        fw = WhisperModel(str(tiny_en_path()), device="cpu", compute_type="float32", cpu_threads=threads)
        t0 = time.perf_counter()  # loading is not transcription
        for _, a, _ in clips:
            segs, _ = fw.transcribe(a, language="en", beam_size=1, without_timestamps=True,
                                    condition_on_previous_text=False, vad_filter=False)
            hyps.append(" ".join(s.text.strip() for s in segs))
        nfe = None
    else:
        o = options or DecodeOptions(method=method)
        for i in range(0, len(clips), batch_size):
            outs = model.transcribe([a for _, a, _ in clips[i : i + batch_size]], o)
            hyps += [x.text for x in outs]
            nfe += sum(x.nfe for x in outs)
        nfe = round(nfe / len(clips), 2)
    wall = time.perf_counter() - t0
    return {"method": method, **error_rates([r for _, _, r in clips], hyps), "rtf": round(wall / audio_s, 4),
            "nfe": nfe, "wall_s": round(wall, 2), "clips": len(clips), "audio_s": round(audio_s, 1),
            "examples": [{"ref": clips[i][2], "hyp": hyps[i]} for i in range(min(3, len(clips)))]}


def run(shards: list[str | Path], model: str = "tiny-asr", methods=METHODS, limit: int | None = None,
        batch_size: int = 1, threads: int | None = None) -> dict:
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise ValueError(f"unknown ASR method(s) {unknown}; choose from {', '.join(METHODS)}")
    if threads:
        torch.set_num_threads(threads)
    threads = torch.get_num_threads()
    clips = load_clips(shards, limit)
    if not clips:
        raise ValueError(f"no clips in {shards}")
    asr = Transcriber.from_pretrained(model)
    asr.transcribe([clips[0][1]], DecodeOptions(method="from_mask"))  # warm-up
    results = [run_method(m, clips, asr, batch_size, threads) for m in methods]
    return {"device": f"cpu ({threads} threads)", "model": model, "clips": len(clips), "batch_size": batch_size,
            "results": results}


def markdown(report: dict) -> str:
    lines = ["| method | WER | CER | RTF | NFE |", "|---|---|---|---|---|"]
    for r in report["results"]:
        nfe = "—" if r["nfe"] is None else f"{r['nfe']:.2f}"
        lines.append(f"| {r['method']} | {r['wer']:.3f} | {r['cer']:.3f} | {r['rtf']:.4f} | {nfe} |")
    return "\n".join(lines) + "\n"


def main(shards, model, methods, limit, batch_size, as_json: bool) -> dict:
    report = run(shards, model, methods, limit, batch_size)
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        print(markdown(report))
    return report
