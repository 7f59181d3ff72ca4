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
