"""What every reference-model recipe shares: the LLaDA-architecture backbone's shape, the optimiser and its
schedule, and the run's bookkeeping knobs."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..core.backbones import Transformer, TransformerConfig
from ..core.config import config_from_dict, load_yaml


@dataclass(frozen=True)
class BackboneRecipe:
    vocab_size: int = 512
    """Byte-level BPE vocabulary size, special tokens included."""
    hidden_size: int = 256
    """Backbone width."""
    num_layers: int = 4
    """Backbone depth."""
    num_heads: int = 4
    """Attention heads."""
    intermediate_size: int = 640
    """SwiGLU width."""
    max_position_embeddings: int = 512
    """Context length written to the checkpoint."""
    steps: int = 3000
    """Optimizer steps."""
    batch_size: int = 64
    """Rows per step."""
    lr: float = 2e-3
    """Peak AdamW learning rate (linear warm-up, cosine decay to 10%)."""
    warmup: int = 100
    """Warm-up steps."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    seed: int = 0
    """Seed of data order and initialisation."""
    save_every: int = 250
    """Write the checkpoint every this many steps (the run can be stopped at any save)."""
    threads: int = 2
    """CPU threads for torch."""
    out_dir: str = "runs/model"
    """Where the checkpoint and the training log are written."""

    def __post_init__(self) -> None:
        if self.steps <= 0 or self.batch_size <= 0:
            raise ValueError(f"steps and batch_size must be positive, got {self.steps}, {self.batch_size}")

    def new_backbone(self, vocab_size: int) -> Transformer:
        """A freshly initialised backbone of this shape (normal(0, 0.02) matrices)."""
        cfg = TransformerConfig(vocab_size=vocab_size, hidden_size=self.hidden_size, num_layers=self.num_layers,
                                num_heads=self.num_heads, num_kv_heads=self.num_heads,
                                intermediate_size=self.intermediate_size,
                                max_position_embeddings=self.max_position_embeddings)
        model = Transformer(cfg)
        with torch.no_grad():
            for p in model.parameters():
                if p.dim() == 2:
                    torch.nn.init.normal_(p, std=0.02)
        return model

    def start_run(self) -> Path:
        """Threads and seed set, the output directory created: what every recipe does first."""
        torch.set_num_threads(self.threads)
        torch.manual_seed(self.seed)
        out = Path(self.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        return out

    def optimizer(self, params) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
        opt = torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay, betas=(0.9, 0.98))
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt,
            lambda s: min(1.0, (s + 1) / self.warmup)
            * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, s / self.steps)))),
        )
        return opt, sched


def optimizer_step(opt: torch.optim.Optimizer, sched: torch.optim.lr_scheduler.LRScheduler, loss: torch.Tensor,
                   params) -> None:
    """One update of every recipe: backward, clip the gradient norm at 1, step the optimiser and the schedule."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    sched.step()


class TrainLog:
    """Every recipe's run log: an exponential moving average (0.98) of named losses, shown on the progress bar and
    written to ``out/train_log.jsonl`` as ``{"step", <losses>, "lr", "elapsed_s"}`` every ``every`` steps and at the
    last one."""

    def __init__(self, out: Path, bar, sched: torch.optim.lr_scheduler.LRScheduler, steps: int, every: int = 20
                 ) -> None:
        self.path = out / "train_log.jsonl"
        self.file = self.path.open("w")
        self.bar, self.sched, self.steps, self.every = bar, sched, steps, every
        self.avg: dict[str, float] | None = None
        self.t0 = time.time()

    def step(self, step: int, **losses: float) -> None:
        self.avg = dict(losses) if self.avg is None else {k: 0.98 * self.avg[k] + 0.02 * v for k, v in losses.items()}
        if step % self.every == 0 or step == self.steps:
            self.bar.set_postfix(**{k: f"{v:.3f}" for k, v in self.avg.items()})
            self.write({"step": step, **self.avg, "lr": self.sched.get_last_lr()[0],
                        "elapsed_s": round(time.time() - self.t0, 1)})

    def write(self, record: dict) -> None:
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def load_recipe[T](cls: type[T], config_path: str | None, overrides: dict | None = None) -> T:
    """A recipe from its YAML file (if any) with ``overrides`` applied; unknown keys fail naming the file."""
    data = load_yaml(config_path) if config_path else {}
    data.update(overrides or {})
    return config_from_dict(cls, data, where=config_path or "overrides")
