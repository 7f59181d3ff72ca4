"""Image front end (Pillow): decode, convert to RGB, pad to a square and resize, normalise.

Every failure raises :class:`ImageError` naming the input and the fix, so an evaluation batch records it and goes on.
Conversions that lose nothing a VLM needs are done, not refused: grayscale and palette images become RGB, RGBA is
composited on white, large images are shrunk (up to ``MAX_PIXELS``; beyond it Pillow's decompression-bomb guard).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

MAX_PIXELS = 64_000_000
"""Largest decoded image accepted (64 MP); bigger ones are refused before decoding the pixels."""


class ImageError(ValueError):
    """An input image that cannot be used; the message says which input and why."""


@dataclass(frozen=True)
class ImageConfig:
    """How pixels become the vision tower's input."""

    size: int = 96
    """Side of the square input, in pixels."""
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    """Per-channel mean subtracted after scaling to [0, 1] (SigLIP's normalisation)."""
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    """Per-channel scale after the mean."""
    pad_color: tuple[int, int, int] = (255, 255, 255)
    """Fill for letterboxing non-square images (LLaVA's ``image_aspect_ratio: pad`` uses the mean colour)."""

    def __post_init__(self) -> None:
        if self.size < 8:
            raise ValueError(f"ImageConfig.size must be >= 8 pixels, got {self.size}")
        if any(s <= 0 for s in self.std):
            raise ValueError(f"ImageConfig.std must be positive, got {self.std}")


def load_image(src, name: str | None = None):
    """A ``PIL.Image`` in RGB from a path, encoded bytes, a PIL image or an ``[H, W(, C)]`` uint8/float array."""
    from PIL import Image, UnidentifiedImageError

    name = name or (str(src) if isinstance(src, (str, Path)) else f"<{type(src).__name__}>")
    if isinstance(src, Image.Image):
        img = src
    elif isinstance(src, np.ndarray):
        img = _from_array(src, name)
    else:
        if isinstance(src, (bytes, bytearray)) and not src:
            raise ImageError(f"{name}: empty file (0 bytes)")
        if isinstance(src, (str, Path)):
            p = Path(src)
            if not p.is_file():
                raise ImageError(f"{name}: no such file")
            if p.stat().st_size == 0:
                raise ImageError(f"{name}: empty file (0 bytes)")
        try:
            img = Image.open(io.BytesIO(src) if isinstance(src, (bytes, bytearray)) else str(src))  # header only
            if img.width * img.height > MAX_PIXELS:  # checked before the pixels are decoded
                raise ImageError(f"{name}: {img.width}x{img.height} pixels exceeds the limit of {MAX_PIXELS}; "
                                 f"downscale it before evaluation")
            img.load()
        except ImageError:
            raise
        except Image.DecompressionBombError as e:  # Pillow's own guard, at twice its limit, fires inside open()
            raise ImageError(f"{name}: {e}; downscale it before evaluation (limit {MAX_PIXELS} pixels)") from e
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
            raise ImageError(f"{name}: not a readable image ({e}); expected PNG, JPEG, WebP, BMP or GIF") from e
    if img.width == 0 or img.height == 0:
        raise ImageError(f"{name}: image has no pixels ({img.width}x{img.height})")
    return to_rgb(img)


def _from_array(a: np.ndarray, name: str):
    from PIL import Image

    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (1, 3, 4)):
        raise ImageError(f"{name}: array of shape {tuple(a.shape)} is not an image; expected [H, W], [H, W, 3] or "
                         f"[H, W, 4]")
    if a.size == 0:
        raise ImageError(f"{name}: image has no pixels (shape {tuple(a.shape)})")
    if a.dtype != np.uint8:
        if not np.isfinite(a).all():
            raise ImageError(f"{name}: pixel values contain NaN or inf")
        a = (np.clip(a, 0.0, 1.0) * 255).round().astype(np.uint8)
    return Image.fromarray(a[..., 0] if a.ndim == 3 and a.shape[2] == 1 else a)


def to_rgb(img):
    """RGB copy: alpha composited on white (a transparent background is not black), palette and gray expanded."""
    from PIL import Image

    if img.mode == "RGB":
        return img
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        out = Image.new("RGB", rgba.size, (255, 255, 255))
        out.paste(rgba, mask=rgba.getchannel("A"))
        return out
    if img.mode in ("I;16", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)
        return Image.fromarray((arr * 255).astype(np.uint8)).convert("RGB")
    return img.convert("RGB")


def preprocess(images: list, cfg: ImageConfig, names: list[str] | None = None) -> torch.Tensor:
    """``[B, 3, S, S]`` float32 pixel values: letterbox to a square, resize (bicubic), normalise."""
    from PIL import Image

    out = []
    for i, src in enumerate(images):
        img = load_image(src, None if names is None else names[i])
        w, h = img.size
        side = max(w, h)
        if w != h:
            canvas = Image.new("RGB", (side, side), cfg.pad_color)
            canvas.paste(img, ((side - w) // 2, (side - h) // 2))
            img = canvas
        if side != cfg.size:
            img = img.resize((cfg.size, cfg.size), Image.Resampling.BICUBIC)
        out.append(torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0))
    x = torch.stack(out).permute(0, 3, 1, 2)  # [B, 3, S, S]
    mean = torch.tensor(cfg.mean).view(1, 3, 1, 1)
    std = torch.tensor(cfg.std).view(1, 3, 1, 1)
    return (x - mean) / std
