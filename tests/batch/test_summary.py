"""Summary numbers add up, from synthetic results (no model)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from stenod.batch.discovery import SourceFile
from stenod.batch.manifest import FileResult
from stenod.batch.summary import FileEntry, summarize, summary_csv


def _src(rel: str) -> SourceFile:
    return SourceFile(path=Path(rel), rel_path=rel, size_bytes=1, mtime_ns=1, found_by="extension")


def test_totals_rtf_and_throughput() -> None:
    entries = [
        FileEntry("a.wav", "ok", FileResult.ok(_src("a.wav"), text="a", language="en", duration_s=10, processing_s=2, outputs=[])),
        FileEntry("b.wav", "ok", FileResult.ok(_src("b.wav"), text="b", language="en", duration_s=30, processing_s=3, outputs=[]),
                  from_earlier_run=True),
        FileEntry("c.wav", "failed", FileResult.failed(_src("c.wav"), "bad")),
        FileEntry("d.wav", "pending", None),
    ]
    s = summarize(entries, input_dir=Path("in"), output_dir=Path("out"), runner="r", formats=["text"],
                  started_at="", finished_at="", wall_s=4.0, interrupted=True)
    assert (s.files_total, s.files_ok, s.files_failed, s.files_pending) == (4, 2, 1, 1)
    assert s.files_ok + s.files_failed + s.files_pending == s.files_total
    assert s.formats == ["txt"]  # as --formats and the file extension say, not OpenAI's "text"
    assert s.total_audio_s == 40 and s.total_processing_s == 5 and s.overall_rtf == 0.125
    assert (s.run_files, s.run_audio_s, s.throughput_audio_x) == (2, 10, 2.5)  # this run: a and c
    rows = list(csv.DictReader(io.StringIO(summary_csv(s))))
    assert [r["status"] for r in rows] == ["ok", "ok", "failed", "pending"]
    assert rows[2]["error"] == "bad"
