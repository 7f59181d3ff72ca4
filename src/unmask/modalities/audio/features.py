"""Frozen-encoder features, computed once: Whisper tiny.en encoder states (50 a second) of each clip."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import torch

from .encoder import WhisperEncoder
from .frontend import SAMPLE_RATE, frames_for, load_audio, log_mel


@torch.inference_mode()
def encode_batch(encoder: WhisperEncoder, audios: list) -> list[torch.Tensor]:
    """Encoder states ``[frames_i, D]`` of each 16 kHz clip; clips of equal padded length run together."""
    out: list[torch.Tensor | None] = [None] * len(audios)
    by_len: dict[int, list[int]] = defaultdict(list)
    for i, a in enumerate(audios):
        by_len[max(1, -(-len(a) // SAMPLE_RATE))].append(i)
    for _, idx in sorted(by_len.items()):
        mel = torch.stack([log_mel(audios[i]) for i in idx])
        h = encoder(mel.to(encoder.conv1.weight.device))
        for j, i in enumerate(idx):
            out[i] = h[j, : frames_for(len(audios[i]))].clone()
    return out


def precompute(shards: list[str | Path], encoder: WhisperEncoder, out_file: str | Path, batch: int = 32,
               progress: bool = True) -> dict:
    """Write ``{"keys", "texts", "feats" (float16 [T_i, D]), "seconds"}`` of every clip in ``shards``."""
    from tqdm import tqdm

    from .shards import iter_shards

    keys, texts, feats, secs = [], [], [], []
    pending: list = []

    def flush() -> None:
        hs = encode_batch(encoder, [a for _, _, a in pending])
        for (k, t, a), h in zip(pending, hs, strict=True):
            keys.append(k)
            texts.append(t)
            feats.append(h.half())
            secs.append(len(a) / SAMPLE_RATE)
        pending.clear()

    for clip in tqdm(iter_shards(shards), desc="encode", disable=not progress, mininterval=5):
        pending.append((clip.key, clip.text, load_audio(clip.audio, clip.key)))
        if len(pending) >= batch:
            flush()
    if pending:
        flush()
    data = {"keys": keys, "texts": texts, "feats": feats, "seconds": secs}
    torch.save(data, out_file)
    return data
