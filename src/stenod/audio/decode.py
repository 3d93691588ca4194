"""Decode audio with PyAV (FFmpeg) into what Whisper eats: 16 kHz mono float32.

Limits are checked from the container's header before the full decode, and again while decoding
(some containers, such as streamed WebM, do not declare a duration), so an hour-long upload is
refused after reading its header, not after decoding it. Decoder failures are translated here into
stenod's own errors; nothing above this module sees an ``av`` exception.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO

import av
import av.error
import numpy as np

from stenod.errors import AudioDecodeError, AudioTooLongError, EmptyAudioError

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16_000
_TRUNCATION_TOLERANCE_S = 1.0
"""A file whose decodable audio falls short of its declared duration by more than this (and 10 %)
is reported as truncated rather than silently transcribed in part."""

_WAV_HEADER_READ_BYTES = 4096

AudioSource = str | os.PathLike[str] | BinaryIO


@dataclass(frozen=True, slots=True)
class AudioProbe:
    """What the container header says, read without decoding."""

    format_name: str
    codec: str
    sample_rate: int
    channels: int
    duration_s: float | None
    """``None`` when the container does not declare a duration (streamed formats)."""


@dataclass(frozen=True, slots=True)
class DecodedAudio:
    samples: np.ndarray
    """Mono float32 in [-1, 1] at 16 kHz."""
    channels: np.ndarray | None
    """``(2, n)`` float32 at 16 kHz when kept for diarization; ``None`` otherwise."""
    source_sample_rate: int
    source_channels: int

    @property
    def duration_s(self) -> float:
        return len(self.samples) / SAMPLE_RATE

    def clipped(self, offset_s: float, duration_s: float | None) -> DecodedAudio:
        """The part from ``offset_s`` lasting ``duration_s`` (``None``: to the end); channels too."""
        start = max(0, int(round(offset_s * SAMPLE_RATE)))
        stop = len(self.samples) if duration_s is None else start + max(0, int(round(duration_s * SAMPLE_RATE)))
        channels = None if self.channels is None else self.channels[:, start:stop]
        return replace(self, samples=self.samples[start:stop], channels=channels)


def source_name(source: AudioSource) -> str:
    """The path as given, or a file object's ``name``; error messages start with it."""
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    return getattr(source, "name", "<upload>") or "<upload>"


def _check_not_empty(source: AudioSource) -> None:
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise AudioDecodeError(f"{path}: no such file")
        if path.is_dir():
            raise AudioDecodeError(f"{path}: is a directory, not an audio file")
        if not os.access(path, os.R_OK):
            raise AudioDecodeError(f"{path}: permission denied")
        if path.stat().st_size == 0:
            raise EmptyAudioError(f"{path}: file is empty (0 bytes)")
        return
    pos = source.tell()
    source.seek(0, os.SEEK_END)
    size = source.tell() - pos
    source.seek(pos)
    if size == 0:
        raise EmptyAudioError(f"{source_name(source)}: file is empty (0 bytes)")


def _open(source: AudioSource) -> av.container.InputContainer:
    _check_not_empty(source)
    src = os.fspath(source) if isinstance(source, (str, os.PathLike)) else source
    try:
        # metadata_errors="ignore": broken tags must not make good audio unreadable.
        return av.open(src, mode="r", metadata_errors="ignore")
    except PermissionError as exc:
        raise AudioDecodeError(f"{source_name(source)}: permission denied") from exc
    except (av.error.FFmpegError, ValueError, OSError) as exc:
        raise AudioDecodeError(f"{source_name(source)}: not a readable audio file ({_reason(exc)})") from exc


def _reason(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc)
    return text.split(": '")[0].strip() or type(exc).__name__


def _audio_stream(container: av.container.InputContainer, name: str) -> av.audio.stream.AudioStream:
    if not container.streams.audio:
        raise AudioDecodeError(f"{name}: no audio stream in this file ({container.format.name})")
    return container.streams.audio[0]


def _declared_duration(container: av.container.InputContainer, stream: av.audio.stream.AudioStream) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None and container.duration > 0:
        return container.duration / av.time_base
    return None


def _wav_header_duration(source: AudioSource) -> float | None:
    """Duration a WAV file's RIFF header declares (data chunk bytes / bytes per second).

    FFmpeg's WAV demuxer clamps the data chunk to the bytes actually present, so a WAV cut short
    reports the shorter length as its duration and would slip past the truncation check. ``None``
    for other formats, streamed WAVs (size 0 or 0xFFFFFFFF) and headers longer than we read.
    """
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as f:
            head = f.read(_WAV_HEADER_READ_BYTES)
    elif getattr(source, "seekable", lambda: False)():
        pos = source.tell()
        source.seek(0)
        head = source.read(_WAV_HEADER_READ_BYTES)
        source.seek(pos)
    else:
        return None
    if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    byte_rate = 0
    pos = 12
    while pos + 8 <= len(head):
        chunk_id = head[pos : pos + 4]
        size = int.from_bytes(head[pos + 4 : pos + 8], "little")
        body = pos + 8
        if chunk_id == b"fmt " and body + 12 <= len(head):
            byte_rate = int.from_bytes(head[body + 8 : body + 12], "little")
        elif chunk_id == b"data":
            if size in (0, 0xFFFFFFFF) or byte_rate <= 0:
                return None
            return size / byte_rate
        pos = body + size + (size & 1)
    return None


