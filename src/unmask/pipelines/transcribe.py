"""Speech to text with the shared decoding core: Whisper encoder -> adapter -> masked-diffusion decoder.

Three methods, one model:
- ``ctc``: greedy CTC on the adapter (no decoder forward at all);
- ``from_mask``: the decoder fills an all-mask canvas of ``gen_length`` slots (the dLLM baseline);
- ``prior_guided`` (dLLM-ASR): the canvas starts from the CTC hypothesis (or one passed in), its length is the
  hypothesis plus ``slack`` slots and every slot past that is fixed to EOS (trailing slots pruned), prior tokens
  below ``prior_threshold`` are remasked, and the core refines them with the chosen policy; committed tokens
  are never recomputed (they exit early) and rows stop at EOS.

Everything goes through ``Canvas``/``Policy``/``denoise``: no forked loop.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..core.checkpoint import load_backbone
from ..core.models import resolve_model
from ..decoders import Canvas, ModelRunner, SamplingParams, Segment, build_policy, denoise
from ..modalities.audio.corpus import normalize
from ..modalities.audio.encoder import WhisperEncoder, from_hf, pretrained_tiny_en
from ..modalities.audio.features import encode_batch
from ..modalities.audio.frontend import SAMPLE_RATE, SILENCE_PEAK
from ..modalities.audio.model import SEP_TOKEN, AudioAdapter, load_adapter
from ..modalities.text.tokenizer import TextTokenizer, cut_at_eos

METHODS = ("prior_guided", "from_mask", "ctc")


@dataclass
class Transcript:
    text: str
    confidence: float
    """Geometric mean of the CTC posterior of the prior's tokens (0..1)."""
    nfe: int
    """Decoder forward passes for this clip (0 for ``ctc``)."""
    audio_s: float
    prior: str = ""
    """The CTC hypothesis (what ``prior_guided`` started from unless a prior was passed in)."""
    token_ids: list[int] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class DecodeOptions:
    method: str = "prior_guided"
    policy: str = "threshold"
    threshold: float = 0.9
    """Commit bar of the ``threshold`` policy (refinement)."""
    prior_threshold: float = 0.5
    """Prior tokens whose CTC confidence is below this are remasked and re-decided by the decoder."""
    slack: int = 0
    """Masked slots after the prior hypothesis (room for words the prior missed; unused ones become EOS). 0 by
    default: on the dev split slack 2 added insertions (WER 0.272 -> 0.285 with tiny-asr)."""
    gen_length: int = 64
    """Canvas length of ``from_mask``."""

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown ASR method {self.method!r}; choose one of {', '.join(METHODS)}")


def error_rates(refs: list[str], hyps: list[str]) -> dict[str, float]:
    """WER and CER (jiwer) with both sides normalised (lower case, numbers spelled out, no punctuation)."""
    import jiwer

    r, h = [normalize(x) for x in refs], [normalize(x) for x in hyps]
    return {"wer": round(jiwer.wer(r, h), 4), "cer": round(jiwer.cer(r, h), 4)}


def ctc_greedy(logits: torch.Tensor, n_frames: int, blank: int) -> tuple[list[int], list[float]]:
    """Collapsed argmax path of one clip: token ids and each token's confidence (mean frame posterior)."""
    probs = logits[:n_frames].float().softmax(-1)
    p, best = probs.max(-1)
    ids: list[int] = []
    conf: list[float] = []
    prev = blank
    run: list[float] = []
    for t in range(n_frames):
        k = int(best[t])
        if k != blank and k == prev:
            run.append(float(p[t]))
        else:
            if run:
                conf.append(float(np.mean(run)))
            run = [float(p[t])] if k != blank else []
            if k != blank:
                ids.append(k)
        prev = k
    if run:
        conf.append(float(np.mean(run)))
    return ids, conf


