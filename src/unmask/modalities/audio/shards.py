"""WebDataset shards of speech: ``KEY.flac`` (or .wav/.ogg) + ``KEY.json`` (``{"text": …}``), read with tarfile."""

from __future__ import annotations

import json
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

AUDIO_EXTS = ("flac", "wav", "ogg", "mp3")


@dataclass
class Clip:
    key: str
    audio: bytes
    text: str | None
    source: str
    ext: str


def iter_shard(path: str | Path) -> Iterator[Clip]:
    """Clips of one shard in order; members group by key (the part of the name before the first dot)."""
    groups: dict[str, dict[str, bytes]] = {}
    order: list[str] = []
    with tarfile.open(path) as tar:
        for m in tar:
            if not m.isfile():
                continue
            key, _, ext = m.name.partition(".")
            if key not in groups:
                groups[key] = {}
                order.append(key)
            groups[key][ext] = tar.extractfile(m).read()
    for key in order:
        g = groups[key]
        ext = next((e for e in AUDIO_EXTS if e in g), None)
        if ext is None:
            continue
        text = json.loads(g["json"]).get("text") if "json" in g else g.get("txt", b"").decode() or None
        yield Clip(key, g[ext], text, str(path), ext)


def iter_shards(paths: list[str | Path]) -> Iterator[Clip]:
    for p in paths:
        yield from iter_shard(p)