def _header_duration(container: av.container.InputContainer, stream: av.audio.stream.AudioStream,
                     source: AudioSource) -> float | None:
    declared = _declared_duration(container, stream)
    if container.format.name == "wav":
        declared = max(declared or 0.0, _wav_header_duration(source) or 0.0) or None
    return declared


def _check_duration_or_raise(name: str, declared: float | None, max_duration_s: float | None) -> None:
    if max_duration_s is not None and declared is not None and declared > max_duration_s:
        raise AudioTooLongError(f"{name}: audio is {declared:.1f} s long; the limit is {max_duration_s:g} s")


def probe_audio(source: AudioSource, *, max_duration_s: float | None = None) -> AudioProbe:
    """Read the container header: format, codec, rate, channels, declared duration.

    Raises:
        EmptyAudioError: zero-byte input.
        AudioDecodeError: unreadable, not a media file, or no audio stream.
        AudioTooLongError: the header declares more than ``max_duration_s``.
    """
    name = source_name(source)
    with _open(source) as container:
        stream = _audio_stream(container, name)
        declared = _header_duration(container, stream, source)
        _check_duration_or_raise(name, declared, max_duration_s)
        return AudioProbe(
            format_name=container.format.name,
            codec=stream.codec_context.name,
            sample_rate=stream.codec_context.sample_rate or 0,
            channels=stream.codec_context.channels or 0,
            duration_s=declared,
        )


def decode_audio(
    source: AudioSource,
    *,
    keep_channels: bool = False,
    max_duration_s: float | None = None,
) -> DecodedAudio:
    """Decode the first audio stream of ``source`` to 16 kHz float32.

    Args:
        source: a path or a binary file object positioned at the start of the data.
        keep_channels: also return two channels (multi-channel input is downmixed to stereo by
            FFmpeg); used by diarization. Mono input returns ``channels=None``.
        max_duration_s: refuse audio longer than this, from the header when it declares a
            duration, else as soon as decoding passes the limit.

    Raises:
        EmptyAudioError: zero bytes, or a container with no samples.
        AudioDecodeError: not audio, corrupt, or truncated.
        AudioTooLongError: longer than ``max_duration_s``.
    """
    name = source_name(source)
    with _open(source) as container:
        stream = _audio_stream(container, name)
        declared = _header_duration(container, stream, source)
        _check_duration_or_raise(name, declared, max_duration_s)
        src_channels = stream.codec_context.channels or 1
        stereo = keep_channels and src_channels >= 2
        pcm = _decode_stream(container, stream, name, stereo=stereo, max_duration_s=max_duration_s)
    n_samples = pcm.shape[-1]
    if n_samples == 0:
        raise EmptyAudioError(f"{name}: audio has no samples (zero length)")
    decoded_s = n_samples / SAMPLE_RATE
    if declared is not None and declared - decoded_s > max(_TRUNCATION_TOLERANCE_S, 0.1 * declared):
        raise AudioDecodeError(
            f"{name}: audio is truncated or corrupt: the header declares {declared:.1f} s "
            f"but only {decoded_s:.1f} s could be decoded"
        )
    if stereo:
        channels = pcm
        mono = channels.mean(axis=0, dtype=np.float32)
    else:
        channels = None
        mono = pcm[0]
    return DecodedAudio(
        samples=np.ascontiguousarray(mono, dtype=np.float32),
        channels=channels,
        source_sample_rate=stream.codec_context.sample_rate or 0,
        source_channels=src_channels,
    )


def _decode_stream(
    container: av.container.InputContainer,
    stream: av.audio.stream.AudioStream,
    name: str,
    *,
    stereo: bool,
    max_duration_s: float | None,
) -> np.ndarray:
    layout = "stereo" if stereo else "mono"
    resampler = av.AudioResampler(format="fltp", layout=layout, rate=SAMPLE_RATE)
    chunks: list[np.ndarray] = []
    total = 0
    limit = None if max_duration_s is None else int(max_duration_s * SAMPLE_RATE)

    def take(frames: list[av.AudioFrame]) -> None:
        nonlocal total
        for out in frames:
            arr = out.to_ndarray()
            chunks.append(arr)
            total += arr.shape[-1]
        if limit is not None and total > limit:
            raise AudioTooLongError(
                f"{name}: audio is longer than the limit of {max_duration_s:g} s"
            )

    try:
        for frame in container.decode(stream):
            frame.pts = None  # let the resampler ignore gaps in timestamps
            take(resampler.resample(frame))
        take(resampler.resample(None))
    except AudioTooLongError:
        raise
    except (av.error.FFmpegError, ValueError, OSError) as exc:
        if total == 0:
            raise AudioDecodeError(f"{name}: not decodable as audio ({_reason(exc)})") from exc
        raise AudioDecodeError(
            f"{name}: audio is truncated or corrupt after {total / SAMPLE_RATE:.1f} s ({_reason(exc)})"
        ) from exc
    n_ch = 2 if stereo else 1
    if not chunks:
        return np.zeros((n_ch, 0), dtype=np.float32)
    return np.concatenate(chunks, axis=-1).astype(np.float32, copy=False)
