"""Small datasets shipped inside the package for the demo and the tests."""

from __future__ import annotations

from pathlib import Path

DATA = Path(__file__).resolve().parent.parent / "assets" / "data"


def speech_sample_shards() -> list[Path]:
    """24 held-out utterances (held-out voices and sentences) as two WebDataset shards."""
    shards = sorted((DATA / "speech-sample").glob("*.tar"))
    if not shards:
        raise FileNotFoundError(f"no sample shards under {DATA / 'speech-sample'}; the package is incomplete")
    return shards
