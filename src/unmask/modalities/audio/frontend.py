"""Audio front end: read (soundfile: wav/flac/ogg), mono-mix, resample to 16 kHz (torchaudio), Whisper log-mel.

Every failure raises :class:`AudioError` naming the input and the fix, so a batch job can record it and go on.
"""

from __future__ import annotations

import io
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

SAMPLE_RATE = 16_000
N_FFT = 400
HOP = 160
N_MELS = 80
MAX_SECONDS = 30.0
"""Whisper's encoder window; longer audio must be split first."""
MIN_RATE = 8_000
SILENCE_PEAK = 1e-4


class AudioError(ValueError):
    """Input audio that cannot be transcribed; the message says which input and why."""


def load_audio(src: str | Path | bytes, name: str | None = None, max_seconds: float = MAX_SECONDS) -> np.ndarray:
    """Mono float32 samples at 16 kHz from a path or encoded bytes (wav, flac, ogg)."""
    import soundfile as sf

    name = name or (str(src) if not isinstance(src, bytes) else "<bytes>")
    if isinstance(src, bytes) and not src:
        raise AudioError(f"{name}: empty file (0 bytes)")
    try:
        data, rate = sf.read(io.BytesIO(src) if isinstance(src, bytes) else str(src), dtype="float32",
                             always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        raise AudioError(f"{name}: not readable audio ({e}); expected wav, flac or ogg") from e
    if data.shape[0] == 0:
        raise AudioError(f"{name}: no samples (empty audio stream)")
    if rate < MIN_RATE:
        raise AudioError(f"{name}: sample rate {rate} Hz is too low for speech; need >= {MIN_RATE} Hz "
                         f"(16 kHz is native)")
    seconds = data.shape[0] / rate
    if seconds > max_seconds:
        raise AudioError(f"{name}: {seconds:.1f} s is longer than the {max_seconds:.0f} s limit; split it into "
                         f"shorter segments first (e.g. `sox in.wav out.wav trim 0 {max_seconds:.0f} : newfile "
                         f": restart`)")
    if not np.isfinite(data).all():
        raise AudioError(f"{name}: samples contain NaN or inf")
    audio = data.mean(axis=1)
    if rate != SAMPLE_RATE:
        audio = resample(audio, rate)
    if np.abs(audio).max() < SILENCE_PEAK:
        raise AudioError(f"{name}: silent (peak amplitude below {SILENCE_PEAK:g}); nothing to transcribe")
    return audio.astype(np.float32)


def resample(audio: np.ndarray, rate: int) -> np.ndarray:
    import torchaudio.functional as AF

    return AF.resample(torch.from_numpy(np.ascontiguousarray(audio)), rate, SAMPLE_RATE).numpy()


@lru_cache(maxsize=4)
def _mel_filters(device: str) -> torch.Tensor:
    import torchaudio.functional as AF

    # Slaney-scale, Slaney-normalised triangles: librosa.filters.mel(sr=16000, n_fft=400, n_mels=80), Whisper's table
    fb = AF.melscale_fbanks(N_FFT // 2 + 1, 0.0, SAMPLE_RATE / 2, N_MELS, SAMPLE_RATE, norm="slaney",
                            mel_scale="slaney")
    return fb.T.contiguous().to(device)  # [n_mels, n_freqs]


def log_mel(audio: np.ndarray | torch.Tensor, pad_to: int | None = None) -> torch.Tensor:
    """Whisper log-mel ``[80, frames]`` of 16 kHz samples, zero-padded first to ``pad_to`` samples.

    ``pad_to=None`` pads to whole seconds (100 frames a second; frame count even, as the encoder needs);
    ``pad_to=480000`` gives Whisper's own 30 s window (3000 frames)."""
    x = torch.as_tensor(audio, dtype=torch.float32)
    target = pad_to if pad_to is not None else max(1, -(-x.shape[-1] // SAMPLE_RATE)) * SAMPLE_RATE
    if x.shape[-1] > target:
        raise AudioError(f"audio of {x.shape[-1]} samples is longer than pad_to={target}")
    x = torch.nn.functional.pad(x, (0, target - x.shape[-1]))
    stft = torch.stft(x, N_FFT, HOP, window=torch.hann_window(N_FFT, device=x.device), return_complex=True)
    power = stft[..., :-1].abs() ** 2
    mel = _mel_filters(str(x.device)) @ power
    logs = torch.clamp(mel, min=1e-10).log10()
    logs = torch.maximum(logs, logs.amax(dim=(-2, -1), keepdim=True) - 8.0)
    return (logs + 4.0) / 4.0


def frames_for(n_samples: int) -> int:
    """Encoder frames (50 a second) covering ``n_samples`` real samples."""
    return -(-n_samples // (2 * HOP))
