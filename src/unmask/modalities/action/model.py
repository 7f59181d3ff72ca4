"""The diffusion action-chunk policy (Dream-VLA style): observation -> prefix Segment, a chunk of H x D canvas
slots over the bin vocabulary, decoded in parallel by the shared core in 1-4 steps.

Inpainting for real-time chunking is the Canvas's fixed slots: the first ``d`` steps of a new chunk are given
(the actions that will run while it is computed) and the core decodes the rest around them.

Bundle layout (one directory): ``config.json`` (LLaDA layout + ``unmask_action`` spec + ``action_stats``) and
``model.safetensors`` (backbone under its real key names + ``obs_encoder.*``).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ...core.backbones import BackboneInfo, Transformer
from ...decoders import Canvas, ModelRunner, SamplingParams, Segment, build_policy, denoise
from .tokenizer import ActionStats, ActionTokenizer

PAD_ID, MASK_ID, FIRST_BIN = 0, 1, 2
"""Vocabulary of an action backbone: padding, [MASK], then the bins."""


@dataclass(frozen=True)
class ActionSpec:
    """Shape of one policy (``unmask_action`` in its config.json)."""

    state_dim: int
    """Length of the state observation vector."""
    action_dim: int
    """Action dimensions D."""
    horizon: int = 16
    """Steps per chunk H: the canvas holds H*D slots."""
    bins: int = 256
    """Uniform bins per dimension."""
    obs_tokens: int = 4
    """Prefix positions the observation encoder produces."""
    decode_steps: int = 2
    """Default forward passes per chunk (1-4 in the field)."""

    def __post_init__(self) -> None:
        for name in ("state_dim", "action_dim", "horizon", "obs_tokens", "decode_steps"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.bins < 2:
            raise ValueError(f"bins must be >= 2, got {self.bins}")

    @property
    def vocab_size(self) -> int:
        return FIRST_BIN + self.bins

    @property
    def slots(self) -> int:
        return self.horizon * self.action_dim


class ObservationError(ValueError):
    """An observation the policy cannot use (NaN/inf, missing key, wrong shape); the message names it."""


class ObsEncoder(nn.Module):
    """Normalised state ``[B, S]`` -> ``obs_tokens`` prefix vectors ``[B, k, hidden]``."""

    def __init__(self, state_dim: int, hidden: int, tokens: int) -> None:
        super().__init__()
        self.tokens = tokens
        self.net = nn.Sequential(nn.Linear(state_dim, 2 * hidden), nn.GELU(), nn.Linear(2 * hidden, tokens * hidden))

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        return self.net(state).unflatten(-1, (self.tokens, -1))


class ActionPolicy:
    """Observation encoder + LLaDA-architecture backbone + action tokenizer; ``predict_chunk`` is the policy."""

    def __init__(self, encoder: ObsEncoder, backbone: Transformer, spec: ActionSpec, stats: ActionStats,
                 path: Path | None = None) -> None:
        if stats.action_dim != spec.action_dim:
            raise ValueError(f"statistics have {stats.action_dim} action dimensions, the spec {spec.action_dim}")
        if len(stats.state_mean) != spec.state_dim:
            raise ValueError(f"statistics have {len(stats.state_mean)} state dimensions, the spec {spec.state_dim}")
        self.encoder, self.backbone, self.spec, self.stats, self.path = encoder, backbone, spec, stats, path
        self.tokenizer = ActionTokenizer(stats, spec.bins, FIRST_BIN)
        self.info = BackboneInfo(family="llada", mask_id=MASK_ID, eos_id=None, pad_id=PAD_ID, shift_logits=False)
        allowed = torch.zeros(backbone.cfg.vocab_size, dtype=torch.bool)
        allowed[FIRST_BIN : FIRST_BIN + spec.bins] = True
        self.runner = ModelRunner(backbone, self.info, allowed_tokens=allowed)
        dev = self.device
        self._mean = torch.tensor(stats.state_mean, dtype=torch.float32, device=dev)
        self._std = torch.tensor(stats.state_std, dtype=torch.float32, device=dev)

    @property
    def device(self) -> torch.device:
        return next(self.backbone.parameters()).device

    # -- inputs ------------------------------------------------------------------------------------------------
    def check_state(self, state, name: str = "observation.state") -> torch.Tensor:
        """``[S]`` or ``[B, S]`` finite numbers -> float tensor ``[B, S]``; otherwise an ObservationError."""
        if state is None:
            raise ObservationError(f"{name} is missing; the policy needs a state vector of {self.spec.state_dim}")
        try:
            t = state.float() if isinstance(state, torch.Tensor) else torch.tensor(np.asarray(state, dtype=np.float32))
        except (TypeError, ValueError) as err:
            raise ObservationError(f"{name} is not a numeric array ({err}); send {self.spec.state_dim} floats") from err
        if t.dim() == 1:
            t = t[None]
        if t.dim() != 2 or t.shape[1] != self.spec.state_dim:
            raise ObservationError(f"{name} has shape {tuple(t.shape)}; the policy expects [{self.spec.state_dim}] "
                                   f"or [batch, {self.spec.state_dim}]")
        bad = ~torch.isfinite(t)
        if bool(bad.any()):
            rows, cols = bad.nonzero()[0].tolist()
            raise ObservationError(f"{name} holds a non-finite value ({t[rows, cols].item()}) at row {rows}, "
                                   f"dimension {cols}; send finite numbers (hold the last good observation)")
        return t.to(self.device)

    def prefix_embeddings(self, state: torch.Tensor) -> torch.Tensor:
        """Normalised, encoded state ``[B, k, hidden]`` (training and decoding share it)."""
        x = (state.float().to(self.device) - self._mean) / self._std
        return self.encoder(x.to(next(self.encoder.parameters()).dtype))

    # -- decoding -------------------------------------------------------------------------------------------------
    @torch.inference_mode()
    def predict_chunk(self, state, prefix_actions: torch.Tensor | np.ndarray | None = None, steps: int | None = None,
                      policy: str = "low_confidence") -> tuple[torch.Tensor, dict]:
        """Actions ``[B, H, D]`` for states ``[B, S]``.

        ``prefix_actions`` ``[B, d, D]`` (d < H) inpaints the chunk: its first d steps are fixed to these actions
        (binned) and the rest is decoded around them. Returns the actions and telemetry (nfe, latency)."""
        t0 = time.perf_counter()
        s = self.check_state(state)
        b, h, d_act = s.shape[0], self.spec.horizon, self.spec.action_dim
        emb = self.prefix_embeddings(s)
        prefixes = [[Segment("state", embeddings=emb[i])] for i in range(b)]
        init = fixed = None
        if prefix_actions is not None:
            pa = (prefix_actions.float().cpu() if isinstance(prefix_actions, torch.Tensor)
                  else torch.tensor(np.asarray(prefix_actions, dtype=np.float32)))
            if pa.dim() == 2:
                pa = pa[None]
            if pa.shape[0] != b or pa.shape[2] != d_act or not 0 < pa.shape[1] < h:
                raise ValueError(f"prefix_actions has shape {tuple(pa.shape)}; expected [{b}, d, {d_act}] with "
                                 f"0 < d < {h}")
            if not bool(torch.isfinite(pa).all()):
                raise ValueError("prefix_actions holds NaN or inf; inpaint with the actions actually queued")
            n = pa.shape[1] * d_act
            tokens = torch.full((b, self.spec.slots), MASK_ID, dtype=torch.long)
            tokens[:, :n] = self.tokenizer.encode(pa)
            init, fixed = list(tokens), list(tokens != MASK_ID)
        canvas = Canvas.build(prefixes, self.spec.slots, mask_id=MASK_ID, pad_id=PAD_ID, init_tokens=init,
                              fixed_masks=fixed, device=self.device)
        params = SamplingParams(gen_length=self.spec.slots, steps=steps or self.spec.decode_steps, stop_at_eos=False)
        res = denoise(self.runner, canvas, build_policy(policy), params)
        actions = self.tokenizer.decode(res.tokens.cpu())
        return actions, {"nfe": int(res.nfe.max()), "latency_s": time.perf_counter() - t0}


def new_policy(spec: ActionSpec, stats: ActionStats, hidden: int = 128, layers: int = 4, heads: int = 4,
               seed: int = 0) -> ActionPolicy:
    """A freshly initialised policy (normal(0, 0.02) matrices)."""
    from ...core.backbones import TransformerConfig

    torch.manual_seed(seed)
    cfg = TransformerConfig(vocab_size=spec.vocab_size, hidden_size=hidden, num_layers=layers, num_heads=heads,
                            num_kv_heads=heads, intermediate_size=int(2.5 * hidden),
                            max_position_embeddings=max(64, spec.obs_tokens + spec.slots))
    backbone = Transformer(cfg)
    with torch.no_grad():
        for p in backbone.parameters():
            if p.dim() == 2:
                nn.init.normal_(p, std=0.02)
    return ActionPolicy(ObsEncoder(spec.state_dim, hidden, spec.obs_tokens), backbone, spec, stats)


def save_policy(policy: ActionPolicy, path: str | Path, dtype: torch.dtype = torch.float32,
                extra_config: dict | None = None) -> Path:
    """Write the bundle: backbone in LLaDA layout with the encoder's weights and the spec and statistics."""
    from safetensors.torch import load_file, save_file

    from ...core.checkpoint import save_backbone

    path = Path(path)
    extra = {"unmask_action": asdict(policy.spec), "action_stats": policy.stats.to_dict()} | (extra_config or {})
    save_backbone(policy.backbone, path, family="llada", info=policy.info, dtype=dtype, extra_config=extra)
    state = load_file(str(path / "model.safetensors"))
    state |= {f"obs_encoder.{k}": v.detach().cpu().to(dtype).contiguous()
              for k, v in policy.encoder.state_dict().items()}
    save_file(state, str(path / "model.safetensors"), metadata={"format": "pt"})
    return path


