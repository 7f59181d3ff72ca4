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
from ..modalities.text.tokenizer import TextTokenizer


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
        path = resolve_model(name_or_path)
        loaded = load_backbone(path, dtype=dtype, device=device)
        return cls(ModelRunner(loaded.model, loaded.info), TextTokenizer(path), use_chat_template)

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
            ids = res.tokens[i].tolist()
            if self.eos_id is not None and self.eos_id in ids:
                ids = ids[: ids.index(self.eos_id)]
            out.append(Generation(prompt, self.tokenizer.decode(ids), ids, int(res.nfe[i]),
                                  res.commit_step[i].tolist(), dict(res.timings)))
        return out
