"""Decode audio with PyAV (FFmpeg) into what Whisper eats: 16 kHz mono float32.

Limits are checked from the container's header before the full decode, and again while decoding
(some containers, such as streamed WebM, do not declare a duration), so an hour-long upload is
refused after reading its header, not after decoding it. Decoder failures are translated here into
stenod's own errors; nothing above this module sees an ``av`` exception.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

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



class AudioFile(Protocol):
    """A seekable binary file object: an open file, ``BytesIO``, or an HTTP upload's spooled file."""

    def read(self, size: int = -1, /) -> bytes: ...

    def seek(self, offset: int, whence: int = 0, /) -> int: ...

    def tell(self) -> int: ...


AudioSource = str | os.PathLike[str] | AudioFile
"""A path, or a binary file object positioned at the start of the data."""


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
    stream = container.streams.audio[0]
    if stream.codec_context is None:
        # FFmpeg knows no decoder for it (a WAV with an unknown format tag, a corrupt header): PyAV
        # then has no codec context, and reading one used to crash the request with a 500.
        raise AudioDecodeError(f"{name}: audio in an unknown or unsupported codec ({container.format.name})")
    return stream


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


class AudioStream:
    """An open audio source, decoded and resampled block by block to 16 kHz float32: the whole
    file is never in memory (issue 16: a 2.7 MB FLAC of 3.9 h of silence took a server from 0.56 to
    4.4 GB when decoded whole). The header checks run when it is opened; the emptiness and
    truncation checks run when :meth:`blocks` reaches the end.

    Use as a context manager; :meth:`blocks` may be iterated once.

    Args:
        source: a path or a binary file object positioned at the start of the data.
        keep_channels: yield two channels (multi-channel input is downmixed to stereo) for
            diarization; mono input still yields one.
        max_duration_s: refuse audio longer than this, from the header when it declares a
            duration, else as soon as decoding passes the limit.

    Raises:
        EmptyAudioError, AudioDecodeError, AudioTooLongError: on open (header) or while iterating.
    """

    def __init__(self, source: AudioSource, *, keep_channels: bool = False, max_duration_s: float | None = None) -> None:
        self.name = source_name(source)
        self._max_duration_s = max_duration_s
        self._container = _open(source)
        try:
            self._stream = _audio_stream(self._container, self.name)
            self.declared_s = _header_duration(self._container, self._stream, source)
            _check_duration_or_raise(self.name, self.declared_s, max_duration_s)
        except BaseException:
            self._container.close()
            raise
        ctx = self._stream.codec_context
        self.source_sample_rate: int = ctx.sample_rate or 0
        self.source_channels: int = ctx.channels or 1
        self.stereo = keep_channels and self.source_channels >= 2
        self.decoded_samples = 0

    def __enter__(self) -> AudioStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._container.close()

    @property
    def decoded_s(self) -> float:
        return self.decoded_samples / SAMPLE_RATE

    def blocks(self) -> Iterator[np.ndarray]:
        """``(n_channels, n)`` float32 blocks at 16 kHz (``n_channels`` 2 when :attr:`stereo`, else
        1), a few thousand samples each, as the decoder produces them."""
        name = self.name
        limit = None if self._max_duration_s is None else int(self._max_duration_s * SAMPLE_RATE)
        layout = "stereo" if self.stereo else "mono"
        resampler = av.AudioResampler(format="fltp", layout=layout, rate=SAMPLE_RATE)
        # FFmpeg's resampler has no downmix for layouts it does not know (9 channels and more,
        # e.g. a 64-channel WAV); those frames are downmixed here first.
        manual = False
        try:
            for frame in self._container.decode(self._stream):
                frame.pts = None  # let the resampler ignore gaps in timestamps
                if manual:
                    frame = _downmix_frame(frame, stereo=self.stereo)
                try:
                    out = resampler.resample(frame)
                except (av.error.FFmpegError, ValueError):
                    if manual or self.decoded_samples:
                        raise
                    manual = True
                    resampler = av.AudioResampler(format="fltp", layout=layout, rate=SAMPLE_RATE)
                    out = resampler.resample(_downmix_frame(frame, stereo=self.stereo))
                yield from self._take(out, limit)
            yield from self._take(resampler.resample(None), limit)
        except (AudioTooLongError, GeneratorExit):
            raise
        except (av.error.FFmpegError, ValueError, OSError) as exc:
            if self.decoded_samples == 0:
                raise AudioDecodeError(f"{name}: not decodable as audio ({_reason(exc)})") from exc
            raise AudioDecodeError(
                f"{name}: audio is truncated or corrupt after {self.decoded_s:.1f} s ({_reason(exc)})"
            ) from exc
        self._check_complete_or_raise()

    def _take(self, frames: list[av.AudioFrame], limit: int | None) -> Iterator[np.ndarray]:
        for out in frames:
            arr = out.to_ndarray().astype(np.float32, copy=False)
            self.decoded_samples += arr.shape[-1]
            if limit is not None and self.decoded_samples > limit:
                raise AudioTooLongError(f"{self.name}: audio is longer than the limit of {self._max_duration_s:g} s")
            yield arr

    def _check_complete_or_raise(self) -> None:
        if self.decoded_samples == 0:
            raise EmptyAudioError(f"{self.name}: audio has no samples (zero length)")
        declared, decoded_s = self.declared_s, self.decoded_s
        if declared is not None and declared - decoded_s > max(_TRUNCATION_TOLERANCE_S, 0.1 * declared):
            raise AudioDecodeError(
                f"{self.name}: audio is truncated or corrupt: the header declares {declared:.1f} s "
                f"but only {decoded_s:.1f} s could be decoded"
            )


