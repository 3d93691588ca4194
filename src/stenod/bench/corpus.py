"""The audio a benchmark replays: corpus sets (``audio/`` + ``transcripts.tsv`` [+
``languages.tsv``], the layout of ../shared/corpus), plain folders of audio, or single files.

References are looked up by file stem; a file with no reference is still timed, just not scored.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

AUDIO_SUFFIXES = frozenset({".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".webm", ".mp4", ".aac", ".mka"})


class CorpusError(ValueError):
    """A corpus path that does not hold audio."""


@dataclass(frozen=True, slots=True)
class CorpusItem:
    path: Path
    reference: str | None
    language: str | None


def _read_tsv(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    if not path.is_file():
        return out
    for line in path.read_text(encoding="utf-8").splitlines():
        if "\t" in line:
            stem, value = line.split("\t", 1)
            out[stem.strip()] = value.strip()
    return out


def _set_root(audio_file: Path) -> Path:
    """The set folder of a file: ``SET/audio/x.flac`` -> ``SET``; else the file's folder."""
    parent = audio_file.parent
    return parent.parent if parent.name == "audio" else parent


def _item(path: Path, refs: dict[str, str], langs: dict[str, str]) -> CorpusItem:
    return CorpusItem(path=path, reference=refs.get(path.stem), language=langs.get(path.stem))


def load_corpus_or_raise(
    dirs: list[Path], *, files: list[Path] | None = None, limit: int = 0
) -> list[CorpusItem]:
    """Collect audio from corpus sets / folders (sorted by name, at most ``limit`` per folder when
    ``limit`` > 0) and from single ``files``, with references from the set's ``transcripts.tsv``.

    Raises:
        CorpusError: a path does not exist or holds no audio.
    """
    items: list[CorpusItem] = []
    for d in dirs:
        if not d.is_dir():
            raise CorpusError(f"{d}: not a directory (expected a corpus set with audio/ and transcripts.tsv)")
        audio_dir = d / "audio" if (d / "audio").is_dir() else d
        found = sorted(p for p in audio_dir.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
        if not found:
            raise CorpusError(f"{audio_dir}: no audio files ({', '.join(sorted(AUDIO_SUFFIXES))})")
        if limit > 0:
            found = found[:limit]
        refs = _read_tsv(d / "transcripts.tsv")
        langs = _read_tsv(d / "languages.tsv")
        items.extend(_item(p, refs, langs) for p in found)
    for f in files or []:
        if not f.is_file():
            raise CorpusError(f"{f}: no such file")
        root = _set_root(f)
        items.append(_item(f, _read_tsv(root / "transcripts.tsv"), _read_tsv(root / "languages.tsv")))
    if not items:
        raise CorpusError("no audio given: pass --corpus DIR (a set with audio/ and transcripts.tsv) or --file PATH")
    return items
