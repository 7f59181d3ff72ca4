"""ASR decoding through the core: CTC prior, from-mask baseline, prior-guided refinement (contracts)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from unmask.modalities.audio.frontend import load_audio
from unmask.modalities.audio.shards import iter_shards
from unmask.pipelines.sample_data import speech_sample_shards
from unmask.pipelines.transcribe import DecodeOptions, Transcriber, ctc_greedy


@pytest.fixture(scope="module")
def clips():
    return [(c.key, load_audio(c.audio, c.key), c.text) for c in list(iter_shards(speech_sample_shards()))[:4]]


@pytest.fixture(scope="module")
def random_asr(random_asr_dir):
    return Transcriber.from_pretrained(random_asr_dir)


def test_ctc_greedy_collapses_repeats_and_blanks():
    blank = 0
    path = [0, 5, 5, 0, 5, 7, 7, 7, 0, 0]
    logits = torch.full((len(path), 10), -10.0)
    logits[torch.arange(len(path)), torch.tensor(path)] = 10.0
    ids, conf = ctc_greedy(logits, len(path), blank)
    assert ids == [5, 5, 7] and len(conf) == 3 and min(conf) > 0.99
    ids, _ = ctc_greedy(logits, 3, blank)  # frames past a clip's length are ignored
    assert ids == [5]


def test_from_mask_fills_every_slot(random_asr, clips):
    outs = random_asr.transcribe([a for _, a, _ in clips], DecodeOptions(method="from_mask", policy="low_confidence",
                                                                         gen_length=16))
    assert len(outs) == 4
    for o in outs:
        assert 1 <= o.nfe <= 16 and o.audio_s > 0 and 0 <= o.confidence <= 1


def test_prior_guided_keeps_a_confident_prior_and_prunes_the_tail(random_asr, clips):
    audios = [a for _, a, _ in clips[:2]]
    prior = "the train to oslo leaves at four"
    # a prior with full confidence and no slack: nothing to decode, the prior comes back unchanged, zero forwards
    outs = random_asr.transcribe(audios, DecodeOptions(slack=0), priors=[prior, prior])
    assert [o.text for o in outs] == [prior, prior] and [o.nfe for o in outs] == [0, 0]
    # slack slots are decoded (>= 1 forward), the prior's tokens stay, and the result never exceeds prior + slack
    tok = random_asr.tokenizer
    outs = random_asr.transcribe(audios, DecodeOptions(slack=3, policy="low_confidence"), priors=[prior, "one"])
    for o, p in zip(outs, [prior, "one"], strict=True):
        given = tok.encode(p)
        assert o.token_ids[: len(given)] == given and 1 <= o.nfe <= 3
        assert len(o.token_ids) <= len(given) + 3


def test_prior_guided_from_ctc_needs_few_forwards(random_asr, clips):
    audios = [a for _, a, _ in clips]
    o = DecodeOptions(method="prior_guided", slack=2, prior_threshold=0.0)
    outs = random_asr.transcribe(audios, o)
    assert all(x.nfe <= 2 for x in outs)  # only the slack is masked when every prior token is kept
    ctc = random_asr.transcribe(audios, DecodeOptions(method="ctc"))
    assert all(x.nfe == 0 for x in ctc)
    for g, c in zip(outs, ctc, strict=True):
        assert g.token_ids[: len(c.token_ids)] == c.token_ids and g.prior == c.text


def test_unknown_method_is_named():
    with pytest.raises(ValueError, match="unknown ASR method 'beam'"):
        DecodeOptions(method="beam")


def test_streaming_gives_partials_then_a_final(random_asr, clips):
    from unmask.pipelines.transcribe import StreamingTranscriber

    audio = np.concatenate([clips[0][1], clips[1][1]])
    stream = StreamingTranscriber(random_asr, DecodeOptions(slack=1), segment_s=4.0, min_new_s=0.5)
    partials = [stream.feed(audio[i : i + 8000]) for i in range(0, len(audio), 8000)]
    assert all(not p.is_final for p in partials) and partials[-1].audio_s == pytest.approx(len(audio) / 16000)
    assert len(stream.final) >= 1  # audio past segment_s closed a segment with the full decode
    final = stream.finish()
    assert final.is_final and final.text.startswith(stream.final[0])
    with pytest.raises(ValueError, match="NaN"):
        stream.feed(np.array([np.nan], dtype=np.float32))
