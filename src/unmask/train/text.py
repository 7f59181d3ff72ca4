"""Recipe for the ``tiny-text`` reference model: a LLaDA-architecture dLLM trained with the masked
diffusion SFT objective (LLaDA, arXiv 2502.09992, Alg. 2) on generated tasks with verifiable answers.

Each row is ``chat(prompt) + answer + EOS…``; only the response (answer and EOS padding) is masked, with
ratio t ~ U(t_min, 1) per row (see ``diffusion_loss`` for the weighting). EOS padding of random length
teaches the model to end answers inside a fixed-length canvas.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from ..core.backbones import BackboneInfo, Transformer
from ..core.checkpoint import save_backbone
from ..core.config import config_to_dict
from ..modalities.text.tasks import TASKS, stream
from ..modalities.text.tokenizer import TextTokenizer, train_bpe
from .common import BackboneRecipe, TrainLog, load_recipe, optimizer_step


@dataclass(frozen=True)
class TextTrainConfig(BackboneRecipe):
    """Recipe of the text reference model (``configs/train_text.yaml``)."""

    out_dir: str = "runs/tiny-text"
    """Where the checkpoint (HF layout) and the training log are written."""
    max_pad: int = 40
    """Largest number of extra EOS tokens after an answer (uniform in [0, max_pad])."""
    tasks: list[str] = field(default_factory=lambda: list(TASKS))
    """Task names to train on."""
    init_from: str | None = None
    """Start from this checkpoint (and reuse its tokenizer) instead of from scratch: a second phase."""

    def __post_init__(self) -> None:
        super().__post_init__()
        unknown = sorted(set(self.tasks) - set(TASKS))
        if unknown:
            raise ValueError(f"unknown task(s) {unknown}; known tasks: {sorted(TASKS)}")


def _batch(items, tok: TextTokenizer, max_pad: int, rng: random.Random) -> tuple[torch.Tensor, torch.Tensor]:
    rows, starts = [], []
    for it in items:
        p = tok.encode(tok.format_prompt(it.prompt))
        a = tok.encode(it.answer) + [tok.eos_id]
        rows.append(p + a)
        starts.append(len(p))
    length = max(map(len, rows)) + rng.randint(0, max_pad)
    ids = torch.full((len(rows), length), tok.eos_id, dtype=torch.long)
    resp = torch.zeros((len(rows), length), dtype=torch.bool)
    for i, (r, s) in enumerate(zip(rows, starts, strict=True)):
        ids[i, : len(r)] = torch.tensor(r)
        resp[i, s:] = True
    return ids, resp


def diffusion_loss(model: Transformer, ids: torch.Tensor, resp: torch.Tensor, mask_id: int,
                   gen: torch.Generator, t_min: float = 0.05) -> torch.Tensor:
    """Cross-entropy on masked response tokens, averaged over them (no 1/t weight).

    LLaDA's ELBO weights each token by 1/t; with t near 0 a single row then dominates the batch and, after
    gradient clipping, drowns every other row's signal. The uniform mean is the usual lower-variance choice
    for training a sampler (MaskGIT, MDLM's ablations); likelihood evaluation keeps the 1/t form.
    """
    b, n = ids.shape
    t = t_min + (1 - t_min) * torch.rand(b, 1, generator=gen)  # [B, 1]
    masked = (torch.rand(b, n, generator=gen) < t) & resp  # [B, L]
    # every row masks at least one response token, so no row is wasted
    first = resp.int().argmax(1)
    masked[torch.arange(b), first + (torch.rand(b, generator=gen) * resp.sum(1)).long()] = True
    noisy = torch.where(masked, mask_id, ids)
    logits = model.logits(model(noisy))  # [B, L, V]
    return F.cross_entropy(logits[masked], ids[masked])


def train(cfg: TextTrainConfig) -> Path:
    out = cfg.start_run()
    if cfg.init_from:
        import shutil

        from ..core.checkpoint import load_backbone

        for name in ("tokenizer.json", "tokenizer_config.json"):
            if Path(cfg.init_from).resolve() != out.resolve():
                shutil.copy(Path(cfg.init_from) / name, out / name)
        tok = TextTokenizer(out)
        model = load_backbone(cfg.init_from).model
    else:
        corpus_rng = stream("train", cfg.seed + 99, cfg.tasks)
        corpus = []
        for _ in range(20000):
            it = next(corpus_rng)
            corpus.append(f"<|user|>{it.prompt}<|assistant|>{it.answer}")
        tok = train_bpe(corpus, cfg.vocab_size, out)
        model = cfg.new_backbone(tok.vocab_size)
    info = BackboneInfo(family="llada", mask_id=tok.mask_id, eos_id=tok.eos_id, pad_id=tok.pad_id,
                        shift_logits=False)
    opt, sched = cfg.optimizer(model.parameters())
    data = stream("train", cfg.seed, cfg.tasks)
    rng = random.Random(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    model.train()
    from tqdm import tqdm

    bar = tqdm(range(1, cfg.steps + 1), desc="train text", mininterval=10)
    log = TrainLog(out, bar, sched, cfg.steps)
    for step in bar:
        ids, resp = _batch([next(data) for _ in range(cfg.batch_size)], tok, cfg.max_pad, rng)
        loss = diffusion_loss(model, ids, resp, tok.mask_id, gen)
        optimizer_step(opt, sched, loss, model.parameters())
        log.step(step, loss=loss.item())
        if step % cfg.save_every == 0 or step == cfg.steps:
            model.eval()
            save_backbone(model, out, family="llada", info=info, dtype=torch.bfloat16,
                          extra_config={"unmask_recipe": config_to_dict(cfg), "unmask_step": step})
            model.train()
    log.close()
    plot_loss(out / "train_log.jsonl", out / "loss.png")
    return out


def plot_loss(log_file: Path, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in log_file.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if "loss" in r]  # evaluation lines carry no loss
    if not rows:
        return
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([r["step"] for r in rows], [r["loss"] for r in rows])
    ax.set(xlabel="step", ylabel="masked-diffusion loss (EMA)", yscale="log", title=png.parent.name)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)


def main(config_path: str | None, overrides: dict | None = None) -> Path:
    return train(load_recipe(TextTrainConfig, config_path, overrides))