class Transcriber:
    """Plain class (no Ray): load once, then ``transcribe(list of 16 kHz arrays)``."""

    def __init__(self, encoder: WhisperEncoder, adapter: AudioAdapter, runner: ModelRunner, tokenizer: TextTokenizer,
                 sep_id: int) -> None:
        self.encoder, self.adapter, self.runner, self.tokenizer = encoder, adapter, runner, tokenizer
        self.sep_id = sep_id
        self.eos_id = tokenizer.eos_id
        self.pad_id = tokenizer.pad_id

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path = "tiny-asr", *, encoder_path: str | Path | None = None,
                        device: str = "cpu", dtype: str | None = None) -> Transcriber:
        path = resolve_model(name_or_path)
        adapter, meta = load_adapter(path)
        loaded = load_backbone(path, dtype=dtype, device=device)
        tok = TextTokenizer(path)
        sep = tok.token_id(meta.get("sep_token", SEP_TOKEN))
        encoder = from_hf(encoder_path) if encoder_path else pretrained_tiny_en()
        return cls(encoder.to(device), adapter.to(device), ModelRunner(loaded.model, loaded.info), tok, sep)

    @property
    def device(self) -> torch.device:
        return self.runner.device

    @torch.inference_mode()
    def features(self, audios: list[np.ndarray]) -> tuple[list[torch.Tensor], torch.Tensor, list[int]]:
        """Adapter embeddings per clip, CTC logits ``[B, T', V]`` and frames per clip."""
        hs = encode_batch(self.encoder, audios)
        lens = [h.shape[0] for h in hs]
        padded = torch.nn.utils.rnn.pad_sequence(hs, batch_first=True).to(self.device)
        emb, ctc = self.adapter(padded)
        out = [int(AudioAdapter.out_frames(n)) for n in lens]
        return [emb[i, : out[i]] for i in range(len(hs))], ctc, out

    @torch.inference_mode()
    def transcribe(self, audios: list[np.ndarray], options: DecodeOptions | None = None,
                   priors: list[str | None] | None = None) -> list[Transcript]:
        """Transcripts of 16 kHz mono clips (see :func:`unmask.modalities.audio.load_audio`).

        ``priors[i]`` (text) replaces the CTC hypothesis of clip i as the prior (``prior_guided`` only)."""
        o = options or DecodeOptions()
        if not audios:
            return []
        t0 = time.perf_counter()
        embs, ctc, frames = self.features(audios)
        t_enc = time.perf_counter() - t0
        blank = self.adapter.cfg.blank_id
        never = [i for i in (self.runner.info.mask_id, self.eos_id, self.sep_id) if i is not None and i != blank]
        ctc[..., never] = float("-inf")  # the prior holds transcript tokens only
        hyps = [ctc_greedy(ctc[i], frames[i], blank) for i in range(len(audios))]
        confidence = [float(np.exp(np.mean(np.log(np.clip(c, 1e-6, 1))))) if c else 0.0 for _, c in hyps]
        secs = [len(a) / SAMPLE_RATE for a in audios]
        if o.method == "ctc":
            return [Transcript(self.tokenizer.decode(ids), confidence[i], 0, secs[i], self.tokenizer.decode(ids), ids,
                               {"encode": t_enc, "decode": 0.0}) for i, (ids, _) in enumerate(hyps)]
        prefixes = [[Segment("audio", embeddings=e), Segment("text", token_ids=torch.tensor([self.sep_id]))]
                    for e in embs]
        mask = self.runner.info.mask_id
        init = fixed = None
        if o.method == "from_mask":
            g = o.gen_length
        else:
            priors = priors or [None] * len(audios)
            rows = []
            for (ids, conf), given in zip(hyps, priors, strict=True):
                if given is not None:
                    ids = self.tokenizer.encode(normalize(given))
                    conf = [1.0] * len(ids)
                rows.append([t if c >= o.prior_threshold else mask for t, c in zip(ids, conf, strict=True)])
            g = max(len(r) for r in rows) + o.slack
            init, fixed = [], []
            for r in rows:
                row = torch.full((g,), self.eos_id, dtype=torch.long)
                row[: len(r)] = torch.tensor(r, dtype=torch.long)
                row[len(r) : len(r) + o.slack] = mask
                fx = torch.zeros(g, dtype=torch.bool)
                fx[len(r) + o.slack :] = True  # pruned trailing slots: EOS, never decoded
                init.append(row)
                fixed.append(fx)
        canvas = Canvas.build(prefixes, g, mask_id=mask, pad_id=self.pad_id, init_tokens=init, fixed_masks=fixed,
                              max_length=self.runner.max_length, device=self.device)
        cfg = {"threshold": o.threshold} if o.policy == "threshold" else {}
        t1 = time.perf_counter()
        if bool(canvas.masked().any()):
            res = denoise(self.runner, canvas, build_policy(o.policy, cfg), SamplingParams(gen_length=g),
                          eos_id=self.eos_id)
            tokens, nfe = res.tokens, res.nfe.tolist()
        else:
            tokens, nfe = canvas.canvas, [0] * len(audios)
        t_dec = time.perf_counter() - t1
        out = []
        for i in range(len(audios)):
            ids = cut_at_eos(tokens[i].tolist(), self.eos_id)
            out.append(Transcript(" ".join(self.tokenizer.decode(ids).split()), confidence[i], int(nfe[i]), secs[i],
                                  self.tokenizer.decode(hyps[i][0]), ids, {"encode": t_enc, "decode": t_dec}))
        return out


