"""lmms-eval model ``unmask_dvlm``: the diffusion VLM pipeline behind lmms-eval's ``lmms`` interface.

Registered through the ``lmms_eval.models`` entry-point group (pyproject), so after ``pip install unmask[eval]``::

    lmms-eval --model unmask_dvlm --model_args pretrained=tiny-vlm,prune=fastv:layer=1,ratio=0.5 \\
        --tasks unmask_scenes_short --include_path TASK_DIR

``generate_until`` decodes through the shared core (any policy, cache and pruning setting); ``loglikelihood`` is the
Monte-Carlo ELBO of the continuation, as diffusion LMs score multiple choice. :func:`write_tasks` turns a manifest of
``unmask data vision`` into local lmms-eval tasks (no hub access).
"""

from __future__ import annotations

import json
from pathlib import Path

from lmms_eval.api.instance import GenerationResult
from lmms_eval.api.model import lmms
from lmms_eval.models.registry_v2 import ModelManifest

from ..decoders.pruning import PruneConfig, Pruner
from ..pipelines.vlm_eval import EvalOptions, VLMEvaluator


def manifest() -> ModelManifest:
    return ModelManifest(model_id="unmask_dvlm", simple_class_path="unmask.integrations.lmms_eval.UnmaskDVLM")


class UnmaskDVLM(lmms):
    is_simple = True

    def __init__(self, pretrained: str = "tiny-vlm", device: str = "cpu", batch_size: int | str = 8,
                 policy: str = "low_confidence", tokens_per_step: int | str = 2, cache: str = "none",
                 prune: str = "none", elbo_samples: int | str = 8, **_: object) -> None:
        super().__init__()
        self.ev = VLMEvaluator.from_pretrained(pretrained, device)
        self.options = EvalOptions(policy=policy, tokens_per_step=int(tokens_per_step), cache=cache,
                                   batch_size=int(batch_size), elbo_samples=int(elbo_samples))
        self.prune = PruneConfig.parse(str(prune).replace(";", ","))  # lmms-eval splits model_args on commas
        self._rank, self._world_size = 0, 1

    def _doc_images(self, doc_to_visual, doc_id, task, split) -> list:
        visuals = doc_to_visual(self.task_dict[task][split][doc_id])
        if not visuals:
            raise ValueError(f"{task}/{split} doc {doc_id}: no image; unmask_dvlm needs one image per question")
        return visuals[0]

    def generate_until(self, requests) -> list[str]:
        from tqdm import tqdm

        self.ev.runner.pruner = None if self.prune is None else Pruner(self.prune)
        out: list[str] = []
        step = self.options.tokens_per_step
        bs = self.options.batch_size
        for b0 in tqdm(range(0, len(requests), bs), desc="unmask_dvlm generate", disable=len(requests) <= bs):
            chunk = [r.args for r in requests[b0 : b0 + bs]]
            kw = dict(chunk[0][1])
            until = kw.get("until") or []
            until = [until] if isinstance(until, str) else list(until)
            gen = int(kw.get("max_new_tokens", 64))
            gen = max(step, -(-gen // step) * step)
            images = [self._doc_images(*a[2:]) for a in chunk]
            embeds = self.ev.vlm.encode(images)
            texts, _ = self.ev.generate(embeds, [{"question": a[0]} for a in chunk], gen, self.options)
            for t in texts:
                for stop in until:
                    if stop and stop in t:
                        t = t[: t.index(stop)]
                out.append(t)
        self.ev.runner.pruner = None
        return out

    def loglikelihood(self, requests) -> list:
        """(log-likelihood, is_greedy) per request, each wrapped in ``GenerationResult``: lmms-eval 0.7.3's
        ``unwrap_generation_output`` turns any other non-string output, plain tuples included, into its ``str()``,
        which its own multiple-choice scoring then cannot unpack; the wrapper passes the tuple through untouched."""
        tok = self.ev.tok
        res = []
        for r in requests:
            context, continuation, doc_to_visual, doc_id, task, split = r.args
            if not isinstance(continuation, str):
                continuation = continuation(self.task_dict[task][split][doc_id])
            embeds = self.ev.vlm.encode([self._doc_images(doc_to_visual, doc_id, task, split)])
            prefix = self.ev.vlm.prefix(embeds[0], context)
            ll = self.ev.elbo(prefix, tok.encode(continuation.strip()) + [tok.eos_id], self.options.elbo_samples)
            res.append(GenerationResult(text=(ll, False)))
        return res

    def generate_until_multi_round(self, requests) -> list[str]:
        raise NotImplementedError("unmask_dvlm answers single-turn questions; multi-round tasks are not supported")


_UTILS = '''"""Written by unmask.integrations.lmms_eval.write_tasks."""
from PIL import Image


def doc_to_visual(doc):
    return [Image.open(doc["image"]).convert("RGB")]


def exact_match(doc, results):
    return {"exact_match": float(results[0].strip().lower().rstrip(".") == doc["answer"].strip().lower())}


def mc_choices(doc):
    return ["A", "B", "C", "D"]


def mc_target(doc):
    return "ABCD".index(doc["answer"])
'''

_SHORT = """task: unmask_scenes_{task}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_visual: !function utils.doc_to_visual
doc_to_text: question
doc_to_target: answer
generation_kwargs:
  max_new_tokens: {gen}
  until: []
process_results: !function utils.exact_match
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
"""

_MC = """task: unmask_scenes_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_visual: !function utils.doc_to_visual
doc_to_text: question
doc_to_choice: !function utils.mc_choices
doc_to_target: !function utils.mc_target
target_delimiter: ""
metric_list:
  - metric: acc
"""


def write_tasks(out_dir: str | Path, manifest: str | Path, tasks: tuple[str, ...] = ("short", "mc")) -> Path:
    """lmms-eval task folder (YAML + utils.py + data) for ``tasks`` of a manifest from ``unmask data vision``:
    ``unmask_scenes_short`` (generation, exact match) and ``unmask_scenes_mc`` (log-likelihood over A-D, accuracy)."""
    from ..modalities.vision.scenes import read_split

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "utils.py").write_text(_UTILS)
    for task in tasks:
        if task not in ("short", "mc", "long"):
            raise ValueError(f"no lmms-eval task for {task!r}; known: short, mc, long")
        data = out / f"{task}.jsonl"
        with data.open("w") as f:
            for r in read_split(manifest, tasks=[task]):
                f.write(json.dumps({k: r[k] for k in ("id", "image", "question", "answer")}) + "\n")
        text = _MC.format(data=data) if task == "mc" else _SHORT.format(task=task, data=data,
                                                                        gen=64 if task == "long" else 8)
        (out / f"unmask_scenes_{task}.yaml").write_text(text)
    return out
