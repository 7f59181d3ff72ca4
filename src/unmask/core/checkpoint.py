"""Load and save backbones in the Hugging Face on-disk layout: ``config.json`` plus ``model.safetensors``
or shards listed in ``model.safetensors.index.json``. Safetensors only: no pickle is ever unpickled.

Loading builds the module on the meta device and assigns the tensors read from disk, so an 8B model
costs one copy of its weights, not two.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from .backbones import BACKBONES, BackboneFamily, BackboneInfo, Transformer, TransformerConfig, detect_family

WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"

_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
           "float16": torch.float16, "fp16": torch.float16}


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return _DTYPES[dtype]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {sorted(_DTYPES)}") from None


@dataclass
class LoadedBackbone:
    model: Transformer
    info: BackboneInfo
    family: type[BackboneFamily]
    path: Path | None


def read_config(path: Path) -> dict:
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise FileNotFoundError(f"{path} has no config.json; expected a Hugging Face-layout model directory")
    return json.loads(cfg_file.read_text())


def _weight_files(path: Path) -> dict[str, Path]:
    """checkpoint key -> file holding it."""
    index = path / INDEX_NAME
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        files = {k: path / v for k, v in weight_map.items()}
        missing = sorted({str(f) for f in files.values() if not f.is_file()})
        if missing:
            raise FileNotFoundError(f"{index} lists shard(s) that do not exist: {missing}")
        return files
    single = path / WEIGHTS_NAME
    if single.is_file():
        from safetensors import safe_open

        with safe_open(str(single), framework="pt") as f:
            return {k: single for k in f.keys()}
    raise FileNotFoundError(
        f"no weights in {path}: expected {WEIGHTS_NAME} or {INDEX_NAME} (safetensors only; convert "
        "pytorch_model.bin checkpoints to safetensors first)"
    )


def load_backbone(
    path: str | Path, *, dtype: str | torch.dtype | None = None, device: str | torch.device = "cpu"
) -> LoadedBackbone:
    from safetensors import safe_open

    path = Path(path)
    raw = read_config(path)
    family = detect_family(raw, where=str(path / "config.json"))
    cfg = family.transformer_config(raw)
    torch_dtype = resolve_dtype(dtype)
    with torch.device("meta"):
        model = Transformer(cfg)
    files = _weight_files(path)
    by_file: dict[Path, list[tuple[str, str]]] = {}
    missing = []
    for internal, _ in model.named_parameters():
        key = family.to_checkpoint_key(internal)
        if key not in files:
            missing.append(key)
            continue
        by_file.setdefault(files[key], []).append((internal, key))
    if missing:
        raise KeyError(f"{path}: checkpoint lacks {len(missing)} {family.name} weight(s), e.g. {missing[:4]}")
    state: dict[str, torch.Tensor] = {}
    for file, pairs in by_file.items():
        with safe_open(str(file), framework="pt", device=str(device)) as f:
            for internal, key in pairs:
                state[internal] = f.get_tensor(key).to(torch_dtype)
    if cfg.tie_embeddings:
        state["lm_head.weight"] = state["embed.weight"]
    model.load_state_dict(state, strict=True, assign=True)
    model.eval()
    return LoadedBackbone(model=model, info=family.info(raw), family=family, path=path)


def save_backbone(
    model: Transformer,
    path: str | Path,
    *,
    family: str | type[BackboneFamily],
    info: BackboneInfo,
    max_shard_bytes: int | None = None,
    extra_config: dict | None = None,
    dtype: str | torch.dtype | None = None,
) -> Path:
    """Write ``model`` in ``family``'s real layout; shard into several files past ``max_shard_bytes``."""
    from safetensors.torch import save_file

    fam = BACKBONES.get(family) if isinstance(family, str) else family
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    state = {}
    for internal, tensor in model.state_dict().items():
        if model.cfg.tie_embeddings and internal == "lm_head.weight":
            continue
        t = tensor.detach().cpu()
        state[fam.to_checkpoint_key(internal)] = (t if dtype is None else t.to(resolve_dtype(dtype))).contiguous()
    config = fam.hf_config(model.cfg, info) | (extra_config or {})
    config["torch_dtype"] = str(next(iter(state.values())).dtype).removeprefix("torch.")
    (path / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    if max_shard_bytes is None:
        save_file(state, str(path / WEIGHTS_NAME), metadata={"format": "pt"})
        return path
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for key, t in state.items():
        nbytes = t.numel() * t.element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][key] = t
        size += nbytes
    weight_map = {}
    for i, shard in enumerate(shards):
        name = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(path / name), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(shard, name))
    total = sum(t.numel() * t.element_size() for t in state.values())
    (path / INDEX_NAME).write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2) + "\n"
    )
    return path


def random_backbone(cfg: TransformerConfig, *, seed: int = 0, dtype: torch.dtype = torch.float32,
                    device: str | torch.device = "cpu") -> Transformer:
    """A backbone with small deterministic random weights (tests, shape benchmarks), built directly on
    ``device`` in ``dtype`` (an 8B shape never exists in float32 on the host)."""
    gen = torch.Generator(device=device).manual_seed(seed)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # built in dtype: an 8B shape in float32 first would need twice the memory
    try:
        with torch.device(device):
            model = Transformer(cfg)
    finally:
        torch.set_default_dtype(default)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen, device=device)
            p.copy_(1.0 + 0.1 * noise if name.endswith("norm.weight") else 0.02 * noise)
    return model.eval()
