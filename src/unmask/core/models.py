"""Where model names resolve: the reference models shipped inside the package, or a local HF directory."""

from __future__ import annotations

from pathlib import Path

ASSETS = Path(__file__).resolve().parent.parent / "assets" / "models"


def shipped_models() -> dict[str, Path]:
    if not ASSETS.is_dir():
        return {}
    return {p.name: p for p in sorted(ASSETS.iterdir()) if (p / "config.json").is_file()}


def resolve_model(name_or_path: str | Path) -> Path:
    """A shipped model name (``tiny-text``) or a directory in Hugging Face layout. Never downloads."""
    shipped = shipped_models()
    if str(name_or_path) in shipped:
        return shipped[str(name_or_path)]
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    raise FileNotFoundError(
        f"model {str(name_or_path)!r} is neither a shipped model ({', '.join(shipped) or 'none'}) nor a local "
        "directory; unmask never downloads weights: pass the path of a checkpoint in Hugging Face layout"
    )


def directory_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


# Shapes for speed benchmarks with random weights (``--model random:NAME``): no checkpoint needed, so the
# published models' per-token cost can be measured anywhere. LLaDA-8B's shape is its public config.json.
RANDOM_SHAPES: dict[str, dict] = {
    "llada-8b": {"vocab_size": 126464, "hidden_size": 4096, "num_layers": 32, "num_heads": 32, "num_kv_heads": 32,
                 "intermediate_size": 12288, "rope_theta": 500000.0, "max_position_embeddings": 4096,
                 "mask_id": 126336},
    "llada-tiny": {"vocab_size": 1024, "hidden_size": 64, "num_layers": 2, "num_heads": 4, "num_kv_heads": 4,
                   "intermediate_size": 128, "max_position_embeddings": 1024, "mask_id": 1000},
}


def random_shape(spec: str) -> tuple[dict, int]:
    """``random:NAME`` -> (TransformerConfig fields, mask id); clear error naming the known shapes."""
    name = spec.removeprefix("random:")
    if name not in RANDOM_SHAPES:
        raise ValueError(f"unknown random model shape {name!r}; known shapes: {', '.join(sorted(RANDOM_SHAPES))}")
    fields = dict(RANDOM_SHAPES[name])
    return fields, fields.pop("mask_id")