STEREO_TO_MONO_GAIN = 0.7071067811865476
"""FFmpeg's (libswresample's) gain for each of two channels mixed down to mono: sqrt(1/2)."""

_INT_SCALE = {np.dtype(np.int16): 32768.0, np.dtype(np.int32): 2147483648.0}


def _downmix_frame(frame: av.AudioFrame, *, stereo: bool) -> av.AudioFrame:
    """A mono (or first-two-channels stereo) float frame from a frame of any channel count."""
    n_channels = frame.layout.nb_channels or 1
    arr = frame.to_ndarray()
    if not frame.format.is_planar:
        arr = arr.reshape(-1, n_channels).T
    if arr.dtype == np.uint8:
        data = (arr.astype(np.float32) - 128.0) / 128.0
    elif arr.dtype in _INT_SCALE:
        data = arr.astype(np.float32) / _INT_SCALE[arr.dtype]
    else:
        data = arr.astype(np.float32, copy=False)
    mixed = data[:2] if stereo and n_channels >= 2 else data.mean(axis=0, keepdims=True, dtype=np.float32)
    out = av.AudioFrame.from_ndarray(np.ascontiguousarray(mixed, dtype=np.float32), format="fltp",
                                     layout="stereo" if mixed.shape[0] == 2 else "mono")
    out.sample_rate = frame.sample_rate
    return out


def decode_audio(
    source: AudioSource,
    *,
    keep_channels: bool = False,
    max_duration_s: float | None = None,
) -> DecodedAudio:
    """Decode the first audio stream of ``source`` to 16 kHz float32, whole (for short audio;
    long audio goes through :class:`AudioStream`).

    Args:
        source: a path or a binary file object positioned at the start of the data.
        keep_channels: also return two channels (multi-channel input is downmixed to stereo);
            used by diarization. Mono input returns ``channels=None``.
        max_duration_s: refuse audio longer than this, from the header when it declares a
            duration, else as soon as decoding passes the limit.

    Raises:
        EmptyAudioError: zero bytes, or a container with no samples.
        AudioDecodeError: not audio, corrupt, or truncated.
        AudioTooLongError: longer than ``max_duration_s``.
    """
    with AudioStream(source, keep_channels=keep_channels, max_duration_s=max_duration_s) as stream:
        pcm = np.concatenate(list(stream.blocks()), axis=-1)
        return decoded_from_pcm(pcm, stereo=stream.stereo, source_sample_rate=stream.source_sample_rate,
                                source_channels=stream.source_channels)


def decoded_from_pcm(pcm: np.ndarray, *, stereo: bool, source_sample_rate: int, source_channels: int) -> DecodedAudio:
    """``DecodedAudio`` from ``(n_channels, n)`` blocks joined: mono mix plus the two channels when
    ``stereo``."""
    if stereo:
        channels = pcm
        # FFmpeg's own stereo -> mono matrix, which the plain (non-diarized) path gets: the same
        # level, hence the same text, with and without diarization (issue 11; a plain mean is
        # 3 dB quieter and changed the transcript).
        mono = (channels[0] + channels[1]) * np.float32(STEREO_TO_MONO_GAIN)
    else:
        channels = None
        mono = pcm[0]
    return DecodedAudio(
        samples=np.ascontiguousarray(mono, dtype=np.float32),
        channels=channels,
        source_sample_rate=source_sample_rate,
        source_channels=source_channels,
    )
