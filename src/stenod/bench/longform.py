"""Long recordings assembled from short corpus clips, with known placement of every clip.

A meeting or a podcast is speech with pauses of every length and stretches of silence or noise
between; Whisper's long-form decoding fails on some such files and not others (issue 11), so
accuracy is judged over many built files: clips of one corpus set joined with pauses of a chosen
range, optionally with silence and noise stretches between some clips. Each recording knows where
every clip sits, so tests can check timestamps and that nothing was written over the silence.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stenod.audio.decode import SAMPLE_RATE, decode_audio
from stenod.bench.corpus import load_corpus_or_raise


@dataclass(frozen=True, slots=True)
class PlacedClip:
    stem: str
    start_s: float
    end_s: float
    reference: str
    samples: np.ndarray


@dataclass(frozen=True, slots=True)
class Filler:
    """A stretch with no speech: ``kind`` is ``silence`` or ``noise``."""

    kind: str
    start_s: float
    end_s: float


@dataclass(frozen=True, slots=True)
class LongRecording:
    name: str
    language: str
    audio: np.ndarray
    clips: tuple[PlacedClip, ...]
    fillers: tuple[Filler, ...]

    @property
    def duration_s(self) -> float:
        return len(self.audio) / SAMPLE_RATE

    @property
    def reference(self) -> str:
        return " ".join(c.reference for c in self.clips)


def corpus_clips(set_dir: Path, *, language: str | None = None, limit: int = 0, skip: int = 0) -> list[tuple[str, str, np.ndarray]]:
    """``(stem, reference, samples)`` of a corpus set's clips (sorted by name), optionally only
    those whose ``languages.tsv`` entry is ``language``."""
    items = [i for i in load_corpus_or_raise([set_dir]) if i.reference and (language is None or i.language == language)]
    items = items[skip:]
    if limit:
        items = items[:limit]
    return [(i.path.stem, i.reference or "", decode_audio(i.path).samples) for i in items]


def build_recording(
    name: str,
    clips: list[tuple[str, str, np.ndarray]],
    *,
    language: str = "en",
    pause_range_s: tuple[float, float] = (0.5, 0.5),
    filler_every: int = 0,
    filler_s: float = 6.0,
    noise_amplitude: float = 0.01,
    seed: int = 0,
) -> LongRecording:
    """Join ``clips`` with pauses drawn uniformly from ``pause_range_s``; after every
    ``filler_every``-th clip (0: never) insert ``filler_s`` of silence or white noise (alternating),
    between two ordinary pauses."""
    rng = np.random.default_rng(seed)
    pieces: list[np.ndarray] = []
    placed: list[PlacedClip] = []
    fillers: list[Filler] = []
    pos = 0

    def add(samples: np.ndarray) -> None:
        nonlocal pos
        pieces.append(samples.astype(np.float32, copy=False))
        pos += len(samples)

    def pause() -> None:
        add(np.zeros(int(rng.uniform(*pause_range_s) * SAMPLE_RATE), dtype=np.float32))

    for index, (stem, reference, samples) in enumerate(clips):
        start = pos
        add(samples)
        placed.append(PlacedClip(stem, start / SAMPLE_RATE, pos / SAMPLE_RATE, reference, samples))
        if index == len(clips) - 1:
            break
        pause()
        if filler_every and (index + 1) % filler_every == 0:
            kind = "noise" if len(fillers) % 2 else "silence"
            n = int(filler_s * SAMPLE_RATE)
            body = (rng.standard_normal(n) * noise_amplitude).astype(np.float32) if kind == "noise" else np.zeros(n, np.float32)
            fillers.append(Filler(kind, pos / SAMPLE_RATE, (pos + n) / SAMPLE_RATE))
            add(body)
            pause()
    return LongRecording(name, language, np.concatenate(pieces), tuple(placed), tuple(fillers))
