"""The pipeline with the real tiny.en engine in this process: bad files in the middle, resume,
--retry-failed, changed sources, and a worker that dies (fake runner)."""

from __future__ import annotations

import json
import threading
from concurrent.futures import Future
from pathlib import Path

import pytest

from stenod.batch import (
    InProcessRunner,
    Manifest,
    WorkerConfig,
    WorkOutcome,
    discover_audio,
    manifest_path,
    plan_batch,
    run_batch,
)
from stenod.batch.pipeline import BatchRun, StopControl
from stenod.engines import TranscriptionOptions
from stenod.formats import ResponseFormat
from stenod.models import resolve_model_or_raise
from stenod.settings import ModelSettings, Settings
from stenod.transcript import Transcript
from tests.batch.conftest import BAD_FILES, LIBRI, MISC, make_good_dir

FORMATS: list[ResponseFormat] = ["json", "srt", "vtt", "text"]


def _run(engine: object, cache_dir: Path, src: Path, out: Path, *, retry_failed: bool = False,
         recursive: bool = True) -> BatchRun:
    resolved = resolve_model_or_raise("tiny.en", cache_dir=cache_dir, offline=True)
    settings = Settings(model=ModelSettings(name="tiny.en", cache_dir=cache_dir))
    config = WorkerConfig(model=resolved, settings=settings,
                          options=TranscriptionOptions(), threads=2, max_duration_s=3600)
    manifest = Manifest(manifest_path(out))
    plan = plan_batch(discover_audio(src, recursive=recursive, exclude=out), manifest, input_dir=src,
                      output_dir=out, formats=FORMATS, retry_failed=retry_failed)
    return run_batch(plan, InProcessRunner(config, engine=engine), manifest)  # type: ignore[arg-type]


def _finished_at(out: Path) -> dict[str, str]:
    return {r["filename"]: r["finished_at"] for r in
            (json.loads(line) for line in manifest_path(out).read_text().splitlines())}


def test_bad_files_are_reported_and_the_batch_continues(tiny_engine: object, cache_dir: Path, mixed_dir: Path,
                                                        tmp_path: Path) -> None:
    out = tmp_path / "out"
    run = _run(tiny_engine, cache_dir, mixed_dir, out)
    summary = json.loads((out / "summary.json").read_text())
    status = {f["filename"]: f["status"] for f in summary["files"]}
    assert status == {"a_libri.flac": "ok", "b_corrupt.flac": "failed", "c_austen.wav": "ok", "d_notes.wav": "failed",
                      "e_take.dat": "ok", "f_empty.mp3": "failed", "sub/a_libri.flac": "ok"}
    errors = {f["filename"]: f["error"] for f in summary["files"] if f["status"] == "failed"}
    for name, fragment in BAD_FILES.items():
        assert fragment in errors[name]
    # Every good file has all four outputs, mirrored; nothing for bad files; no temp files.
    produced = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    stems = ["a_libri", "c_austen", "e_take", "sub/a_libri"]
    assert produced == sorted([f"{s}.{e}" for s in stems for e in ("json", "srt", "vtt", "txt")]
                              + ["manifest.jsonl", "summary.csv", "summary.json"])
    assert "He was not" in (out / "c_austen.txt").read_text()
    # The numbers add up.
    ok = [f for f in summary["files"] if f["status"] == "ok"]
    assert summary["files_ok"] + summary["files_failed"] == summary["files_total"] == 7
    assert summary["files_pending"] == 0 and not summary["interrupted"] and run.fatal_error is None
    assert summary["total_audio_s"] == pytest.approx(sum(f["duration_s"] for f in ok), abs=0.01)
    assert summary["total_audio_s"] == pytest.approx(1.645 + 2.99 + 1.895 + 1.965, abs=0.1)
    assert summary["total_processing_s"] == pytest.approx(sum(f["processing_s"] for f in ok), abs=0.01)
    # overall_rtf is rounded to 4 decimals: on a fast host (rtf 0.037) that is more than 1e-3 of it.
    assert summary["overall_rtf"] == pytest.approx(summary["total_processing_s"] / summary["total_audio_s"], rel=1e-3, abs=1e-4)
    for f in ok:
        assert f["realtime_factor"] == pytest.approx(f["processing_s"] / f["duration_s"], rel=1e-2)
    assert summary["throughput_audio_x"] == pytest.approx(summary["run_audio_s"] / summary["wall_s"], rel=1e-2)
    csv_lines = (out / "summary.csv").read_text().splitlines()
    assert len(csv_lines) == 1 + 7


