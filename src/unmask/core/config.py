"""Helpers shared by every typed config: strict construction from dicts and YAML."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any


def config_from_dict[C](cls: type[C], data: dict[str, Any] | None, *, where: str = "") -> C:
    """Build a frozen config dataclass, refusing keys it does not declare.

    A misspelt key silently falling back to a default is the classic recipe bug; name it instead.
    """
    data = dict(data or {})
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        at = f" in {where}" if where else ""
        raise ValueError(
            f"unknown {cls.__name__} key(s) {unknown}{at}; valid keys: {sorted(names)}"
        )
    return cls(**data)


def config_to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def load_yaml(path: str | Path) -> dict[str, Any]:
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a YAML mapping at the top level, got {type(data).__name__}")
    return data
