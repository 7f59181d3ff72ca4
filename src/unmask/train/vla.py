"""Recipe for the ``tiny-vla`` reference policy: an observation encoder and a LLaDA-architecture backbone
trained with the masked-diffusion loss on binned action chunks of PushBlock expert demonstrations.

Each row is ``[obs tokens] + H*D chunk slots``; a ratio t ~ U(t_min, 1) of the chunk is masked and the loss is the
cross-entropy on masked slots. At the end the policy is rolled out on held-out seeds and the success rate logged.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..core.config import config_to_dict
from ..modalities.action.data import EVAL_SEED, read_episodes, write_dataset
from ..modalities.action.model import MASK_ID, ActionPolicy, ActionSpec, load_policy, new_policy, save_policy
from ..modalities.action.tokenizer import ActionStats
from .common import BackboneRecipe, TrainLog, load_recipe, optimizer_step


@dataclass(frozen=True)
class VlaTrainConfig(BackboneRecipe):
    """Recipe of the action reference policy (``configs/train_vla.yaml``)."""

    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 320
    steps: int = 3000
    batch_size: int = 128
    lr: float = 1e-3
    out_dir: str = "runs/tiny-vla"
    data: str = "runs/data/robot"
    """LeRobotDataset directory; written (``episodes`` expert demonstrations) when missing."""
    episodes: int = 500
    """Demonstrations to write when ``data`` is missing."""
    horizon: int = 16
    """Chunk length H."""
    bins: int = 256
    """Bins per action dimension."""
    obs_tokens: int = 4
    """Prefix positions of the observation encoder."""
    decode_steps: int = 2
    """Default forward passes per chunk written into the bundle."""
    t_min: float = 0.05
    """Smallest masking ratio."""
    eval_episodes: int = 100
    """Held-out rollouts at the end (success rate in the log); 0 skips."""
    init_from: str | None = None
    """Continue from this bundle (its statistics and shape) instead of a fresh policy: a second phase."""
    prefix_prob: float = 0.0
    """Share of rows whose first d ~ U{1..H/2} steps are given unmasked (the inpainting that real-time chunking asks
    of the policy at run time); the rest of those rows is masked at ratio t as usual."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.t_min < 1:
            raise ValueError(f"t_min must lie in (0, 1), got {self.t_min}")
        if not 0 <= self.prefix_prob <= 1:
            raise ValueError(f"prefix_prob must lie in [0, 1], got {self.prefix_prob}")


