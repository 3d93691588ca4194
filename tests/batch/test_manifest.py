"""The manifest survives crashes (a cut-off last line) and the latest record wins."""

from __future__ import annotations

from pathlib import Path

from stenod.batch.discovery import SourceFile
from stenod.batch.manifest import FileResult, Manifest
from stenod.batch.outputs import output_stems


def _source(rel: str = "a.wav", size: int = 10, mtime_ns: int = 5) -> SourceFile:
    return SourceFile(path=Path("/x") / rel, rel_path=rel, size_bytes=size, mtime_ns=mtime_ns, found_by="extension")


def test_append_reload_latest_wins_and_torn_line_ignored(tmp_path: Path) -> None:
    path = tmp_path / "manifest.jsonl"
    m = Manifest(path)
    m.append(FileResult.failed(_source(), "boom"))
    m.append(FileResult.ok(_source(), text="hi", language="en", duration_s=2.0, processing_s=0.5, outputs=["a.txt"]))
    with path.open("ab") as f:
        f.write(b'{"filename": "b.wav", "succ')  # a crash in the middle of a write
    reloaded = Manifest(path)
    record = reloaded.get("a.wav")
    assert record is not None and record.success and record.realtime_factor == 0.25
    assert reloaded.get("b.wav") is None
    reloaded.append(FileResult.failed(_source("c.wav"), "bad"))  # starts on a fresh line
    assert Manifest(path).get("c.wav") is not None
    reloaded.compact()
    assert len(path.read_text().splitlines()) == 2


def test_same_source_compares_path_size_and_mtime() -> None:
    record = FileResult.failed(_source(), "x")
    assert record.same_source(_source())
    assert not record.same_source(_source(size=11))
    assert not record.same_source(_source(mtime_ns=6))


def test_output_stems_mirror_folders_and_avoid_collisions() -> None:
    stems = output_stems([_source("a.wav"), _source("sub/a.wav"), _source("b.wav"), _source("b.mp3"),
                          _source("summary.wav"), _source("sub/summary.wav")])
    assert stems == {"a.wav": "a", "sub/a.wav": "sub/a", "b.wav": "b.wav", "b.mp3": "b.mp3",
                     "summary.wav": "summary.wav", "sub/summary.wav": "sub/summary"}
