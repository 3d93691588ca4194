"""Drive a batch: decide what is left to do, feed a runner, record each result as it lands.

The pipeline keeps at most ``runner.capacity`` files in flight, so stopping is immediate and
nothing is queued inside a worker pool that Ctrl-C would have to unwind. For each finished file,
in this order: outputs are written atomically, then one manifest line is appended and fsynced;
so a file listed as done always has complete outputs, and a crash between the two only costs
redoing that one file.

Stopping (see :class:`StopControl`): a stop request ends submission and lets in-flight files
finish; an abandon request also terminates them (they stay "pending", with no outputs). Either
way the summary is written.

A worker process that dies (segfault in a decoder, OOM kill) fails every file in flight on it
pool-wide; those files are retried one at a time, so only the file that really kills a worker is
reported, as failed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from stenod.batch.discovery import SourceFile
from stenod.batch.manifest import FileResult, Manifest
from stenod.batch.outputs import (
    MANIFEST_NAME,
    SUMMARY_CSV_NAME,
    SUMMARY_JSON_NAME,
    output_paths,
    output_stems,
    outputs_complete,
    write_outputs,
)
from stenod.batch.runner import Runner, WorkOutcome
from stenod.batch.summary import BatchSummary, FileEntry, summarize, write_summary
from stenod.formats import DEFAULT_SUBTITLES, ResponseFormat, SubtitleOptions, TimestampGranularity

logger = logging.getLogger(__name__)

POLL_INTERVAL_S = 0.2
"""How often the pipeline wakes up to notice a stop request while files are in flight."""


@dataclass(frozen=True, slots=True)
class BatchPlan:
    """What a run will do: every source, the ones left to transcribe, the results kept."""

    input_dir: Path
    output_dir: Path
    formats: tuple[ResponseFormat, ...]
    sources: tuple[SourceFile, ...]
    stems: dict[str, str]
    pending: tuple[SourceFile, ...]
    kept: dict[str, FileResult]
    """Results from earlier runs that stand: done files, and failed ones without --retry-failed."""
    subtitles: SubtitleOptions = DEFAULT_SUBTITLES
    """How srt/vtt/tsv cues are cut and wrapped."""
    granularities: tuple[TimestampGranularity, ...] = ("segment",)
    """``("segment", "word")`` puts word times into verbose_json."""

    def outputs_for(self, source: SourceFile) -> dict[ResponseFormat, Path]:
        return output_paths(self.output_dir, self.stems[source.rel_path], self.formats)

    @property
    def kept_failed(self) -> int:
        return sum(1 for r in self.kept.values() if not r.success)


def plan_batch(
    sources: Sequence[SourceFile], manifest: Manifest, *, input_dir: Path, output_dir: Path,
    formats: Sequence[ResponseFormat], retry_failed: bool, subtitles: SubtitleOptions = DEFAULT_SUBTITLES,
    granularities: Sequence[TimestampGranularity] = ("segment",),
) -> BatchPlan:
    """Split ``sources`` into kept results and pending work.

    A file is kept as done when the manifest's latest record for it succeeded for the same
    identity (relative path, size, mtime_ns) and every requested output exists. A failed record
    for an unchanged file is kept unless ``retry_failed``; a changed file is always redone.
    """
    stems = output_stems(sources)
    kept: dict[str, FileResult] = {}
    pending: list[SourceFile] = []
    for source in sources:
        previous = manifest.get(source.rel_path)
        if previous is not None and previous.same_source(source):
            paths = output_paths(output_dir, stems[source.rel_path], formats)
            if previous.success and outputs_complete(paths.values()):
                kept[source.rel_path] = previous
                continue
            if not previous.success and not retry_failed:
                kept[source.rel_path] = previous
                continue
        pending.append(source)
    return BatchPlan(input_dir=input_dir, output_dir=output_dir, formats=tuple(formats), sources=tuple(sources),
                     stems=stems, pending=tuple(pending), kept=kept, subtitles=subtitles,
                     granularities=tuple(granularities))


class StopControl:
    """Ctrl-C escalation, set from a signal handler and polled by the pipeline."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.abandon = threading.Event()

    def escalate(self) -> int:
        """First call: stop submitting (1). Second: abandon in-flight files (2)."""
        if not self.stop.is_set():
            self.stop.set()
            return 1
        self.abandon.set()
        return 2


class BatchReporter(Protocol):
    def started(self, plan: BatchPlan, runner: str) -> None: ...

    def file_finished(self, source: SourceFile, result: FileResult) -> None: ...

    def note(self, message: str) -> None: ...


class _SilentReporter:
    def started(self, plan: BatchPlan, runner: str) -> None:
        pass

    def file_finished(self, source: SourceFile, result: FileResult) -> None:
        pass

    def note(self, message: str) -> None:
        logger.info("%s", message)