def load_policy(name_or_path: str | Path = "tiny-vla", *, device: str | torch.device = "cpu") -> ActionPolicy:
    """Load a bundle written by ``save_policy`` (a shipped name or a directory); clear error on anything else."""
    from safetensors import safe_open

    from ...core.checkpoint import _weight_files, load_backbone, read_config
    from ...core.config import config_from_dict
    from ...core.models import resolve_model

    path = resolve_model(name_or_path)
    raw = read_config(path)
    if "unmask_action" not in raw or "action_stats" not in raw:
        raise ValueError(f"{path}/config.json has no unmask_action / action_stats: not an action-policy bundle "
                         f"(write one with `unmask train vla`)")
    spec = config_from_dict(ActionSpec, raw["unmask_action"], where=f"{path}/config.json unmask_action")
    stats = ActionStats.from_dict(raw["action_stats"])
    loaded = load_backbone(path, dtype=torch.float32, device=device)
    encoder = ObsEncoder(spec.state_dim, loaded.model.cfg.hidden_size, spec.obs_tokens)
    files = _weight_files(path)
    state = {}
    for key in encoder.state_dict():
        file = files.get(f"obs_encoder.{key}")
        if file is None:
            raise KeyError(f"{path}: bundle lacks obs_encoder.{key}")
        with safe_open(str(file), framework="pt", device="cpu") as f:
            state[key] = f.get_tensor(f"obs_encoder.{key}").float()
    encoder.load_state_dict(state)
    return ActionPolicy(encoder.to(device).eval(), loaded.model, spec, stats, path)
