"""The run summary: every file with its result or error, totals, and this run's speed.

Written as ``summary.json`` and ``summary.csv`` (atomically) in the output folder at the end of a
run and on Ctrl-C, and shown as a table. Definitions, so the numbers can be checked:

- ``files_total = files_ok + files_failed + files_pending`` (pending: not reached, interrupted run);
- ``total_audio_s`` and ``total_processing_s`` are sums over the successful files (this run and
  earlier runs whose results were kept), and ``overall_rtf = total_processing_s / total_audio_s``:
  per-file processing time per audio second, below 1 is faster than real time;
- this run only: ``wall_s`` from start to finish, ``run_audio_s`` transcribed in it,
  ``throughput_audio_x = run_audio_s / wall_s`` (audio seconds per wall second: with N workers it
  can exceed ``1 / overall_rtf``), ``throughput_files_per_min``.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from rich.table import Table

from stenod.batch.manifest import FileResult
from stenod.storage.atomic import write_atomic

FileStatus = Literal["ok", "failed", "pending"]
_FLAG_NAMES = {"text": "txt"}
"""Formats as the user names them in --formats and sees them as file extensions (not OpenAI's
``text``), so summary.json reads like the command that produced it."""
CSV_COLUMNS = ("filename", "status", "language", "duration_s", "processing_s", "realtime_factor",
               "error", "outputs", "from_earlier_run", "text")


@dataclass(frozen=True, slots=True)
class FileEntry:
    """One row of the summary."""

    filename: str
    status: FileStatus
    result: FileResult | None
    from_earlier_run: bool = False

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"filename": self.filename, "status": self.status,
                                "from_earlier_run": self.from_earlier_run}
        if self.result is not None:
            r = self.result
            data.update(success=r.success, text=r.text, language=r.language, duration_s=r.duration_s,
                        processing_s=r.processing_s, realtime_factor=r.realtime_factor, error=r.error,
                        outputs=r.outputs, finished_at=r.finished_at)
        return data


@dataclass(frozen=True, slots=True)
class BatchSummary:
    input_dir: str
    output_dir: str
    runner: str
    formats: list[str]
    started_at: str
    finished_at: str
    interrupted: bool
    files_total: int
    files_ok: int
    files_failed: int
    files_pending: int
    files_from_earlier_run: int
    total_audio_s: float
    total_processing_s: float
    overall_rtf: float
    wall_s: float
    run_files: int
    run_audio_s: float
    throughput_audio_x: float
    throughput_files_per_min: float
    files: list[FileEntry] = field(default_factory=list)

    @property
    def failed(self) -> list[FileEntry]:
        return [f for f in self.files if f.status == "failed"]

    def to_dict(self) -> dict[str, Any]:
        data = {k: v for k, v in asdict(self).items() if k != "files"}
        data["files"] = [f.to_dict() for f in self.files]
        return data


def summarize(
    entries: Sequence[FileEntry], *, input_dir: Path, output_dir: Path, runner: str, formats: Sequence[str],
    started_at: str, finished_at: str, wall_s: float, interrupted: bool,
) -> BatchSummary:
    ok = [e.result for e in entries if e.status == "ok" and e.result is not None]
    run = [e.result for e in entries if e.status != "pending" and not e.from_earlier_run and e.result is not None]
    audio = sum(r.duration_s for r in ok)
    processing = sum(r.processing_s for r in ok)
    run_audio = sum(r.duration_s for r in run if r.success)
    return BatchSummary(
        input_dir=str(input_dir), output_dir=str(output_dir), runner=runner,
        formats=[_FLAG_NAMES.get(f, f) for f in formats],
        started_at=started_at, finished_at=finished_at, interrupted=interrupted,
        files_total=len(entries),
        files_ok=len(ok),
        files_failed=sum(1 for e in entries if e.status == "failed"),
        files_pending=sum(1 for e in entries if e.status == "pending"),
        files_from_earlier_run=sum(1 for e in entries if e.from_earlier_run),
        total_audio_s=round(audio, 3),
        total_processing_s=round(processing, 3),
        overall_rtf=round(processing / audio, 4) if audio > 0 else 0.0,
        wall_s=round(wall_s, 3),
        run_files=len(run),
        run_audio_s=round(run_audio, 3),
        throughput_audio_x=round(run_audio / wall_s, 2) if wall_s > 0 else 0.0,
        throughput_files_per_min=round(len(run) * 60 / wall_s, 2) if wall_s > 0 else 0.0,
        files=list(entries),
    )


def summary_csv(summary: BatchSummary) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for entry in summary.files:
        row = entry.to_dict()
        row["outputs"] = ";".join(row.get("outputs") or ())
        writer.writerow(row)
    return buf.getvalue()


def write_summary(summary: BatchSummary, json_path: Path, csv_path: Path) -> None:
    """Write both files atomically (a reader never sees half a summary)."""
    write_atomic(json_path, json.dumps(summary.to_dict(), ensure_ascii=False, indent=2) + "\n")
    write_atomic(csv_path, summary_csv(summary))


def _hms(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def summary_table(summary: BatchSummary, *, max_failed_rows: int = 20) -> Table:
    """Totals, then the failed files with their errors (the first ``max_failed_rows``)."""
    title = "stenod batch" + (" (interrupted)" if summary.interrupted else "")
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column("", style="bold")
    table.add_column("")
    pending = f", {summary.files_pending} not done" if summary.files_pending else ""
    earlier = f" ({summary.files_from_earlier_run} from an earlier run)" if summary.files_from_earlier_run else ""
    table.add_row("files", f"{summary.files_total}: {summary.files_ok} ok, {summary.files_failed} failed{pending}{earlier}")
    table.add_row("audio", f"{_hms(summary.total_audio_s)} ({summary.total_audio_s:.1f} s)")
    table.add_row("overall RTF", f"{summary.overall_rtf:.4f} (processing s per audio s, per file)")
    table.add_row("this run", f"{summary.run_files} files, {_hms(summary.run_audio_s)} audio in {summary.wall_s:.1f} s wall")
    table.add_row("throughput", f"{summary.throughput_audio_x:.1f}x real time, {summary.throughput_files_per_min:.1f} files/min")
    table.add_row("runner", summary.runner)
    for entry in summary.failed[:max_failed_rows]:
        error = entry.result.error if entry.result is not None else ""
        table.add_row("[red]failed[/red]", f"{entry.filename}: {error}")
    if len(summary.failed) > max_failed_rows:
        table.add_row("", f"... and {len(summary.failed) - max_failed_rows} more (see summary.csv)")
    return table