@dataclass(frozen=True, slots=True)
class BatchRun:
    summary: BatchSummary
    fatal_error: str | None
    """Set when the runner could not work at all (model failed to load); the run stopped."""

    @property
    def interrupted(self) -> bool:
        return self.summary.interrupted


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class _Recorder:
    def __init__(self, plan: BatchPlan, manifest: Manifest, reporter: BatchReporter) -> None:
        self.plan = plan
        self.manifest = manifest
        self.reporter = reporter
        self.results: dict[str, FileResult] = {}

    def record(self, source: SourceFile, outcome: WorkOutcome) -> None:
        if outcome.transcript is not None and outcome.error is None:
            paths = self.plan.outputs_for(source)
            try:
                write_outputs(outcome.transcript, paths, subtitles=self.plan.subtitles,
                              granularities=self.plan.granularities)
            except OSError as exc:
                result = FileResult.failed(source, f"could not write outputs: {exc}",
                                           duration_s=outcome.duration_s, processing_s=outcome.processing_s)
            else:
                result = FileResult.ok(
                    source, text=outcome.transcript.text, language=outcome.transcript.language,
                    duration_s=outcome.duration_s, processing_s=outcome.processing_s,
                    outputs=[p.relative_to(self.plan.output_dir).as_posix() for p in paths.values()],
                )
        else:
            result = FileResult.failed(source, outcome.error or "unknown error",
                                       duration_s=outcome.duration_s, processing_s=outcome.processing_s)
        self.manifest.append(result)
        self.results[source.rel_path] = result
        self.reporter.file_finished(source, result)


def run_batch(
    plan: BatchPlan, runner: Runner, manifest: Manifest, *, stop: StopControl | None = None,
    reporter: BatchReporter | None = None,
) -> BatchRun:
    """Transcribe ``plan.pending`` with ``runner``, record results, write the summary.

    The runner is shut down before returning (gracefully, or abandoning in-flight work when
    ``stop.abandon`` was set or an exception escapes). ``summary.json`` / ``summary.csv`` are
    written in every case, including an exception such as KeyboardInterrupt.
    """
    stop = stop or StopControl()
    reporter = reporter or _SilentReporter()
    recorder = _Recorder(plan, manifest, reporter)
    started_at, t0 = _now(), time.perf_counter()
    fatal_error: str | None = None
    abandon = True
    reporter.started(plan, runner.description)
    try:
        fatal_error = _drive(plan, runner, recorder, stop, reporter)
        abandon = stop.abandon.is_set() or fatal_error is not None
    finally:
        runner.shutdown(abandon=abandon)
        interrupted = stop.stop.is_set() or abandon
        entries = _entries(plan, recorder.results)
        summary = summarize(
            entries, input_dir=plan.input_dir, output_dir=plan.output_dir, runner=runner.description,
            formats=list(plan.formats), started_at=started_at, finished_at=_now(),
            wall_s=time.perf_counter() - t0, interrupted=interrupted and any(e.status == "pending" for e in entries),
        )
        write_summary(summary, plan.output_dir / SUMMARY_JSON_NAME, plan.output_dir / SUMMARY_CSV_NAME)
        manifest.compact()
    return BatchRun(summary=summary, fatal_error=fatal_error)


def _drive(plan: BatchPlan, runner: Runner, recorder: _Recorder, stop: StopControl,
           reporter: BatchReporter) -> str | None:
    queue: deque[SourceFile] = deque(plan.pending)
    in_flight: dict[Future[WorkOutcome], SourceFile] = {}
    suspects: set[str] = set()  # were in flight when a worker died; retried one at a time

    while queue or in_flight:
        while queue and len(in_flight) < runner.capacity and not stop.stop.is_set():
            isolate = queue[0].rel_path in suspects or any(s.rel_path in suspects for s in in_flight.values())
            if isolate and in_flight:
                break
            source = queue.popleft()
            in_flight[runner.submit(source.path)] = source
        if not in_flight:
            break
        done, _ = wait(list(in_flight), timeout=POLL_INTERVAL_S, return_when=FIRST_COMPLETED)
        if stop.abandon.is_set():
            reporter.note(f"abandoning {len(in_flight)} file(s) in flight; they stay to do")
            return None
        for future in done:
            source = in_flight.pop(future)
            try:
                outcome = future.result()
            except Exception as exc:  # BrokenProcessPool and kin: the worker, not the file, failed
                if source.rel_path in suspects:
                    outcome = WorkOutcome.failure(
                        f"the worker process died while transcribing this file ({type(exc).__name__})")
                else:
                    suspects.add(source.rel_path)
                    queue.appendleft(source)
                    logger.warning("worker died with %s in flight (%s); retrying it alone", source.rel_path, exc)
                    continue
            if outcome.fatal:
                stop.stop.set()
                return outcome.error or "the runner failed"
            recorder.record(source, outcome)
    return None


def _entries(plan: BatchPlan, results: dict[str, FileResult]) -> list[FileEntry]:
    entries: list[FileEntry] = []
    for source in plan.sources:
        rel = source.rel_path
        if rel in results:
            r = results[rel]
            entries.append(FileEntry(rel, "ok" if r.success else "failed", r))
        elif rel in plan.kept:
            r = plan.kept[rel]
            entries.append(FileEntry(rel, "ok" if r.success else "failed", r, from_earlier_run=True))
        else:
            entries.append(FileEntry(rel, "pending", None))
    return entries


def manifest_path(output_dir: Path) -> Path:
    return output_dir / MANIFEST_NAME