@dataclass
class Partial:
    text: str
    """Everything heard so far: finished segments plus the current hypothesis."""
    is_final: bool
    audio_s: float


class StreamingTranscriber:
    """Audio arriving in chunks -> partial transcripts (two-pass, as streaming ASR systems do).

    Each ``feed`` re-reads the current segment and returns the cheap CTC hypothesis as the partial; when the
    segment reaches ``segment_s`` (the encoder's 30 s window at most) or on ``finish``, the segment is decoded
    with the full ``options`` (prior-guided by default) and frozen. A plain class: Ray Serve wiring comes later.
    """

    def __init__(self, model: Transcriber, options: DecodeOptions | None = None, segment_s: float = 20.0,
                 min_new_s: float = 0.5) -> None:
        if not 1.0 <= segment_s <= 30.0:
            raise ValueError(f"segment_s must be within [1, 30] seconds (the encoder window), got {segment_s}")
        self.model, self.options = model, options or DecodeOptions()
        self.segment_s, self.min_new_s = segment_s, min_new_s
        self.final: list[str] = []
        self.buffer = np.zeros(0, dtype=np.float32)
        self.partial = ""
        self.total_s = 0.0
        self._since = 0

    def _text(self) -> str:
        return " ".join(t for t in [*self.final, self.partial] if t)

    def _decode(self, options: DecodeOptions) -> str:
        if len(self.buffer) < SAMPLE_RATE // 10 or np.abs(self.buffer).max() < SILENCE_PEAK:
            return ""
        return self.model.transcribe([self.buffer], options)[0].text

    def feed(self, chunk: np.ndarray) -> Partial:
        """Add 16 kHz mono samples; returns the running transcript."""
        chunk = np.asarray(chunk, dtype=np.float32).reshape(-1)
        if not np.isfinite(chunk).all():
            raise ValueError("audio chunk contains NaN or inf samples")
        self.total_s += len(chunk) / SAMPLE_RATE
        while len(chunk):
            room = int(self.segment_s * SAMPLE_RATE) - len(self.buffer)
            take, chunk = chunk[:room], chunk[room:]
            self.buffer = np.concatenate([self.buffer, take])
            self._since += len(take)
            if len(self.buffer) >= int(self.segment_s * SAMPLE_RATE):
                self._close_segment()
        if self._since >= self.min_new_s * SAMPLE_RATE:
            self.partial = self._decode(DecodeOptions(method="ctc"))
            self._since = 0
        return Partial(self._text(), False, self.total_s)

    def _close_segment(self) -> None:
        text = self._decode(self.options)
        if text:
            self.final.append(text)
        self.buffer = np.zeros(0, dtype=np.float32)
        self.partial = ""
        self._since = 0

    def finish(self) -> Partial:
        """Decode what is left with the full method; the transcript is final."""
        self._close_segment()
        return Partial(self._text(), True, self.total_s)
