"""Whisper's log-mel front end in torch, so it runs on the engine's device (an STFT of a long file
on the GPU costs milliseconds; transformers' feature extractor does it in numpy on the CPU)."""

from __future__ import annotations

import functools

import numpy as np
import torch

SAMPLE_RATE = 16_000
N_FFT = 400
HOP_LENGTH = 160
CHUNK_LENGTH_S = 30
N_SAMPLES = CHUNK_LENGTH_S * SAMPLE_RATE
N_FRAMES = N_SAMPLES // HOP_LENGTH
"""Mel frames in one 30 s window (3000, 100 per second)."""
FRAMES_PER_SECOND = SAMPLE_RATE // HOP_LENGTH
INPUT_STRIDE = 2
"""Mel frames per encoder output frame (and per timestamp step of 0.02 s)."""


@functools.cache
def _mel_filters_cpu(n_mels: int) -> torch.Tensor:
    from stenod.models.ggml.assets import mel_filters

    return torch.from_numpy(np.asarray(mel_filters(n_mels), dtype=np.float32))


def log_mel_spectrogram(audio: np.ndarray | torch.Tensor, *, n_mels: int, device: torch.device, padding: int = N_SAMPLES) -> torch.Tensor:
    """(n_mels, frames) float32 log-mel of 16 kHz mono ``audio``, with ``padding`` zero samples
    appended first (Whisper appends 30 s so the last window has context), normalized as Whisper
    does over the whole file (floor at max - 8, then (x + 4) / 4)."""
    samples = torch.as_tensor(audio, dtype=torch.float32).to(device)
    if padding:
        samples = torch.nn.functional.pad(samples, (0, padding))
    window = torch.hann_window(N_FFT, device=device)
    stft = torch.stft(samples, N_FFT, HOP_LENGTH, window=window, return_complex=True)
    magnitudes = stft[..., :-1].abs() ** 2
    mel = _mel_filters_cpu(n_mels).to(device) @ magnitudes
    log_spec = torch.clamp(mel, min=1e-10).log10()
    log_spec = torch.maximum(log_spec, log_spec.max() - 8.0)
    return (log_spec + 4.0) / 4.0


def window_mel(mel: torch.Tensor, start_frame: int, n_frames: int) -> torch.Tensor:
    """Frames ``[start, start + n)`` of ``mel``, zero-padded to one 30 s window (as openai-whisper
    and faster-whisper pad a short last segment)."""
    segment = mel[:, start_frame : start_frame + n_frames]
    if segment.shape[1] < N_FRAMES:
        segment = torch.nn.functional.pad(segment, (0, N_FRAMES - segment.shape[1]))
    return segment[:, :N_FRAMES]
