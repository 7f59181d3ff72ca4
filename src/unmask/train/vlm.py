"""Recipe for the ``tiny-vlm`` reference model: a SigLIP-shaped vision tower and ``mlp2x_gelu`` projector trained from
scratch together with a LLaDA-architecture backbone, masked-diffusion loss on the answer canvas (answer + EOS
padding of random length), on procedural scenes generated on the fly (``unmask.modalities.vision.scenes``, train
split). Saved in LLaDA-V's layout (``model_type: llava_llada``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..core.backbones import BackboneInfo
from ..core.config import config_to_dict
from ..decoders import Canvas, ModelRunner
from ..decoders.pruning import PruneConfig, Pruner
from ..modalities.text.tokenizer import train_bpe
from ..modalities.vision.image import ImageConfig, preprocess
from ..modalities.vision.model import VLM, Projector, VisionSpec, VisionTower, load_vlm, save_vlm, siglip_config
from ..modalities.vision.scenes import COLORS, SCAFFOLDS, SHAPES, SHORT_KINDS, SIZE, TASKS, make_item
from .common import BackboneRecipe, TrainLog, load_recipe, optimizer_step
from .text import plot_loss


@dataclass(frozen=True)
class VlmTrainConfig(BackboneRecipe):
    """Recipe of the VLM reference model (``configs/train_vlm.yaml``); backbone and optimiser fields are
    :class:`BackboneRecipe`'s."""

    out_dir: str = "runs/tiny-vlm"
    """Where the checkpoint and the training log are written."""
    batch_size: int = 32
    """Questions (one image each) per step."""
    vision_hidden: int = 192
    """Vision tower width."""
    vision_layers: int = 3
    """Vision tower depth."""
    vision_heads: int = 4
    """Vision tower attention heads."""
    patch_size: int = 8
    """Patch side in pixels: (96 / 8)^2 = 144 visual tokens per image."""
    task_weights: dict = field(default_factory=lambda: {"short": 0.4, "mc": 0.3, "long": 0.3})
    """Sampling weight of each task. A name may also be ``short.KIND`` (one kind of short question, e.g.
    ``short.color``; kinds: ``scenes.SHORT_KINDS``) or a training-only scaffold (``scenes.SCAFFOLDS``: ``where``)."""
    curriculum: list = field(default_factory=list)
    """Earlier stages, each ``{until: STEP, task_weights: {...}}`` in increasing ``until``: steps up to ``until`` draw
    from that stage's weights, and steps after the last stage from ``task_weights``
    (``configs/train_vlm_lookup.yaml``: lookup questions first, then the mix)."""
    max_pad: int = 16
    """Largest number of EOS slots after an answer (uniform in [1, max_pad])."""
    tokenizer_items: int = 2000
    """Generated questions per task that the BPE tokenizer is trained on."""
    init_from: str | None = None
    """Continue from this checkpoint (weights and tokenizer) instead of starting from scratch."""
    probe_weight: float = 1.0
    """Weight of the auxiliary cell-attribute loss on the tower's features (0 turns it off)."""
    stop_after: int | None = None
    """End the run after this step (saving there) while keeping the schedule of ``steps``."""
    reinit_projector: bool = False
    """With ``init_from``: start the projector afresh (small weights), keeping tower and backbone."""
    reinit_backbone: bool = False
    """With ``init_from``: start the language backbone afresh (this recipe's backbone fields), keeping the tower and
    the tokenizer. The earlier backbones had learnt to answer from the question alone; a fresh one on a tower whose
    tokens say what and where learnt to look colours up in 250 steps (README "Vision")."""
    projector_from_probe: int = 0
    """With ``init_from``: start the projector from linear probes of the tower's tokens, fitted on this many training
    scenes (0: off). Each token's own grid cell and its cell's contents (kind, colour, size, digit; the scene
    generator's labels) become the first layer's rows, so every image token reaches the backbone as a near one-hot
    code of what is where; the second layer is a small random map. Frozen, it let a fresh backbone learn "what colour
    is the circle?" to 0.95 in 150 steps, where through a learnt projector it plateaued near 0.5 (README
    "Vision")."""
    freeze_projector: bool = False
    """Keep the projector's weights fixed (with ``projector_from_probe``: keep the probe code as it is)."""
    freeze_tower: bool = False
    """Keep the vision tower's weights fixed (no gradients flow into it; the projector still trains). Needs
    ``init_from``: a tower trained from nothing would stay random."""
    eval_items: int = 40
    """Held-out descriptions scored by :func:`attribute_nll` at the end (written to the log); 0 skips."""
    token_probe: bool = False
    """Also ask every visual token for its own grid cell and that cell's contents (with ``probe_weight``), so that
    each token says where it is and what is there; the cell-averaged probe alone left single tokens without their
    location (a one-token linear probe found its cell at chance), leaving "the colour at the top left" nothing to
    attend to."""
    projector_rms: float | None = None
    """Bound on the projected image tokens' per-dimension RMS, held by a squared-hinge penalty
    (``projector_weight``); None leaves it free. Free, the shipped model's projector drifted to ~14 against the text
    embeddings' ~0.03."""
    projector_weight: float = 10.0
    """Weight of the ``projector_rms`` penalty."""
    pad_weight: float = 1.0
    """Loss weight of the EOS slots after each answer's own EOS (the canvas padding), the answer's tokens and its
    EOS weighing 1; the loss is the weighted mean over masked slots. At 1, a one-word answer in a canvas of ~10
    slots is about a tenth of its row's masked slots; lower values give the answers' own tokens the weight."""
    tower_only: bool = False
    """Train the vision tower alone, through the cell probe (``probe_weight`` > 0, ``token_probe`` on): no backbone
    forward, no diffusion loss, the saved backbone left as initialised. The first stage of the fresh-backbone setup
    (``reinit_backbone``, ``projector_from_probe``), which needs only a tower whose every token says where it is and
    what is there: ``configs/train_vlm_tower.yaml``, where the from-scratch run that first gave one
    (``configs/train_vlm_tokens.yaml``) took 71 minutes."""
    group_by_task: bool = False
    """Draw each step's whole batch from one task (chosen by the weights) instead of each question separately. The
    canvas is as long as the batch's longest answer plus padding, and the loss averages over every masked slot: in a
    mixed batch a one-word answer shares its row with ~50 EOS slots laid out for the descriptions: the short and
    multiple-choice answers' tokens are 1.4% of the canvas slots (mean of 40 batches of the default mix, 1.0-2.4%),
    and so of the masked ones in expectation (the same reason LLaVA groups its batches by length)."""
    prune_share: float = 0.0
    """Share of steps whose backbone forward is pruned as a decode under one of ``prune_settings`` would be (the same
    :class:`~unmask.decoders.pruning.Pruner` ranking, on the step's noisy canvas), so that the model learns to read
    the image from the tokens that pruning keeps; the other steps see every token. 0 trains unpruned. A step is the
    decode's first forward, so a ``late`` or ``progressive`` setting whose ``start`` is above 0 prunes nothing."""
    prune_settings: list = field(default_factory=list)
    """``--prune`` specs (``fastv:layer=0,ratio=0.25``), one drawn uniformly for each pruned step."""

    def __post_init__(self) -> None:
        super().__post_init__()
        known = [*TASKS, *SCAFFOLDS, *(f"short.{k}" for k in SHORT_KINDS)]
        stages = self.stages
        last = 0
        for i, stage in enumerate(stages):
            where = "task_weights" if i == len(stages) - 1 else f"curriculum[{i}]"
            extra = sorted(set(stage) - {"until", "task_weights"})
            if extra or "until" not in stage or "task_weights" not in stage:
                raise ValueError(f"{where} must be {{until: STEP, task_weights: {{...}}}}, got {stage!r}")
            if i < len(stages) - 1 and not last < stage["until"] < self.steps:
                raise ValueError(f"{where}.until must increase and stay below steps ({self.steps}), got "
                                 f"{stage['until']}")
            last = stage["until"]
            unknown = sorted(set(stage["task_weights"]) - set(known))
            if unknown:
                raise ValueError(f"{where} names unknown task(s) {unknown}; known: {known}")
        if not 0 < self.pad_weight <= 1:
            raise ValueError(f"pad_weight must be in (0, 1], got {self.pad_weight}")
        if self.projector_rms is not None and self.projector_rms <= 0:
            raise ValueError(f"projector_rms must be positive (or null for no bound), got {self.projector_rms}")
        if (self.freeze_tower or self.reinit_backbone or self.projector_from_probe) and not self.init_from:
            raise ValueError("freeze_tower, reinit_backbone and projector_from_probe keep a trained tower: set "
                             "init_from to its checkpoint")
        if self.tower_only and not (self.probe_weight > 0 and self.token_probe):
            raise ValueError("tower_only trains the tower through the token probe alone: set probe_weight > 0 and "
                             "token_probe: true")
        if not 0.0 <= self.prune_share <= 1.0:
            raise ValueError(f"prune_share must be in [0, 1], got {self.prune_share}")
        if self.prune_share > 0 and not self.prune_settings:
            raise ValueError("prune_share > 0 needs prune_settings, e.g. ['fastv:layer=0,ratio=0.25']")
        for spec, prune in zip(self.prune_settings, self.prunes, strict=True):
            if prune is None or prune.layer >= self.num_layers:
                raise ValueError(f"prune_settings: {spec!r} must prune after a layer of the backbone's "
                                 f"{self.num_layers} (0..{self.num_layers - 1})")
        if SIZE % self.patch_size:
            raise ValueError(f"patch_size {self.patch_size} must divide the image size {SIZE}")

    @property
    def prunes(self) -> list[PruneConfig | None]:
        """``prune_settings`` parsed."""
        return [PruneConfig.parse(spec) for spec in self.prune_settings]

    @property
    def stages(self) -> list[dict]:
        """The curriculum's stages followed by ``task_weights`` up to ``steps``."""
        return [*self.curriculum, {"until": self.steps, "task_weights": self.task_weights}]

    def weights_at(self, step: int) -> dict:
        """The task weights that step ``step`` (from 1) draws from."""
        return next((st["task_weights"] for st in self.stages if step <= st["until"]), self.task_weights)


