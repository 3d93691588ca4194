"""Where each recording's transcripts go, and writing them so that no half-written file is ever seen.

``OUT/<relative path without extension>.<ext>``, with sub-folders mirrored, so ``a/x.wav`` and
``b/x.wav`` do not collide. Two sources that would still share a name (``x.wav`` and ``x.mp3`` in
one folder), or a top-level source whose name would overwrite the batch's own ``summary.json`` /
``summary.csv``, keep their full file name instead (``x.wav.txt``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path, PurePosixPath

from stenod.batch.discovery import SourceFile
from stenod.formats import (
    DEFAULT_SUBTITLES,
    FORMAT_EXTENSIONS,
    ResponseFormat,
    SubtitleOptions,
    TimestampGranularity,
    render,
)
from stenod.storage.atomic import write_atomic
from stenod.transcript import Transcript

MANIFEST_NAME = "manifest.jsonl"
SUMMARY_JSON_NAME = "summary.json"
SUMMARY_CSV_NAME = "summary.csv"
_RESERVED_STEMS = frozenset({"summary", "manifest"})


def output_stems(sources: Iterable[SourceFile]) -> dict[str, str]:
    """``{rel_path: output stem}`` for every source; see the module docstring for collisions."""
    sources = list(sources)
    plain = {s.rel_path: str(PurePosixPath(s.rel_path).with_suffix("")) for s in sources}
    counts = Counter(plain.values())
    stems: dict[str, str] = {}
    for rel, stem in plain.items():
        clash = counts[stem] > 1 or stem in _RESERVED_STEMS or stem.startswith(".")
        stems[rel] = rel if clash else stem
    return stems


def output_paths(out_dir: Path, stem: str, formats: Sequence[ResponseFormat]) -> dict[ResponseFormat, Path]:
    return {fmt: out_dir / f"{stem}.{FORMAT_EXTENSIONS[fmt]}" for fmt in formats}


def outputs_complete(paths: Iterable[Path]) -> bool:
    return all(p.is_file() for p in paths)


def write_outputs(
    transcript: Transcript, paths: dict[ResponseFormat, Path], *,
    subtitles: SubtitleOptions = DEFAULT_SUBTITLES, granularities: Sequence[TimestampGranularity] = ("segment",),
) -> None:
    """Render and write every format atomically (temp file, fsync, rename); ``subtitles`` shapes
    srt/vtt/tsv cues and ``granularities`` says whether verbose_json carries words.

    Raises:
        OSError: the output folder is not writable or the disk is full; files already renamed
            into place stay, the one being written is removed.
    """
    for fmt, path in paths.items():
        write_atomic(path, render(transcript, fmt, granularities=granularities, subtitles=subtitles))
