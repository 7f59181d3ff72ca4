"""A diffusion VLM: SigLIP vision tower (transformers) -> ``mlp2x_gelu`` projector -> image Segment -> the shared
LLaDA-architecture backbone. Loaded from and saved in real layouts (see ``unmask.core.backbones.llava``):

* LLaDA-V (``model_type: llava_llada``): ``model.vision_tower.vision_tower.vision_model.*``,
  ``model.mm_projector.{0,2}.*``, Llama-layout language model; the image goes where the prompt says ``<image>``.
* Dream-VL style (``model_type: dream_vl``): ``vision_tower.vision_model.*``, ``multi_modal_projector.linear_{1,2}.*``
  (transformers' LLaVA names), Qwen2-layout Dream language model; ``image_token_id`` in the prompt is expanded to the
  image's embeddings.

Real checkpoints name the tower by hub id (``mm_vision_tower``); offline, the tower's config must be in the checkpoint
(``vision_config``) or ``mm_vision_tower`` must be a local directory holding its ``config.json``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from ...core.backbones import BackboneInfo, Transformer
from ...decoders.canvas import Segment
from .image import ImageConfig, preprocess
from .scenes import PROMPT

IMAGE_MARK = "<image>"
LAYOUTS = {
    "llava_llada": {"tower": "model.vision_tower.vision_tower.", "proj": "model.mm_projector.",
                    "proj_names": ("0", "2")},
    "dream_vl": {"tower": "vision_tower.", "proj": "multi_modal_projector.", "proj_names": ("linear_1", "linear_2")},
}


@dataclass(frozen=True)
class VisionSpec:
    """How the checkpoint turns an image into Segment embeddings."""

    select_layer: int = -1
    """Hidden-state index of the tower used as features (LLaVA's ``mm_vision_select_layer``; -2 in LLaDA-V)."""
    projector: str = "mlp2x_gelu"
    """Projector type; only LLaVA's ``mlp2x_gelu`` (Linear, GELU, Linear) is supported."""
    image: ImageConfig = ImageConfig()
    image_token_id: int | None = None
    """Placeholder token of the Dream-VL-style layout; None for LLaVA's ``<image>`` text mark."""

    def __post_init__(self) -> None:
        if self.projector != "mlp2x_gelu":
            raise ValueError(f"mm_projector_type={self.projector!r} is not supported (supported: 'mlp2x_gelu')")


class Projector(nn.Module):
    """LLaVA ``mlp2x_gelu``: vision width -> backbone width."""

    def __init__(self, vision_dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(vision_dim, hidden)
        self.fc2 = nn.Linear(hidden, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(nn.functional.gelu(self.fc1(x)))


def siglip_config(raw: dict):
    from transformers import SiglipVisionConfig

    raw = {k: v for k, v in raw.items() if k not in ("model_type", "transformers_version", "architectures")}
    cfg = SiglipVisionConfig(**raw)
    cfg.vision_use_head = False  # LLaVA towers use patch features, never SigLIP's pooling head
    return cfg


class VisionTower(nn.Module):
    """Pixels ``[B, 3, S, S]`` -> projected patch embeddings ``[B, N, D]`` (N = (S / patch)^2)."""

    def __init__(self, vision_config, hidden_size: int, spec: VisionSpec) -> None:
        from transformers import SiglipVisionModel

        super().__init__()
        self.spec = spec
        self.vision = SiglipVisionModel(vision_config)
        self.projector = Projector(vision_config.hidden_size, hidden_size)

    @property
    def num_tokens(self) -> int:
        c = self.vision.config
        return (c.image_size // c.patch_size) ** 2

    def features(self, pixels: torch.Tensor) -> torch.Tensor:
        """Tower features ``[B, N, E]`` before the projector (hidden state ``select_layer``)."""
        out = self.vision(pixel_values=pixels.to(self.projector.fc1.weight.dtype), output_hidden_states=True)
        if self.spec.select_layer == -1:
            return out.last_hidden_state  # post-layernorm, as SigLIP's own output
        return out.hidden_states[self.spec.select_layer]

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.projector(self.features(pixels))


def _tower_state(tower: VisionTower, layout: str) -> dict[str, torch.Tensor]:
    names = LAYOUTS[layout]
    state = {}
    for k, v in tower.vision.state_dict().items():
        k = k if k.startswith("vision_model.") else f"vision_model.{k}"
        state[names["tower"] + k] = v
    a, b = names["proj_names"]
    for mine, theirs in (("fc1", a), ("fc2", b)):
        for p in ("weight", "bias"):
            state[f"{names['proj']}{theirs}.{p}"] = getattr(tower.projector, mine).state_dict()[p]
    return state


def _load_tower(tower: VisionTower, files: dict[str, Path], layout: str, where: Path) -> None:
    from safetensors import safe_open

    names = LAYOUTS[layout]
    wanted = _tower_state(tower, layout)
    missing = sorted(set(wanted) - set(files))
    if missing:
        raise KeyError(f"{where}: checkpoint lacks {len(missing)} vision weight(s) of the {layout} layout, e.g. "
                       f"{missing[:3]}")
    vals: dict[str, torch.Tensor] = {}
    for key in wanted:
        with safe_open(str(files[key]), framework="pt") as f:
            vals[key] = f.get_tensor(key)
    own = tower.vision.state_dict()
    prefix = "" if next(iter(own)).startswith("vision_model.") else "vision_model."
    tower.vision.load_state_dict({k: vals[names["tower"] + prefix + k] for k in own}, strict=True)
    a, b = names["proj_names"]
    tower.projector.load_state_dict({f"{m}.{p}": vals[f"{names['proj']}{t}.{p}"]
                                     for m, t in (("fc1", a), ("fc2", b)) for p in ("weight", "bias")})


@dataclass
class VLM:
    """A loaded diffusion VLM: tower + projector, backbone and its info, tokenizer, layout."""

    tower: VisionTower
    backbone: Transformer
    info: BackboneInfo
    tokenizer: object
    layout: str
    path: Path | None = None

    @property
    def spec(self) -> VisionSpec:
        return self.tower.spec

    @torch.inference_mode()
    def encode(self, images: list, names: list[str] | None = None) -> torch.Tensor:
        """``[B, N, D]`` image embeddings of images (paths, bytes, PIL, arrays)."""
        pixels = preprocess(images, self.spec.image, names)
        dev = next(self.backbone.parameters()).device
        return self.tower(pixels.to(dev)).to(self.backbone.embed.weight.dtype)

    def prompt_ids(self, question: str) -> tuple[list[int], list[int]]:
        """Token ids of the user turn before and after the image."""
        text = self.tokenizer.format_prompt(PROMPT.format(question=question))
        if self.spec.image_token_id is None:  # LLaVA: the text mark splits the prompt
            before, after = text.split(IMAGE_MARK, 1)
            return self.tokenizer.encode(before), self.tokenizer.encode(after)
        # Dream-VL style: the placeholder token sits in the token ids and is expanded to the image span
        ids = self.tokenizer.encode(text.replace(IMAGE_MARK, self.tokenizer.id_to_token(self.spec.image_token_id)))
        at = [i for i, t in enumerate(ids) if t == self.spec.image_token_id]
        if len(at) != 1:
            raise ValueError(f"prompt must hold exactly one image placeholder (id {self.spec.image_token_id}), "
                             f"found {len(at)}")
        return ids[: at[0]], ids[at[0] + 1 :]

    def prefix(self, image_embeds: torch.Tensor, question: str) -> list[Segment]:
        """Segments of one request: text before, the image ``[N, D]``, text after (the placeholder token of the
        Dream-VL layout, where present, is replaced by the image span)."""
        before, after = self.prompt_ids(question)
        segs = []
        if before:
            segs.append(Segment("text", token_ids=torch.tensor(before)))
        segs.append(Segment("image", embeddings=image_embeds))
        if after:
            segs.append(Segment("text", token_ids=torch.tensor(after)))
        return segs


def save_vlm(vlm: VLM, path: str | Path, extra_config: dict | None = None, dtype: torch.dtype = torch.bfloat16
             ) -> Path:
    """Write ``vlm`` in its layout: config.json (+ ``vision_config`` inline), one model.safetensors, tokenizer."""
    import shutil

    from safetensors.torch import load_file, save_file

    from ...core.checkpoint import save_backbone

    path = Path(path)
    spec = vlm.spec
    vc = vlm.tower.vision.config.to_dict()
    mm = {"mm_vision_tower": "inline", "mm_projector_type": spec.projector, "mm_hidden_size": vc["hidden_size"],
          "mm_vision_select_layer": spec.select_layer, "image_aspect_ratio": "pad", "vision_config": vc,
          "unmask_image": asdict(spec.image)}
    if spec.image_token_id is not None:
        mm["image_token_id"] = spec.image_token_id
    save_backbone(vlm.backbone, path, family=vlm.layout, info=vlm.info, dtype=dtype,
                  extra_config=mm | (extra_config or {}))
    state = load_file(str(path / "model.safetensors"))
    state |= {k: v.detach().cpu().to(dtype).contiguous() for k, v in _tower_state(vlm.tower, vlm.layout).items()}
    save_file(state, str(path / "model.safetensors"), metadata={"format": "pt"})
    tok_dir = getattr(vlm.tokenizer, "path", None)
    if tok_dir is not None and Path(tok_dir).resolve() != path.resolve():
        for name in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copy(Path(tok_dir) / name, path / name)
    return path


def load_vlm(name_or_path: str | Path = "tiny-vlm", *, dtype: str | torch.dtype | None = None,
             device: str | torch.device = "cpu") -> VLM:
    from ...core.checkpoint import _weight_files, load_backbone, read_config, resolve_dtype
    from ...core.config import config_from_dict
    from ...core.models import resolve_model
    from ..text.tokenizer import TextTokenizer

    path = resolve_model(name_or_path)
    raw = read_config(path)
    layout = str(raw.get("model_type", "")).lower()
    if layout not in LAYOUTS:
        raise ValueError(f"{path}/config.json: model_type={raw.get('model_type')!r} is not a VLM layout; known "
                         f"layouts: {', '.join(LAYOUTS)}")
    if "vision_config" in raw:
        vraw = raw["vision_config"]
    elif Path(str(raw.get("mm_vision_tower", ""))).is_dir():
        vraw = json.loads((Path(raw["mm_vision_tower"]) / "config.json").read_text())
        vraw = vraw.get("vision_config", vraw)
    else:
        raise ValueError(f"{path}/config.json: the vision tower {raw.get('mm_vision_tower')!r} is a hub id and no "
                         f"vision_config is inlined; nothing is downloaded at run time: download the tower and set "
                         f"mm_vision_tower to its local directory, or add its config as vision_config")
    image_raw = raw.get("unmask_image")
    if image_raw is None:  # a real checkpoint: SigLIP's own preprocessing at the tower's resolution
        image_raw = {"size": int(vraw.get("image_size", 384))}
    image = config_from_dict(ImageConfig, {k: tuple(v) if isinstance(v, list) else v for k, v in image_raw.items()},
                             where=f"{path}/config.json unmask_image")
    spec = VisionSpec(select_layer=int(raw.get("mm_vision_select_layer", -1)),
                      projector=str(raw.get("mm_projector_type", "mlp2x_gelu")), image=image,
                      image_token_id=raw.get("image_token_id"))
    torch_dtype = resolve_dtype(dtype)
    loaded = load_backbone(path, dtype=torch_dtype, device=device)
    tower = VisionTower(siglip_config(vraw), loaded.model.cfg.hidden_size, spec)
    _load_tower(tower, _weight_files(path), layout, path)
    tower = tower.to(device=device, dtype=torch_dtype).eval()
    return VLM(tower, loaded.model, loaded.info, TextTokenizer(path), layout, path)
