"""Group decoded blocks into chunks of bounded length, each cut at a quiet point, so long audio is
transcribed piece by piece in bounded memory (issue 16).

A chunk ends at the quietest ``FRAME_S`` frame of its last ``search_s`` seconds (lowest mean
energy), which is a pause between words or sentences in speech: cutting there keeps words whole.
At most one chunk plus one decoder block is held at a time.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from stenod.audio.decode import SAMPLE_RATE

FRAME_S = 0.1
"""Resolution of the quiet-point search."""
DEFAULT_SEARCH_S = 30.0


@dataclass(frozen=True, slots=True)
class AudioChunk:
    pcm: np.ndarray
    """``(n_channels, n)`` float32 at 16 kHz."""
    start_sample: int
    """Position of the chunk's first sample in the whole stream."""
    last: bool
    """No audio follows this chunk."""

    @property
    def start_s(self) -> float:
        return self.start_sample / SAMPLE_RATE

    @property
    def duration_s(self) -> float:
        return float(self.pcm.shape[-1]) / SAMPLE_RATE


def quietest_cut(pcm: np.ndarray, *, lo: int, hi: int) -> int:
    """Sample index in ``[lo, hi]`` at the middle of the quietest ``FRAME_S`` frame there."""
    frame = int(FRAME_S * SAMPLE_RATE)
    lo = max(0, lo)
    hi = min(pcm.shape[-1], hi)
    n_frames = (hi - lo) // frame
    if n_frames < 1:
        return hi
    mono = pcm[:, lo : lo + n_frames * frame].mean(axis=0, dtype=np.float32)
    energy = np.square(mono, dtype=np.float32).reshape(n_frames, frame).mean(axis=1)
    # Among equally quiet frames (digital silence), take the latest: longer chunks, fewer cuts.
    best = n_frames - 1 - int(np.argmin(energy[::-1]))
    return lo + best * frame + frame // 2


def quiet_chunks(blocks: Iterable[np.ndarray], *, chunk_s: float, search_s: float = DEFAULT_SEARCH_S) -> Iterator[AudioChunk]:
    """Chunks of at most ``chunk_s`` seconds from ``blocks`` (``(n_channels, n)`` arrays), each cut
    at the quietest point of its last ``search_s`` seconds; the final chunk is whatever remains.

    Audio shorter than ``chunk_s`` comes out as one chunk, identical to the joined blocks.
    """
    chunk_len = max(1, int(chunk_s * SAMPLE_RATE))
    search_len = min(chunk_len // 2, int(search_s * SAMPLE_RATE))
    pending: list[np.ndarray] = []
    pending_len = 0
    start = 0
    for block in blocks:
        pending.append(block)
        pending_len += block.shape[-1]
        while pending_len > chunk_len:
            joined = np.concatenate(pending, axis=-1)
            cut = quietest_cut(joined, lo=chunk_len - search_len, hi=chunk_len)
            yield AudioChunk(np.ascontiguousarray(joined[:, :cut]), start, last=False)
            start += cut
            rest = joined[:, cut:].copy()  # a view would keep the whole joined buffer alive
            pending = [rest]
            pending_len = rest.shape[-1]
            del joined
    if pending_len or start == 0:
        joined = np.concatenate(pending, axis=-1) if pending else np.zeros((1, 0), dtype=np.float32)
        yield AudioChunk(joined, start, last=True)