def chunk_mask(b: int, horizon: int, action_dim: int, gen: torch.Generator, t_min: float = 0.05,
               prefix_prob: float = 0.0) -> torch.Tensor:
    """``[B, H*D]`` slots to hide: each with probability t ~ U(t_min, 1) per row, at least one per row; a
    ``prefix_prob`` share of rows shows its first d ~ U{1..H/2} steps (the inpainting real-time chunking asks for)."""
    n = horizon * action_dim
    t = t_min + (1 - t_min) * torch.rand(b, 1, generator=gen)
    masked = torch.rand(b, n, generator=gen) < t
    masked[torch.arange(b), torch.randint(0, n, (b,), generator=gen)] = True
    if prefix_prob > 0:
        d = torch.randint(1, horizon // 2 + 1, (b, 1), generator=gen) * action_dim  # given slots per row
        rows = torch.rand(b, 1, generator=gen) < prefix_prob  # [B, 1]
        slot = torch.arange(n)[None]
        masked &= ~((slot < d) & rows)
        masked |= (slot == d) & rows  # the first slot after the prefix is always to predict
    return masked


def chunk_loss(policy: ActionPolicy, states: torch.Tensor, chunks: torch.Tensor, gen: torch.Generator,
               t_min: float = 0.05, pad: torch.Tensor | None = None, prefix_prob: float = 0.0) -> torch.Tensor:
    """Masked-diffusion cross-entropy on the chunk slots of ``[B, S]`` states and ``[B, H, D]`` action chunks,
    hidden by ``chunk_mask``; steps marked in ``pad`` ``[B, H]`` (past the episode's end) are always hidden and left
    out of the loss."""
    tokens = policy.tokenizer.encode(chunks)  # [B, H*D]
    masked = chunk_mask(chunks.shape[0], chunks.shape[1], chunks.shape[2], gen, t_min, prefix_prob)
    padded = None if pad is None else pad.repeat_interleave(chunks.shape[-1], dim=1)  # [B, H*D]
    # padding is always hidden (the model never sees the filler) and never scored
    noisy = torch.where(masked if padded is None else masked | padded, MASK_ID, tokens)
    if padded is not None:
        masked &= ~padded
    prefix = policy.prefix_embeddings(states)  # [B, k, hidden]
    x = torch.cat([prefix, policy.backbone.embed(noisy)], 1)
    logits = policy.backbone.logits(policy.backbone(inputs_embeds=x)[:, prefix.shape[1] :])  # [B, H*D, V]
    if not bool(masked.any()):  # every masked slot was padding: nothing to learn from this batch
        return logits.sum() * 0.0
    return F.cross_entropy(logits[masked], tokens[masked])


def train(cfg: VlaTrainConfig) -> Path:
    out = cfg.start_run()
    if not (Path(cfg.data) / "meta" / "info.json").is_file():
        write_dataset(cfg.data, cfg.episodes, seed=cfg.seed)
    eps = read_episodes(cfg.data)
    if cfg.init_from:
        policy = load_policy(cfg.init_from)
    else:
        stats = ActionStats.fit(eps.actions, eps.states)
        spec = ActionSpec(state_dim=eps.states.shape[1], action_dim=eps.actions.shape[1], horizon=cfg.horizon,
                          bins=cfg.bins, obs_tokens=cfg.obs_tokens, decode_steps=cfg.decode_steps)
        policy = new_policy(spec, stats, hidden=cfg.hidden_size, layers=cfg.num_layers, heads=cfg.num_heads,
                            seed=cfg.seed)
    horizon = policy.spec.horizon
    params = list(policy.backbone.parameters()) + list(policy.encoder.parameters())
    opt, sched = cfg.optimizer(params)
    rng = np.random.default_rng(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    policy.backbone.train()
    policy.encoder.train()
    from tqdm import tqdm

    recipe = {"unmask_recipe": config_to_dict(cfg)}
    bar = tqdm(range(1, cfg.steps + 1), desc="train vla", mininterval=10)
    log = TrainLog(out, bar, sched, cfg.steps)
    for step in bar:
        idx = rng.integers(0, len(eps.actions), cfg.batch_size)
        chunks, pad = eps.chunks(idx, horizon)
        loss = chunk_loss(policy, torch.from_numpy(eps.states[idx]), torch.from_numpy(chunks), gen, cfg.t_min,
                          torch.from_numpy(pad), cfg.prefix_prob)
        optimizer_step(opt, sched, loss, params)
        log.step(step, loss=loss.item())
        if step % cfg.save_every == 0 or step == cfg.steps:
            save_policy(policy, out, extra_config=recipe | {"unmask_step": step})
    policy.backbone.eval()
    policy.encoder.eval()
    if cfg.eval_episodes:
        from ..pipelines.robot import rollout

        res = rollout(policy, list(range(EVAL_SEED, EVAL_SEED + cfg.eval_episodes)), progress=True)
        rate = float(np.mean([r["success"] for r in res]))
        log.write({"step": cfg.steps, "eval_success_rate": rate, "eval_episodes": len(res)})
        save_policy(policy, out, extra_config=recipe | {"unmask_step": cfg.steps, "unmask_eval_success": rate})
    log.close()
    return out


def main(config_path: str | None, overrides: dict | None = None) -> Path:
    return train(load_recipe(VlaTrainConfig, config_path, overrides))