def tokenizer_corpus(n: int = 2000) -> list[str]:
    out = []
    for task in TASKS:
        for i in range(n):
            item, _ = make_item(task, "train", i)
            out.append(f"<|user|>\n{item.question}<|assistant|>{item.answer}")
    return out


def new_vlm(cfg: VlmTrainConfig, tok) -> VLM:
    model = cfg.new_backbone(tok.vocab_size)
    vcfg = siglip_config({"hidden_size": cfg.vision_hidden, "intermediate_size": 2 * cfg.vision_hidden,
                          "num_hidden_layers": cfg.vision_layers, "num_attention_heads": cfg.vision_heads,
                          "image_size": SIZE, "patch_size": cfg.patch_size})
    tower = VisionTower(vcfg, cfg.hidden_size, VisionSpec(image=ImageConfig(size=SIZE)))
    info = BackboneInfo(family="llava_llada", mask_id=tok.mask_id, eos_id=tok.eos_id, pad_id=tok.pad_id,
                        shift_logits=False)
    return VLM(tower, model, info, tok, "llava_llada")


class CellProbe(nn.Module):
    """Training-only head: from the tower's features pooled over each of the 3x3 scene cells, predict what the cell
    holds (kind, colour, size, digit). A tower trained from scratch only through the diffusion loss collapsed to
    nearly image-independent features and the backbone learnt to ignore them (loss with shuffled images equalled the
    loss with the right ones); this supervision, from the scene generator's own labels, grounds the tower. It is not
    part of the saved checkpoint."""

    KINDS = ("none", *SHAPES, "digit")
    COLOR_NAMES = ("none", *COLORS)
    SIZES = ("none", "small", "large")
    DIGITS = ("none", *map(str, range(10)))

    def __init__(self, dim: int, tokens: bool = False) -> None:
        """``tokens``: also predict, from every single token, its own cell and that cell's contents."""
        super().__init__()
        names = (self.KINDS, self.COLOR_NAMES, self.SIZES, self.DIGITS)
        self.heads = nn.ModuleList(nn.Linear(dim, len(v)) for v in names)
        self.where = nn.Linear(dim, 9) if tokens else None

    def labels(self, scene) -> torch.Tensor:
        out = torch.zeros(9, 4, dtype=torch.long)  # [cell, head]; 0 = empty
        for t in scene:
            out[t.cell] = torch.tensor([self.KINDS.index(t.kind), self.COLOR_NAMES.index(t.color or "none"),
                                        self.SIZES.index(t.size or "none"),
                                        self.DIGITS.index(str(t.digit)) if t.kind == "digit" else 0])
        return out

    def forward(self, feats: torch.Tensor, scenes: list) -> torch.Tensor:
        b, n, e = feats.shape
        side = int(round(n**0.5))
        grid = feats.view(b, side, side, e).permute(0, 3, 1, 2)  # [B, E, S, S]
        cells = F.adaptive_avg_pool2d(grid, 3).flatten(2).transpose(1, 2)  # [B, 9, E], row-major = scene cells
        target = torch.stack([self.labels(s) for s in scenes])  # [B, 9, 4]
        loss = sum(F.cross_entropy(h(cells).flatten(0, 1), target[..., i].flatten())
                   for i, h in enumerate(self.heads)) / len(self.heads)
        if self.where is None:
            return loss
        cell_of = patch_cells(n).to(feats.device)
        per_token = target[:, cell_of]  # [B, N, 4]
        tok = sum(F.cross_entropy(h(feats).flatten(0, 1), per_token[..., i].flatten())
                  for i, h in enumerate(self.heads))
        tok = tok + F.cross_entropy(self.where(feats).flatten(0, 1), cell_of.repeat(b))
        return loss + tok / (len(self.heads) + 1)


