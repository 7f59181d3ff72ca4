"""Offline speech synthesis for the ASR reference data: Debian's ``flite`` and ``espeak-ng`` voices, varied with
``sox`` (tempo, gain) and additive noise, written as WebDataset shards of ``.flac`` + ``.json``.

Voices are split: the held-out voices never speak a training sentence, and held-out sentences
(:func:`corpus.is_held_out`) never appear in training. Install the tools with
``apt-get install flite espeak-ng sox`` (``make data-speech`` does it).
"""

from __future__ import annotations

import io
import json
import random
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .corpus import sentences

SAMPLE_RATE = 16_000
FLITE_VOICES = ["kal", "kal16", "awb", "rms", "slt"]
ESPEAK_VOICES = ["en-us", "en-gb", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-us-nyc", "en-029",
                 "en-gb-scotland"]
ESPEAK_VARIANTS = ["", "+m1", "+m3", "+m5", "+f1", "+f2", "+f4"]
TEST_VOICES = {"flite:slt", "espeak:en-gb-scotland"}
"""Voices that only speak held-out sentences."""


def voices(split: str) -> list[str]:
    all_ = [f"flite:{v}" for v in FLITE_VOICES] + [f"espeak:{v}" for v in ESPEAK_VOICES]
    return [v for v in all_ if (v in TEST_VOICES) == (split == "test")]


def check_tools() -> None:
    missing = [t for t in ("flite", "espeak-ng", "sox") if shutil.which(t) is None]
    if missing:
        raise RuntimeError(f"speech synthesis needs {', '.join(missing)}: run `apt-get install flite espeak-ng sox`")


@dataclass(frozen=True)
class Utterance:
    key: str
    text: str
    voice: str
    tempo: float
    gain_db: float
    snr_db: float
    seed: int


def _tts(u: Utterance, rng: random.Random, wav: str) -> None:
    engine, name = u.voice.split(":", 1)
    if engine == "flite":
        cmd = ["flite", "-voice", name, "-t", u.text, "-o", wav]
    else:
        variant = rng.choice(ESPEAK_VARIANTS)
        cmd = ["espeak-ng", "-v", name + variant, "-s", str(rng.randint(130, 190)), "-p", str(rng.randint(25, 75)),
               "-w", wav, u.text]
    subprocess.run(cmd, check=True, capture_output=True)


def render(u: Utterance) -> bytes:
    """FLAC bytes (16 kHz mono) of one utterance."""
    import soundfile as sf

    rng = random.Random(u.seed)
    with tempfile.TemporaryDirectory() as tmp:
        wav = f"{tmp}/tts.wav"
        _tts(u, rng, wav)
        out = subprocess.run(
            ["sox", wav, "-t", "wav", "-r", str(SAMPLE_RATE), "-c", "1", "-b", "16", "-", "tempo", f"{u.tempo:.3f}",
             "gain", f"{u.gain_db:.1f}"],
            check=True, capture_output=True,
        ).stdout
    audio, _ = sf.read(io.BytesIO(out), dtype="float32")
    power = float(np.mean(audio**2)) + 1e-12
    noise = np.random.default_rng(u.seed).standard_normal(audio.shape).astype(np.float32)
    audio = audio + noise * np.sqrt(power / 10 ** (u.snr_db / 10))
    peak = np.abs(audio).max()
    if peak > 0.99:
        audio *= 0.99 / peak
    buf = io.BytesIO()
    sf.write(buf, audio, SAMPLE_RATE, format="FLAC")
    return buf.getvalue()


def plan(n: int, split: str, seed: int) -> list[Utterance]:
    rng = random.Random(seed * 7919 + (split == "test"))
    vs = voices(split)
    return [
        Utterance(f"{split}-{i:06d}", text, vs[i % len(vs)], rng.uniform(0.85, 1.15), rng.uniform(-8, 2),
                  rng.uniform(12, 40), rng.randrange(2**31))
        for i, text in enumerate(sentences(n, split, seed))
    ]


def _one(u: Utterance) -> tuple[Utterance, bytes | None, str | None]:
    try:
        return u, render(u), None
    except subprocess.CalledProcessError as e:
        return u, None, f"{e.cmd[0]} failed: {e.stderr.decode(errors='replace')[:200]}"


def write_shards(utts: list[Utterance], out_dir: str | Path, prefix: str, per_shard: int = 500, workers: int = 2,
                 progress: bool = True) -> list[Path]:
    """Render ``utts`` in ``workers`` processes into ``out_dir/prefix-NNNNNN.tar`` shards."""
    import multiprocessing as mp

    import webdataset as wds
    from tqdm import tqdm

    check_tools()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pattern = str(out_dir / f"{prefix}-%06d.tar")
    with mp.get_context("spawn").Pool(workers) as pool, wds.ShardWriter(pattern, maxcount=per_shard, verbose=0) as w:
        for u, flac, err in tqdm(pool.imap(_one, utts, chunksize=8), total=len(utts), desc=f"synth {prefix}",
                                 disable=not progress):
            if err:
                raise RuntimeError(f"could not synthesize {u.key} ({u.voice}): {err}")
            meta = {"text": u.text, "voice": u.voice, "tempo": round(u.tempo, 3), "gain_db": round(u.gain_db, 1),
                    "snr_db": round(u.snr_db, 1)}
            w.write({"__key__": u.key, "flac": flac, "json": json.dumps(meta).encode()})
    return sorted(out_dir.glob(f"{prefix}-*.tar"))
