"""Where ``stenod transcribe`` puts its results: files in a folder (or one ``--output-file`` base
name), or standard output.

* The output folder is created and test-written before any model loads, so a read-only or
  mistyped folder fails in a second, not after an hour of transcription.
* Every written path is remembered and listed at the end.
* On standard output, with several formats each result is preceded by a ``==> name.ext <==``
  header, as ``head`` and ``tail`` do for several files (srt after txt would otherwise run
  together); one format is printed bare, so ``stenod transcribe x.wav -f json | jq`` and
  ``stenod transcribe *.wav > all.txt`` keep working.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from stenod.formats import FORMAT_EXTENSIONS, ResponseFormat, SubtitleOptions, TimestampGranularity, render
from stenod.storage.atomic import write_atomic
from stenod.transcript import Transcript


def check_writable_or_raise(folder: Path) -> None:
    """Create ``folder`` if needed and prove a file can be written in it.

    Raises:
        OSError: with ``strerror`` saying why (read-only, not a folder, permission, disk full).
    """
    folder.mkdir(parents=True, exist_ok=True)
    if not folder.is_dir():
        raise NotADirectoryError(20, "not a folder", str(folder))
    fd, probe = tempfile.mkstemp(prefix=".stenod-write-test-", dir=folder)
    os.close(fd)
    os.unlink(probe)


@dataclass
class OutputPlan:
    """How each result is emitted; built once per command."""

    formats: Sequence[ResponseFormat]
    output_dir: Path | None = None
    output_file: Path | None = None
    """A base path without extension (whisper.cpp's ``-of``); one input only."""
    inputs: int = 1
    granularities: Sequence[TimestampGranularity] = ("segment",)
    subtitles: SubtitleOptions = field(default_factory=SubtitleOptions)
    written: list[Path] = field(default_factory=list)
    stdout: TextIO | None = None

    @property
    def to_files(self) -> bool:
        return self.output_dir is not None or self.output_file is not None

    @property
    def headers_on_stdout(self) -> bool:
        return not self.to_files and len(self.formats) > 1

    def target(self, stem: str, fmt: ResponseFormat) -> Path:
        ext = FORMAT_EXTENSIONS[fmt]
        if self.output_file is not None:
            return self.output_file.with_name(f"{self.output_file.name}.{ext}")
        assert self.output_dir is not None
        return self.output_dir / f"{stem}.{ext}"

    def emit(self, transcript: Transcript, stem: str) -> list[Path]:
        """Write or print every format of one result; returns the paths written.

        Raises:
            OSError: a write failed (files already written stay and are listed).
        """
        paths: list[Path] = []
        out = self.stdout or sys.stdout
        for fmt in self.formats:
            body = render(transcript, fmt, granularities=self.granularities, subtitles=self.subtitles)
            if self.to_files:
                path = self.target(stem, fmt)
                write_atomic(path, body)
                paths.append(path)
                self.written.append(path)
                continue
            if self.headers_on_stdout:
                out.write(f"==> {stem}.{FORMAT_EXTENSIONS[fmt]} <==\n")
            out.write(body if body.endswith("\n") or not body else body + "\n")
            out.flush()
        return paths
