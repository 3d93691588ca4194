"""A small mixed folder of recordings built in tmp_path from corpus files (symlinks, never copies
into the repo) plus the bad files a real folder has: text named .wav, a truncated FLAC, an empty
file, a FLAC named .dat, and a note that is not audio at all."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from tests.conftest import CORPUS, skip_or_fail

LIBRI = CORPUS / "librispeech-clean100-a" / "audio"
MISC = CORPUS / "en-misc-short" / "audio"
LJ = CORPUS / "ljspeech-lj001" / "audio"

GOOD_FILES = {
    "a_libri.flac": LIBRI / "1447-130550-0000.flac",  # 1.6 s
    "c_austen.wav": MISC / "sense_and_sensibility_01_austen_64kb-0880.wav",  # 3.0 s
    "e_take.dat": LIBRI / "403-126855-0000.flac",  # 1.9 s of FLAC without an audio extension
    "sub/a_libri.flac": LIBRI / "19-198-0000.flac",  # 2.0 s, same name as the top-level one
}
BAD_FILES = {
    "b_corrupt.flac": "truncated or corrupt",
    "d_notes.wav": "not a readable audio file",
    "f_empty.mp3": "file is empty",
}


def stenod_exe() -> str:
    exe = Path(sys.executable).parent / "stenod"
    found = str(exe) if exe.exists() else shutil.which("stenod")
    if not found:
        skip_or_fail("stenod console script not installed")
    return found


def _link(target: Path, link: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(target.resolve(), link)


def make_good_dir(root: Path, names: dict[str, Path] | None = None) -> Path:
    for rel, target in (names or GOOD_FILES).items():
        _link(target, root / rel)
    return root


@pytest.fixture
def mixed_dir(tmp_path: Path) -> Path:
    """Good recordings (one in a sub-folder), bad ones in the middle of the sort order, and a
    ``readme.txt`` that must not be picked up."""
    root = tmp_path / "in"
    make_good_dir(root)
    (root / "b_corrupt.flac").write_bytes((MISC / "jfk.flac").read_bytes()[:20_000])
    (root / "d_notes.wav").write_text("these are my meeting notes, not a recording\n", encoding="utf-8")
    (root / "f_empty.mp3").write_bytes(b"")
    (root / "readme.txt").write_text("not audio\n", encoding="utf-8")
    (root / ".hidden.wav").write_bytes(b"")
    return root