def test_resume_skips_done_files_and_retry_failed_redoes_only_failures(
    tiny_engine: object, cache_dir: Path, tmp_path: Path
) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    make_good_dir(src, {"a_libri.flac": LIBRI / "1447-130550-0000.flac", "c_austen.wav": MISC / "sense_and_sensibility_01_austen_64kb-0880.wav",
                        "e_take.dat": LIBRI / "403-126855-0000.flac"})
    (src / "d_notes.wav").write_text("not audio", encoding="utf-8")
    _run(tiny_engine, cache_dir, src, out)
    first = _finished_at(out)
    output_mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*.txt")}

    again = _run(tiny_engine, cache_dir, src, out)  # nothing to do
    assert again.summary.run_files == 0 and again.summary.files_from_earlier_run == 4
    assert again.summary.files_failed == 1  # failures are kept, not retried
    assert _finished_at(out) == first
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.txt")} == output_mtimes

    # A deleted output and a changed source are redone; a failure is retried only on request.
    (out / "c_austen.srt").unlink()
    (src / "e_take.dat").unlink()  # the recording is replaced by another one
    (src / "e_take.dat").symlink_to((LIBRI / "19-198-0000.flac").resolve())
    retried = _run(tiny_engine, cache_dir, src, out, retry_failed=True)
    after = _finished_at(out)
    redone = {name for name in first if after[name] != first[name]}
    assert redone == {"c_austen.wav", "e_take.dat", "d_notes.wav"}
    assert retried.summary.run_files == 3 and retried.summary.files_failed == 1
    assert (out / "c_austen.srt").is_file()


class _CrashingRunner:
    """Fake runner: a worker 'dies' whenever ``poison`` is in flight, taking every in-flight file with it."""

    def __init__(self, poison: str) -> None:
        self.poison = poison
        self.in_flight: list[tuple[Path, Future[WorkOutcome]]] = []
        self.lock = threading.Lock()
        self.max_together = 0

    capacity = 2
    description = "fake"

    def submit(self, path: Path) -> Future[WorkOutcome]:
        future: Future[WorkOutcome] = Future()
        self.in_flight.append((path, future))
        self.max_together = max(self.max_together, len(self.in_flight))
        if len(self.in_flight) == self.capacity or path.name == self.poison:
            self._settle()
        else:  # a lone file finishes a moment later
            threading.Timer(0.05, self._settle).start()
        return future

    def _settle(self) -> None:
        with self.lock:
            batch, self.in_flight = self.in_flight, []
        crashed = any(p.name == self.poison for p, _ in batch)
        for path, future in batch:
            if crashed:
                future.set_exception(RuntimeError("A process in the process pool was terminated abruptly"))
            else:
                future.set_result(WorkOutcome(Transcript(text=path.name, language="en", duration=1.0), 1.0, 0.1))

    def shutdown(self, *, abandon: bool) -> None:
        self._settle()


def test_a_worker_crash_fails_only_the_file_that_caused_it(tmp_path: Path) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    for name in ("a.wav", "b.wav", "c.wav", "d.wav"):
        (src / name).write_bytes(b"RIFF")
    manifest = Manifest(manifest_path(out))
    plan = plan_batch(discover_audio(src), manifest, input_dir=src, output_dir=out, formats=["text"], retry_failed=False)
    runner = _CrashingRunner(poison="b.wav")
    run = run_batch(plan, runner, manifest)  # type: ignore[arg-type]
    status = {f.filename: (f.status, f.result.error if f.result else None) for f in run.summary.files}
    assert status["b.wav"][0] == "failed" and "worker process died" in (status["b.wav"][1] or "")
    assert [s for name, (s, _) in status.items() if name != "b.wav"] == ["ok", "ok", "ok"]


def test_a_stop_request_leaves_the_rest_pending(tmp_path: Path) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    for name in ("a.wav", "b.wav", "c.wav"):
        (src / name).write_bytes(b"RIFF")
    manifest = Manifest(manifest_path(out))
    plan = plan_batch(discover_audio(src), manifest, input_dir=src, output_dir=out, formats=["text"], retry_failed=False)
    stop = StopControl()

    class _Reporter:
        def started(self, plan: object, runner: str) -> None: ...
        def note(self, message: str) -> None: ...
        def file_finished(self, source: object, result: object) -> None:
            stop.escalate()  # "Ctrl-C" after the first file

    run = run_batch(plan, _CrashingRunner(poison="-"), manifest, stop=stop, reporter=_Reporter())  # type: ignore[arg-type]
    assert run.interrupted
    assert (run.summary.files_ok, run.summary.files_pending) == (2, 1)  # the two in flight finished
    assert json.loads((out / "summary.json").read_text())["files_pending"] == 1