def patch_cells(n: int) -> torch.Tensor:
    """``[n]``: the scene cell (0-8, row-major) of each of ``n`` patches in a square grid."""
    side = int(round(n**0.5))
    rows = torch.arange(side) * 3 // side
    return (rows[:, None] * 3 + rows[None, :]).flatten()


@torch.no_grad()
def probe_projector(tower: VisionTower, hidden: int, scenes: int, seed: int = 0, steps: int = 300,
                    scale: float = 0.1) -> tuple[Projector, float]:
    """A projector whose first layer holds linear probes of ``tower``'s tokens (each token's own cell and its cell's
    kind, colour, size, digit, as :class:`CellProbe` labels them), fitted by full-batch Adam on ``scenes`` training
    scenes (``long`` items from index ``seed * 10_000_000 + 9_000_000``, apart from those a run draws), and whose
    second layer is PyTorch's default init times ``scale``; and the probes' final loss (mean over the five)."""
    sizes = [len(v) for v in (CellProbe.KINDS, CellProbe.COLOR_NAMES, CellProbe.SIZES, CellProbe.DIGITS)] + [9]
    if sum(sizes) > hidden:
        raise ValueError(f"the probes need {sum(sizes)} projector units; hidden_size is {hidden}")
    labeller = CellProbe(1)
    feats, labels = [], []
    for i in range(scenes):
        item, image = make_item("long", "train", seed * 10_000_000 + 9_000_000 + i)
        f = tower.features(preprocess([image], tower.spec.image))[0].float()
        cells = patch_cells(len(f))
        feats.append(f)
        labels.append(torch.cat([labeller.labels(item.scene)[cells], cells[:, None]], 1))
    x, y = torch.cat(feats), torch.cat(labels)
    head = nn.Linear(x.shape[1], sum(sizes))
    nn.init.zeros_(head.weight)  # logistic regression is convex: start from zero, the same fit every time
    nn.init.zeros_(head.bias)
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    for _ in range(steps):
        with torch.enable_grad():
            loss = sum(F.cross_entropy(z, y[:, j]) for j, z in enumerate(head(x).split(sizes, -1))) / len(sizes)
            opt.zero_grad()
            loss.backward()
        opt.step()
    proj = Projector(x.shape[1], hidden)
    proj.fc1.weight.mul_(0.01)
    proj.fc1.bias.zero_()
    proj.fc1.weight[: sum(sizes)] = head.weight
    proj.fc1.bias[: sum(sizes)] = head.bias
    proj.fc2.weight.mul_(scale)
    proj.fc2.bias.zero_()
    return proj, loss.item()


