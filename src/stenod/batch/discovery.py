"""Find the recordings in a folder: by extension, and by sniffing the first bytes of other files.

A file with a known audio/video extension is always taken (if it turns out not to be audio, the
decoder reports it and the batch lists it as failed: a user who names a file ``.wav`` expects to
hear about it). Any other regular file is opened and its first bytes compared with the magic
numbers of the containers FFmpeg reads, so ``take1.dat`` that is really FLAC is found while
``notes.txt`` is not. Hidden files, the batch's own output folder and temp files are skipped.

Each found file carries its resume identity (relative path, size, mtime in ns), read once here.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

logger = logging.getLogger(__name__)

AUDIO_EXTENSIONS: frozenset[str] = frozenset(
    {".wav", ".mp3", ".m4a", ".flac", ".ogg", ".opus", ".webm", ".mp4"}
)
SNIFF_BYTES = 16


@dataclass(frozen=True, slots=True)
class SourceFile:
    """One recording to transcribe and the identity a resumed run compares against."""

    path: Path
    rel_path: str
    """POSIX-style path relative to the input folder; the key in the manifest."""
    size_bytes: int
    mtime_ns: int
    found_by: str
    """``extension`` or ``sniffing``."""


def sniff_audio_container(head: bytes) -> str | None:
    """Name the audio/video container whose magic number starts ``head``, or ``None``."""
    if len(head) < 4:
        return None
    if head[:4] in (b"RIFF", b"RF64") and head[8:12] == b"WAVE":
        return "wav"
    if head[:4] == b"fLaC":
        return "flac"
    if head[:4] == b"OggS":
        return "ogg"
    if head[:3] == b"ID3":
        return "mp3"
    if head[4:8] == b"ftyp":
        return "mp4"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "matroska"
    if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return "aiff"
    if head[:5] == b"#!AMR":
        return "amr"
    if head[:4] == b"caff":
        return "caf"
    if head[:4] == b"\x30\x26\xb2\x75":
        return "asf"
    if head[0] == 0xFF and (head[1] & 0xE0) == 0xE0:
        if (head[1] & 0xF6) == 0xF0:
            return "aac"  # ADTS
        if (head[1] >> 1) & 0x03 and (head[2] >> 4) != 0x0F:
            return "mp3"  # MPEG audio frame: layer bits set, bitrate index not "bad"
    return None


def _identity(path: Path, root: Path, found_by: str) -> SourceFile | None:
    try:
        st = path.stat()
    except OSError as exc:
        logger.warning("skipping %s: %s", path, exc)
        return None
    return SourceFile(
        path=path,
        rel_path=PurePosixPath(path.relative_to(root).as_posix()).as_posix(),
        size_bytes=st.st_size,
        mtime_ns=st.st_mtime_ns,
        found_by=found_by,
    )


def _sniff(path: Path) -> str | None:
    try:
        with path.open("rb") as f:
            return sniff_audio_container(f.read(SNIFF_BYTES))
    except OSError:
        return None


def _walk(root: Path, *, recursive: bool, exclude: Path | None) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        here = Path(dirpath)
        if not recursive:
            dirnames.clear()
        else:
            dirnames[:] = sorted(
                d for d in dirnames
                if not d.startswith(".") and (exclude is None or (here / d).resolve() != exclude)
            )
        for name in sorted(filenames):
            if name.startswith(".") or name.endswith(".tmp"):
                continue
            path = here / name
            if path.is_file():  # follows file symlinks; skips broken ones, sockets, fifos
                yield path


def discover_audio(root: Path, *, recursive: bool = False, exclude: Path | None = None) -> list[SourceFile]:
    """Recordings under ``root``, sorted by relative path.

    Args:
        root: the input folder.
        recursive: also walk sub-folders (hidden ones and ``exclude`` are skipped).
        exclude: a folder never to enter, normally the batch's output folder.

    Returns:
        One :class:`SourceFile` per recording; files with an audio extension are always listed,
        others only when their first bytes are a known audio or video container.
    """
    root = root.resolve()
    exclude_resolved = exclude.resolve() if exclude is not None else None
    found: list[SourceFile] = []
    for path in _walk(root, recursive=recursive, exclude=exclude_resolved):
        if path.suffix.lower() in AUDIO_EXTENSIONS:
            how = "extension"
        elif _sniff(path) is not None:
            how = "sniffing"
        else:
            continue
        source = _identity(path, root, how)
        if source is not None:
            found.append(source)
    found.sort(key=lambda s: s.rel_path)
    logger.info("found %d recordings under %s", len(found), root)
    return found


def declared_duration_s(path: Path) -> float | None:
    """The duration the container header declares (no decoding), or ``None`` when it declares
    none or cannot be read; used for progress estimates only."""
    from stenod.audio.decode import probe_audio
    from stenod.errors import StenodError

    try:
        return probe_audio(path).duration_s
    except (StenodError, OSError):
        return None
