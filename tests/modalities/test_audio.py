"""Audio front end, CTranslate2 reader, Whisper encoder parity, corpus normalisation, synthesis."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import soundfile as sf
import torch

from unmask.modalities.audio.corpus import normalize, number_words, ordinal_words, sentences
from unmask.modalities.audio.frontend import AudioError, frames_for, load_audio, log_mel
from unmask.modalities.audio.shards import iter_shards
from unmask.pipelines.sample_data import speech_sample_shards


def _wav(audio: np.ndarray, rate: int, fmt: str = "WAV") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, audio, rate, format=fmt)
    return buf.getvalue()


def _tone(seconds: float, rate: int, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    x = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    return np.stack([x] * channels, 1) if channels > 1 else x


def test_load_resamples_and_mixes_to_mono():
    a = load_audio(_wav(_tone(1.0, 44100, channels=2), 44100), "stereo.wav")
    assert a.ndim == 1 and abs(len(a) - 16000) <= 1
    b = load_audio(_wav(_tone(0.5, 8000), 8000, "FLAC"), "low.flac")
    assert abs(len(b) - 8000) <= 1
    c = load_audio(_wav(_tone(0.5, 16000), 16000, "OGG"), "x.ogg")
    assert abs(len(c) - 8000) <= 200


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (b"", "empty file"),
        (b"RIFF\x00\x00garbage" * 10, "not readable audio"),
        (_wav(np.zeros(16000, np.float32), 16000), "silent"),
        (_wav(_tone(1.0, 4000), 4000), "too low"),
        (_wav(_tone(31.0, 8000), 8000), "longer than the 30 s limit"),
    ],
)
def test_bad_audio_is_named_with_a_reason(data, needle):
    with pytest.raises(AudioError, match=needle) as e:
        load_audio(data, "clip-7.wav")
    assert "clip-7.wav" in str(e.value)


def test_log_mel_matches_faster_whisper_features():
    from faster_whisper.feature_extractor import FeatureExtractor

    a = load_audio(next(iter_shards(speech_sample_shards())).audio)
    ref = FeatureExtractor(feature_size=80)(np.pad(a, (0, 480000 - len(a))), padding=0)
    ours = log_mel(a, pad_to=480000).numpy()
    assert ours.shape == (80, 3000)
    np.testing.assert_allclose(ours, ref[:, :3000], atol=1e-4)
    short = log_mel(a)  # whole seconds
    assert short.shape[1] % 100 == 0 and short.shape[1] >= len(a) / 160
    assert frames_for(len(a)) <= short.shape[1] // 2


def test_ct2_encoder_matches_ctranslate2_encode():
    """Our torch encoder on CTranslate2 tiny.en weights vs CTranslate2's own Whisper.encode, same features."""
    import ctranslate2

    from unmask.modalities.audio.encoder import pretrained_tiny_en, tiny_en_path

    a = load_audio(next(iter_shards(speech_sample_shards())).audio)
    mel = log_mel(a, pad_to=480000)[None].numpy()
    ct = ctranslate2.models.Whisper(str(tiny_en_path()), device="cpu", compute_type="float32")
    ref = np.array(ct.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(mel))))
    enc = pretrained_tiny_en()
    with torch.no_grad():
        ours = enc(torch.from_numpy(mel)).numpy()
    assert ours.shape == ref.shape == (1, 1500, 384)
    # tolerance: float16 weights computed in float32 on both sides; differences are summation order only
    assert np.abs(ours - ref).max() < 1e-3 * np.abs(ref).max()


def test_hf_layout_encoder_loads_and_matches_transformers(tmp_path):
    """A tiny random openai/whisper-style directory written by transformers loads into our encoder."""
    from transformers import WhisperConfig, WhisperModel

    from unmask.modalities.audio.encoder import from_hf

    cfg = WhisperConfig(num_mel_bins=80, d_model=64, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=96,
                        decoder_layers=1, decoder_attention_heads=4, decoder_ffn_dim=96, max_source_positions=1500,
                        vocab_size=100, pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1)
    torch.manual_seed(0)
    hf = WhisperModel(cfg).eval()
    hf.save_pretrained(tmp_path)
    enc = from_hf(tmp_path)
    mel = torch.randn(1, 80, 3000)
    with torch.no_grad():
        ref = hf.encoder(mel).last_hidden_state
        ours = enc(mel)
    torch.testing.assert_close(ours, ref, atol=1e-4, rtol=1e-4)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ValueError, match="expected 'whisper'"):
        from_hf(tmp_path)


def test_normalize_spells_numbers_and_drops_punctuation():
    assert number_words(1984) == "one thousand nine hundred eighty four"
    assert ordinal_words(21) == "twenty first" and ordinal_words(12) == "twelfth" and ordinal_words(30) == "thirtieth"
    assert normalize("On March 3rd, Ann paid $1,250 - it's 40%!") == (
        "on march third ann paid one thousand two hundred fifty it's forty percent")


def test_sentence_splits_are_disjoint():
    train, test = set(sentences(400, "train", 0)), set(sentences(100, "test", 0))
    assert not train & test


def test_synthesis_writes_readable_shards(tmp_path):
    from unmask.modalities.audio.synth import TEST_VOICES, plan, write_shards

    utts = plan(4, "train", 1)
    assert not {u.voice for u in utts} & TEST_VOICES
    shards = write_shards(utts, tmp_path, "train", per_shard=3, workers=1, progress=False)
    clips = list(iter_shards(shards))
    assert len(shards) == 2 and [c.text for c in clips] == [u.text for u in utts]
    for c in clips:
        a = load_audio(c.audio, c.key)
        assert 0.5 < len(a) / 16000 < 15


def test_sample_shards_ship_with_transcripts():
    clips = list(iter_shards(speech_sample_shards()))
    assert len(clips) == 24 and all(c.text for c in clips)
