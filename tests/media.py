"""Small audio files made on the fly for bad-input and edge-case tests (never stored in the repo)."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np


def write_wav(path: Path, samples: np.ndarray, rate: int = 16_000, channels: int = 1) -> Path:
    """Write float samples in [-1, 1] as 16-bit PCM; ``samples`` is (n,) or (n, channels)."""
    pcm = (np.clip(samples, -1.0, 1.0) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return path


def zero_length_wav(path: Path) -> Path:
    return write_wav(path, np.zeros(0, dtype=np.float32))


def silence_wav(path: Path, seconds: float) -> Path:
    return write_wav(path, np.zeros(int(seconds * 16_000), dtype=np.float32))


def truncated_copy(src: Path, dest: Path, fraction: float = 0.5) -> Path:
    data = src.read_bytes()
    dest.write_bytes(data[: int(len(data) * fraction)])
    return dest


def text_file(path: Path, text: str = "this is not audio\n" * 50) -> Path:
    path.write_text(text)
    return path
