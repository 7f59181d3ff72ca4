"""Audio modality: front end (soundfile + torchaudio, Whisper log-mel), the pretrained Whisper encoder (CTranslate2 or
HF weights), the adapter that turns encoder states into audio Segments, and the synthetic speech data."""

from .frontend import SAMPLE_RATE, AudioError, load_audio, log_mel

__all__ = ["SAMPLE_RATE", "AudioError", "load_audio", "log_mel"]
