"""Per-file results and resume state: a JSON-lines manifest in the output folder.

Every finished file appends one line and fsyncs, so a crash or a killed run loses nothing that was
done; the latest line for a file wins. A line cut short by a crash is ignored on load. A file counts
as done when the manifest says it succeeded for the same identity (relative path, size, mtime in
ns) and every requested output exists; anything else is transcribed again.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from stenod.batch.discovery import SourceFile
from stenod.storage.atomic import write_atomic

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class FileResult:
    """What happened to one recording (the seed's BatchResult fields, plus resume identity)."""

    filename: str
    """Path relative to the input folder."""
    success: bool
    text: str = ""
    language: str = ""
    duration_s: float = 0.0
    """Audio duration; 0 when the file could not be decoded."""
    processing_s: float = 0.0
    """Wall time spent on the file: decode plus inference (or the HTTP round trip)."""
    realtime_factor: float = 0.0
    """``processing_s / duration_s``: below 1 is faster than real time."""
    error: str | None = None
    size_bytes: int = 0
    mtime_ns: int = 0
    outputs: list[str] = field(default_factory=list)
    """Output files, relative to the output folder."""
    finished_at: str = ""
    """UTC ISO-8601 time the result was recorded."""

    @classmethod
    def ok(
        cls, source: SourceFile, *, text: str, language: str, duration_s: float, processing_s: float,
        outputs: list[str],
    ) -> FileResult:
        return cls(
            filename=source.rel_path, success=True, text=text, language=language,
            duration_s=round(duration_s, 3), processing_s=round(processing_s, 3),
            realtime_factor=round(processing_s / duration_s, 4) if duration_s > 0 else 0.0,
            size_bytes=source.size_bytes, mtime_ns=source.mtime_ns, outputs=outputs, finished_at=_now(),
        )

    @classmethod
    def failed(cls, source: SourceFile, error: str, *, duration_s: float = 0.0, processing_s: float = 0.0) -> FileResult:
        return cls(
            filename=source.rel_path, success=False, error=error, duration_s=round(duration_s, 3),
            processing_s=round(processing_s, 3), size_bytes=source.size_bytes, mtime_ns=source.mtime_ns,
            finished_at=_now(),
        )

    def same_source(self, source: SourceFile) -> bool:
        return (self.filename, self.size_bytes, self.mtime_ns) == (source.rel_path, source.size_bytes, source.mtime_ns)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FileResult:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class Manifest:
    """The append-only record of finished files in ``path``.

    Not thread-safe: the batch pipeline records results from one thread.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._latest: dict[str, FileResult] = {}
        self._load()

    def _load(self) -> None:
        if not self.path.is_file():
            return
        with self.path.open("r", encoding="utf-8", errors="replace") as f:
            for lineno, line in enumerate(f, start=1):
                line = line.strip()
                if not line:
                    continue
                try:
                    record = FileResult.from_dict(json.loads(line))
                except (ValueError, TypeError) as exc:
                    logger.warning("%s:%d: ignoring unreadable record (%s)", self.path, lineno, exc)
                    continue
                self._latest[record.filename] = record

    def get(self, rel_path: str) -> FileResult | None:
        return self._latest.get(rel_path)

    def append(self, result: FileResult) -> None:
        """Record ``result`` durably (append, flush, fsync) before returning."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps(result.to_dict(), ensure_ascii=False) + "\n"
        with self.path.open("ab") as f:
            if f.tell() > 0 and not _ends_with_newline(self.path):
                f.write(b"\n")  # a previous run died mid-line; start a fresh one
            f.write(line.encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())
        self._latest[result.filename] = result

    def compact(self) -> None:
        """Rewrite the manifest atomically with only the latest record of each file."""
        lines = [json.dumps(r.to_dict(), ensure_ascii=False) for r in self._latest.values()]
        write_atomic(self.path, "".join(line + "\n" for line in lines))


def _ends_with_newline(path: Path) -> bool:
    with path.open("rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"