def vlm_loss(vlm: VLM, items: list, images: list[np.ndarray], max_pad: int, rng: random.Random,
             gen: torch.Generator, t_min: float = 0.05, probe: CellProbe | None = None, probe_weight: float = 1.0,
             projector_rms: float | None = None, projector_weight: float = 10.0, pad_weight: float = 1.0,
             prune: PruneConfig | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """(diffusion loss + ``probe_weight`` x probe loss + ``projector_weight`` x the mean squared excess of each image
    token's per-dimension RMS over ``projector_rms``; the parts for the log: ``diffusion``, ``probe`` (unweighted)
    and ``image_rms``, the image tokens' mean per-dimension RMS). ``pad_weight``: the weight of padding slots
    (after an answer's own EOS) in the diffusion loss's weighted mean over masked slots."""
    tok = vlm.tokenizer
    feats = vlm.tower.features(preprocess(images, vlm.spec.image))  # [B, N, E]
    emb = vlm.tower.projector(feats)  # [B, N, D]
    aux = probe(feats, [it.scene for it in items]) if probe is not None else None
    answers = [tok.encode(it.answer) + [tok.eos_id] for it in items]
    g = max(map(len, answers)) + rng.randint(1, max_pad)
    target = torch.full((len(items), g), tok.eos_id, dtype=torch.long)
    for i, a in enumerate(answers):
        target[i, : len(a)] = torch.tensor(a)
    b = len(items)
    t = t_min + (1 - t_min) * torch.rand(b, 1, generator=gen)
    masked = torch.rand(b, g, generator=gen) < t
    masked[torch.arange(b), (torch.rand(b, generator=gen) * g).long()] = True
    noisy = torch.where(masked, tok.mask_id, target)
    canvas = Canvas.build([vlm.prefix(emb[i], it.question) for i, it in enumerate(items)], g, mask_id=tok.mask_id,
                          pad_id=tok.pad_id, init_tokens=list(noisy))  # laid out exactly as at decoding time
    p = canvas.prefix_len
    x = ModelRunner(vlm.backbone, vlm.info).embed(canvas, None, 0, canvas.tokens.shape[1])  # decoding's own inputs
    req = None if prune is None else Pruner(prune).request(canvas, None, 0, canvas.tokens.shape[1])
    h = vlm.backbone(inputs_embeds=x, position_ids=canvas.positions, key_mask=canvas.key_mask, prune=req)
    logits = vlm.backbone.logits(h[:, p:])
    own = torch.arange(g)[None] < torch.tensor([len(a) for a in answers])[:, None]  # answer + its EOS, not padding
    w = torch.where(own, 1.0, pad_weight)[masked]
    diffusion = (F.cross_entropy(logits[masked], target[masked], reduction="none") * w).sum() / w.sum()
    rms = emb.pow(2).mean(-1).sqrt()  # [B, N]
    parts = {"diffusion": diffusion.item(), "probe": 0.0 if aux is None else aux.item(), "image_rms": rms.mean().item()}
    loss = diffusion if aux is None else diffusion + probe_weight * aux
    if projector_rms is not None:
        loss = loss + projector_weight * (rms - projector_rms).clamp(min=0).pow(2).mean()
    return loss, parts


ATTRIBUTE_WORDS = {"color": tuple(COLORS), "shape": SHAPES, "size": ("small", "large"),
                   "cell": ("top", "bottom", "left", "right", "center")}


@torch.no_grad()
def attribute_nll(vlm: VLM, n: int = 40, split: str = "test") -> dict[str, dict[str, float]]:
    """Does the model read what the image shows? In ``n`` long descriptions of ``split``, every attribute word
    (color, shape, size, cell word) is masked alone, everything else given, and its negative log-likelihood (nats,
    summed over the word's tokens) averaged per kind: ``{kind: {"own_image", "other_image", "words"}}``, the second
    with the next scene's image in place of the scene's own. A model that ignores an attribute scores the same with
    either image (the uniform guess over colors is ln 5 = 1.609)."""
    tok = vlm.tokenizer
    words = {tuple(tok.encode(" " + w)): kind for kind, ws in ATTRIBUTE_WORDS.items() for w in ws}
    items = [make_item("long", split, i) for i in range(n + 1)]
    embeds = vlm.encode([img for _, img in items])
    runner = ModelRunner(vlm.backbone, vlm.info)
    sums = {k: [0.0, 0.0, 0] for k in ATTRIBUTE_WORDS}
    for i in range(n):
        item = items[i][0]
        ans = tok.encode(item.answer) + [tok.eos_id]
        spans = [(j, len(w), kind) for j in range(len(ans)) for w, kind in words.items()
                 if tuple(ans[j : j + len(w)]) == w]
        if not spans:
            continue
        rows = []
        for j, k, _ in spans:
            row = torch.tensor(ans)
            row[j : j + k] = tok.mask_id
            rows.append(row)
        for which, emb in enumerate((embeds[i], embeds[i + 1])):
            canvas = Canvas.build([vlm.prefix(emb, item.question)] * len(rows), len(ans), mask_id=tok.mask_id,
                                  pad_id=tok.pad_id, init_tokens=rows)
            logp = runner.forward(canvas).log_softmax(-1)  # [spans, G, V], the logits decoding sees
            for r, (j, k, kind) in enumerate(spans):
                sums[kind][which] -= sum(logp[r, j + t, ans[j + t]].item() for t in range(k))
        for _, _, kind in spans:
            sums[kind][2] += 1
    return {k: {"own_image": a / c, "other_image": b / c, "words": c} for k, (a, b, c) in sums.items() if c}


def draw_item(name: str, counters: dict[str, int], seed: int = 0) -> tuple:
    """The next training item of ``name`` (a task, or ``short.KIND``: the next short question of that kind);
    ``counters`` holds each task's next index (starting at ``seed * 10_000_000``, so a new seed gives new scenes)."""
    task, _, kind = name.partition(".")
    while True:
        index = counters.setdefault(task, seed * 10_000_000)
        counters[task] = index + 1
        item, image = make_item(task, "train", index)
        if not kind or item.kind == kind:
            return item, image


def draw_batch(cfg: VlmTrainConfig, step: int, rng: random.Random, counters: dict[str, int]) -> tuple[list, list]:
    """(items, images) of training step ``step``: names drawn by the step's weights, one for the whole batch under
    ``group_by_task``, else one per question."""
    weights = cfg.weights_at(step)
    names = rng.choices(list(weights), list(weights.values()), k=1 if cfg.group_by_task else cfg.batch_size)
    drawn = [draw_item(name, counters, cfg.seed) for name in names * (cfg.batch_size if cfg.group_by_task else 1)]
    return [it for it, _ in drawn], [img for _, img in drawn]


def train(cfg: VlmTrainConfig) -> Path:
    out = cfg.start_run()
    if cfg.init_from:
        vlm = load_vlm(cfg.init_from)
        vlm.tower.float()
        vlm.backbone.float()
        if cfg.reinit_projector:
            # phase 1's projector had drifted to a large image-independent offset (|mean| 13 vs 2.5 across images):
            # every image token looked alike to the backbone's attention, so it never learnt to read them
            vlm.tower.projector = Projector(vlm.tower.vision.config.hidden_size, cfg.hidden_size)
        if cfg.reinit_backbone:
            vlm.backbone = cfg.new_backbone(vlm.tokenizer.vocab_size)
            if vlm.tower.projector.fc2.out_features != cfg.hidden_size:
                vlm.tower.projector = Projector(vlm.tower.vision.config.hidden_size, cfg.hidden_size)
    else:
        vlm = new_vlm(cfg, train_bpe(tokenizer_corpus(cfg.tokenizer_items), cfg.vocab_size, out))
    probe = CellProbe(vlm.tower.vision.config.hidden_size, cfg.token_probe) if cfg.probe_weight > 0 else None
    probe_fit = None
    if cfg.projector_from_probe:
        vlm.tower.eval()
        vlm.tower.projector, probe_fit = probe_projector(vlm.tower, cfg.hidden_size, cfg.projector_from_probe, cfg.seed)
    if cfg.freeze_tower:
        vlm.tower.vision.requires_grad_(False)
    if cfg.freeze_projector:
        vlm.tower.projector.requires_grad_(False)
    if cfg.tower_only:
        vlm.backbone.requires_grad_(False)
    params = [p for p in (*vlm.backbone.parameters(), *vlm.tower.parameters()) if p.requires_grad]
    params += [] if probe is None else list(probe.parameters())
    opt, sched = cfg.optimizer(params)
    rng = random.Random(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    counters: dict[str, int] = {}
    prunes = cfg.prunes
    prune_rng = random.Random(cfg.seed + 1)  # its own stream: the data drawn does not depend on the pruning
    from tqdm import tqdm

    vlm.backbone.train()
    vlm.tower.train()
    if cfg.freeze_tower:
        vlm.tower.vision.eval()
    bar = tqdm(range(1, cfg.steps + 1), desc="train vlm", mininterval=10)
    log = TrainLog(out, bar, sched, cfg.steps)
    if probe_fit is not None:
        log.write({"step": 0, "projector_probe_loss": probe_fit})
    for step in bar:
        items, images = draw_batch(cfg, step, rng, counters)
        if cfg.tower_only:
            loss = probe(vlm.tower.features(preprocess(images, vlm.spec.image)), [it.scene for it in items])
            logged = {"probe": loss.item()}
        else:
            prune = prune_rng.choice(prunes) if prune_rng.random() < cfg.prune_share else None
            loss, parts = vlm_loss(vlm, items, images, cfg.max_pad, rng, gen, probe=probe,
                                   probe_weight=cfg.probe_weight, projector_rms=cfg.projector_rms,
                                   projector_weight=cfg.projector_weight, pad_weight=cfg.pad_weight, prune=prune)
            logged = {"loss": parts["diffusion"], "probe": parts["probe"], "image_rms": parts["image_rms"]}
        optimizer_step(opt, sched, loss, params)
        log.step(step, **logged)
        last = step == cfg.steps or step == cfg.stop_after
        if step % cfg.save_every == 0 or last:
            vlm.backbone.eval()
            save_vlm(vlm, out, extra_config={"unmask_recipe": config_to_dict(cfg), "unmask_step": step})
            vlm.backbone.train()
        if last:
            break
    if cfg.eval_items and not cfg.tower_only:
        vlm.backbone.eval()
        vlm.tower.eval()
        log.write({"step": step, "attribute_nll": attribute_nll(vlm, cfg.eval_items)})
    log.close()
    plot_loss(out / "train_log.jsonl", out / "loss.png")
    return out


def main(config_path: str | None, overrides: dict | None = None) -> Path:
    return train(load_recipe(VlmTrainConfig, config_path, overrides))
