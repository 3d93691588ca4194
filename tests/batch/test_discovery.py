"""Discovery: audio found by extension and by content; everything else ignored."""

from __future__ import annotations

from pathlib import Path

import pytest

from stenod.batch.discovery import discover_audio, sniff_audio_container
from tests.batch.conftest import LIBRI, MISC


def test_extension_and_sniffing_find_the_recordings(mixed_dir: Path) -> None:
    found = {s.rel_path: s.found_by for s in discover_audio(mixed_dir)}
    assert found == {
        "a_libri.flac": "extension",
        "b_corrupt.flac": "extension",
        "c_austen.wav": "extension",
        "d_notes.wav": "extension",  # taken by name; the decoder will report it
        "e_take.dat": "sniffing",  # FLAC content, unknown extension
        "f_empty.mp3": "extension",
    }


def test_recursive_includes_subfolders_and_skips_the_output_folder(mixed_dir: Path) -> None:
    out = mixed_dir / "transcripts"
    out.mkdir()
    (out / "x.wav").symlink_to((MISC / "jfk.flac").resolve())
    rels = [s.rel_path for s in discover_audio(mixed_dir, recursive=True, exclude=out)]
    assert "sub/a_libri.flac" in rels
    assert not any(r.startswith("transcripts/") for r in rels)
    assert rels == sorted(rels)


def test_identity_is_size_and_mtime(mixed_dir: Path) -> None:
    source = next(s for s in discover_audio(mixed_dir) if s.rel_path == "a_libri.flac")
    st = (LIBRI / "1447-130550-0000.flac").stat()
    assert (source.size_bytes, source.mtime_ns) == (st.st_size, st.st_mtime_ns)


@pytest.mark.parametrize(
    ("head", "kind"),
    [
        (b"RIFF\x24\x08\x00\x00WAVEfmt ", "wav"),
        (b"fLaC\x00\x00\x00\x22", "flac"),
        (b"OggS\x00\x02", "ogg"),
        (b"ID3\x04\x00", "mp3"),
        (b"\xff\xfb\x90\x44\x00", "mp3"),
        (b"\xff\xf1\x50\x80", "aac"),
        (b"\x00\x00\x00\x20ftypM4A ", "mp4"),
        (b"\x1a\x45\xdf\xa3\x01", "matroska"),
        (b"hello world, not audio", None),
        (b"\xff\xd8\xff\xe0JFIF", None),  # JPEG
        (b"%PDF-1.7", None),
        (b"", None),
    ],
)
def test_sniff_audio_container(head: bytes, kind: str | None) -> None:
    assert sniff_audio_container(head) == kind
