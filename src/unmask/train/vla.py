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
from ..modalities.action.data import EVAL_SEED, read_episodes, replan_chunks, write_dataset
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
    replan_share: float = 0.0
    """Share of each batch drawn from replanned chunks (``replan_chunks``) instead of the demonstrations: from a
    frame's state the first d ~ U{0..replan_delay} actions of its demonstration run exactly and the expert goes on
    noise-free; those d steps are given unmasked, as the actions that run during inference are at run time."""
    replan_delay: int = 12
    """Largest inpainted prefix of a replanned row (ticks of inference delay it teaches: 100 ms at 50 Hz is 6)."""
    replan_rows: int = 60000
    """Frames replanned once at the start (drawn without replacement; all when fewer)."""
    replan_stale: int = 0
    """Age in frames, up to, of the plan a replanned row's prefix comes from (``replanned``); 0: the frame's own
    demonstration. At run time the prefix is the tail of the previous chunk, planned ``execute`` ticks earlier."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.t_min < 1:
            raise ValueError(f"t_min must lie in (0, 1), got {self.t_min}")
        if not 0 <= self.prefix_prob <= 1:
            raise ValueError(f"prefix_prob must lie in [0, 1], got {self.prefix_prob}")
        if not 0 <= self.replan_share <= 1:
            raise ValueError(f"replan_share must lie in [0, 1], got {self.replan_share}")
        if self.replan_share > 0 and self.prefix_prob > 0:
            raise ValueError("prefix_prob and replan_share both show prefixes; set one of them to 0 (replanned rows "
                             "carry their own prefix lengths)")
        if not 0 <= self.replan_delay < self.horizon or self.replan_rows < 1 or self.replan_stale < 0:
            raise ValueError(f"replan_delay must lie in [0, horizon), replan_rows be positive and replan_stale >= 0, "
                             f"got {self.replan_delay}, {self.replan_rows}, {self.replan_stale}")


def chunk_mask(b: int, horizon: int, action_dim: int, gen: torch.Generator, t_min: float = 0.05,
               prefix_prob: float = 0.0, given: torch.Tensor | None = None) -> torch.Tensor:
    """``[B, H*D]`` slots to hide: each with probability t ~ U(t_min, 1) per row, at least one per row. Rows show
    their first ``given`` ``[B]`` steps (the inpainting real-time chunking asks for; 0: none) and always hide the step
    after them; without ``given``, a ``prefix_prob`` share of rows shows its first d ~ U{1..H/2} steps."""
    n = horizon * action_dim
    t = t_min + (1 - t_min) * torch.rand(b, 1, generator=gen)
    masked = torch.rand(b, n, generator=gen) < t
    masked[torch.arange(b), torch.randint(0, n, (b,), generator=gen)] = True
    if given is None and prefix_prob > 0:
        d = torch.randint(1, horizon // 2 + 1, (b,), generator=gen)
        given = torch.where(torch.rand(b, generator=gen) < prefix_prob, d, 0)
    if given is not None:
        d = given.reshape(b, 1) * action_dim  # given slots per row
        slot = torch.arange(n)[None]
        masked &= slot >= d
        masked |= (slot == d) & (d > 0)  # the first slot after a prefix is always to predict
    return masked


def chunk_loss(policy: ActionPolicy, states: torch.Tensor, chunks: torch.Tensor, gen: torch.Generator,
               t_min: float = 0.05, pad: torch.Tensor | None = None, prefix_prob: float = 0.0,
               given: torch.Tensor | None = None) -> torch.Tensor:
    """Masked-diffusion cross-entropy on the chunk slots of ``[B, S]`` states and ``[B, H, D]`` action chunks,
    hidden by ``chunk_mask`` (``given``: ``[B]`` leading steps shown per row); steps marked in ``pad`` ``[B, H]``
    (past the episode's end) are always hidden and left out of the loss."""
    tokens = policy.tokenizer.encode(chunks)  # [B, H*D]
    masked = chunk_mask(chunks.shape[0], chunks.shape[1], chunks.shape[2], gen, t_min, prefix_prob, given)
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


def replanned(eps, cfg: VlaTrainConfig, horizon: int):
    """``replan_rows`` frames' states, their replanned ``[N, H, D]`` chunks and ``[N, H]`` padding, and the prefix
    length d of each (``replan_chunks``; d is cut at the episode's end). The prefix is what runs at that point of the
    broker's queue: the tail of a plan made k ~ U{1..replan_stale} frames earlier (the expert's noise-free plan from
    that frame's state, which the noisy world has since drifted from); with ``replan_stale`` 0, or at an episode's
    first frame, the frame's own demonstrated actions."""
    rng = np.random.default_rng(cfg.seed + 1)
    idx = rng.permutation(len(eps.actions))[: cfg.replan_rows]
    prefix, demo_pad = eps.chunks(idx, horizon)
    d = rng.integers(0, cfg.replan_delay + 1, len(idx))
    d = np.minimum(d, (~demo_pad).sum(1))  # a prefix never runs past its episode's end
    if cfg.replan_stale:
        frames = np.arange(len(eps.episode))
        starts = np.flatnonzero(np.r_[True, eps.episode[1:] != eps.episode[:-1]])
        pos = (frames - starts[np.searchsorted(starts, frames, side="right") - 1])[idx]  # frame within its episode
        k = np.minimum(rng.integers(1, cfg.replan_stale + 1, len(idx)), np.minimum(pos, horizon - d))
        # no step given: the expert plans from the older frame (the prefix array only lends its shape)
        plans, _ = replan_chunks(eps.states[idx - k], prefix, np.zeros(len(idx), np.int64), horizon, progress=True)
        shifted = np.take_along_axis(plans, np.minimum(k[:, None] + np.arange(horizon), horizon - 1)[..., None], 1)
        prefix = np.where((k > 0)[:, None, None], shifted, prefix)
    chunks, pad = replan_chunks(eps.states[idx], prefix, d, horizon, progress=True)
    return eps.states[idx], chunks, pad, d


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
    replan = replanned(eps, cfg, horizon) if cfg.replan_share > 0 else None
    n_replan = int(round(cfg.batch_size * cfg.replan_share))
    for step in bar:
        idx = rng.integers(0, len(eps.actions), cfg.batch_size - n_replan)
        chunks, pad = eps.chunks(idx, horizon)
        states, given = eps.states[idx], None
        if replan is not None:
            j = rng.integers(0, len(replan[0]), n_replan)
            states = np.concatenate([states, replan[0][j]])
            chunks, pad = np.concatenate([chunks, replan[1][j]]), np.concatenate([pad, replan[2][j]])
            given = torch.from_numpy(np.concatenate([np.zeros(len(idx), np.int64), replan[3][j]]))
        loss = chunk_loss(policy, torch.from_numpy(states), torch.from_numpy(chunks), gen, cfg.t_min,
                          torch.from_numpy(pad), cfg.prefix_prob, given)
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
