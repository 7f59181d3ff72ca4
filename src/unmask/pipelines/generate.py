"""Text generation: prompts in, completions with telemetry out."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..core.checkpoint import load_backbone
from ..core.models import resolve_model
from ..decoders import (
    Cache,
    Canvas,
    ModelRunner,
    Policy,
    SamplingParams,
    Segment,
    build_cache,
    build_policy,
    denoise,
)
from ..modalities.text.tokenizer import TextTokenizer, cut_at_eos


@dataclass
class Generation:
    prompt: str
    text: str
    token_ids: list[int]
    nfe: int
    commit_step: list[int]
    timings: dict[str, float]


class TextGenerator:
    def __init__(self, runner: ModelRunner, tokenizer: TextTokenizer, use_chat_template: bool = True) -> None:
        self.runner = runner
        self.tokenizer = tokenizer
        self.use_chat_template = use_chat_template
        info = runner.info
        self.eos_id = info.eos_id if info.eos_id is not None else tokenizer.eos_id
        self.pad_id = next(i for i in (info.pad_id, tokenizer.pad_id, self.eos_id, 0) if i is not None)

    @classmethod
    def from_pretrained(
        cls, name_or_path: str | Path, *, dtype: str | None = None, device: str = "cpu", use_chat_template: bool = True
    ) -> TextGenerator:
        if str(name_or_path).startswith("random:"):
            return cls.random(str(name_or_path), dtype=dtype, device=device)
        path = resolve_model(name_or_path)
        loaded = load_backbone(path, dtype=dtype, device=device)
        return cls(ModelRunner(loaded.model, loaded.info), TextTokenizer(path), use_chat_template)

    @classmethod
    def random(cls, spec: str, *, dtype: str | None = None, device: str = "cpu", seed: int = 0) -> TextGenerator:
        """A published model's shape with random weights (``random:llada-8b``), for speed measurements only.

        Prompts go through the ``tiny-text`` tokenizer and the canvas may only hold its ordinary tokens (never
        EOS), so every row runs its full length and NFE is set by the policy alone."""
        from ..core.backbones import BackboneInfo, TransformerConfig
        from ..core.checkpoint import random_backbone, resolve_dtype
        from ..core.models import random_shape

        fields, mask_id = random_shape(spec)
        cfg = TransformerConfig(**fields)
        torch_dtype = resolve_dtype(dtype or ("bfloat16" if str(device).startswith("cuda") else "float32"))
        model = random_backbone(cfg, seed=seed, dtype=torch_dtype, device=device)
        tokenizer = TextTokenizer(resolve_model("tiny-text"))
        allowed = torch.zeros(cfg.vocab_size, dtype=torch.bool)
        allowed[: tokenizer.vocab_size] = True
        allowed[[i for i in (tokenizer.eos_id, tokenizer.pad_id, tokenizer.mask_id) if i is not None]] = False
        info = BackboneInfo(family="llada", mask_id=mask_id, eos_id=tokenizer.eos_id, pad_id=tokenizer.pad_id,
                            shift_logits=False)
        return cls(ModelRunner(model, info, allowed_tokens=allowed), tokenizer)

    def encode(self, prompts: list[str]) -> list[list[Segment]]:
        out = []
        for i, p in enumerate(prompts):
            if not isinstance(p, str) or not p.strip():
                raise ValueError(f"prompt {i} is empty; give every request some text")
            ids = self.tokenizer.encode(self.tokenizer.format_prompt(p, self.use_chat_template))
            out.append([Segment("text", token_ids=torch.tensor(ids, dtype=torch.long))])
        return out

    def generate(
        self,
        prompts: list[str],
        params: SamplingParams | None = None,
        policy: Policy | str = "low_confidence",
        cache: Cache | str = "none",
    ) -> list[Generation]:
        params = params or SamplingParams()
        policy = build_policy(policy) if isinstance(policy, str) else policy
        cache = build_cache(cache) if isinstance(cache, str) else cache
        t0 = time.perf_counter()
        prefixes = self.encode(prompts)
        canvas = Canvas.build(
            prefixes, params.gen_length, mask_id=self.runner.info.mask_id, pad_id=self.pad_id,
            max_length=self.runner.max_length, device=self.runner.device,
        )
        encode_s = time.perf_counter() - t0
        res = denoise(self.runner, canvas, policy, params, eos_id=self.eos_id, cache=cache)
        res.timings["encode"] = encode_s
        out = []
        for i, prompt in enumerate(prompts):
            ids = cut_at_eos(res.tokens[i].tolist(), self.eos_id)
            out.append(Generation(prompt, self.tokenizer.decode(ids), ids, int(res.nfe[i]),
                                  res.commit_step[i].tolist(), dict(res.timings)))
        return out
