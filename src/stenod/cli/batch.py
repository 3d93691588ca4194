"""``stenod batch INPUT_DIR -o OUT``: transcribe a folder of recordings, resumably, with a report.

Progress and one line per failed file go to stderr; the summary table goes to stdout. Exit codes:
0 all files ok, 1 any file failed (this run or kept from an earlier one) or the model could not
load, 2 bad usage, 130 interrupted with Ctrl-C (143 with SIGTERM).
"""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TaskID, TextColumn, TimeRemainingColumn

from stenod.batch import (
    BatchPlan,
    FileResult,
    Manifest,
    Runner,
    ServerClient,
    ServerOptions,
    ServerRunner,
    SourceFile,
    StopControl,
    declared_duration_s,
    discover_audio,
    local_runner,
    manifest_path,
    plan_batch,
    run_batch,
    summary_table,
)
from stenod.cli.checks import SUBTITLE_FORMATS, no_effect_warnings, threads_warning
from stenod.cli.common import ConfigOption, build_settings, configure_cli_logging, fail, stderr, warn
from stenod.cli.transcribe import language_code_or_fail, parse_formats
from stenod.engines import TranscriptionOptions, cpu_count
from stenod.errors import ModelNotFoundError, StenodError
from stenod.formats import ResponseFormat, SubtitleOptions
from stenod.service import build_options
from stenod.settings import Settings
from stenod.transcript import Task

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_SIGINT = 130
EXIT_SIGTERM = 143


class _Reporter:
    """Rich progress on a terminal (files, audio hours, ETA from measured speed); plain lines otherwise."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.interactive = console.is_terminal
        self.progress = Progress(
            SpinnerColumn(), TextColumn("{task.fields[files]}"), BarColumn(),
            TextColumn("{task.fields[audio]}"), TextColumn("ETA"), TimeRemainingColumn(),
            console=console, transient=False, disable=not self.interactive,
        )
        self._task: TaskID | None = None
        self._done = 0
        self._total = 0
        self._audio_done_s = 0.0
        self._lock = threading.Lock()

    def __enter__(self) -> _Reporter:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(None, None, None)

    def started(self, plan: BatchPlan, runner: str) -> None:
        self._total = len(plan.pending)
        self.console.print(
            f"stenod batch: {len(plan.sources)} recordings, {len(plan.sources) - len(plan.pending)} already done "
            f"or kept, {len(plan.pending)} to transcribe ({runner})", highlight=False)
        self._task = self.progress.add_task("batch", total=None, files=self._files_text(), audio=self._audio_text())
        if self.interactive and plan.pending:
            threading.Thread(target=self._estimate_total, args=(plan.pending,), daemon=True,
                             name="stenod-probe").start()

    def _estimate_total(self, pending: tuple[SourceFile, ...]) -> None:
        """Sum declared durations (header only) so the bar has a total in audio seconds and
        TimeRemainingColumn turns measured audio-seconds-per-second into an ETA."""
        known: list[float] = []
        for source in pending:
            d = declared_duration_s(source.path)
            if d is not None and d > 0:
                known.append(d)
        if not known or self._task is None:
            return
        estimate = sum(known) / len(known) * len(pending)
        with self._lock:
            self.progress.update(self._task, total=max(estimate, self._audio_done_s))
            self.progress.update(self._task, audio=self._audio_text())

    def _files_text(self) -> str:
        return f"{self._done}/{self._total} files"

    def _audio_text(self) -> str:
        total = self.progress.tasks[0].total if self._task is not None else None
        of = f" of ~{total / 3600:.2f}" if total else ""
        return f"{self._audio_done_s / 3600:.2f}{of} h audio"

    def file_finished(self, source: SourceFile, result: FileResult) -> None:
        with self._lock:
            self._done += 1
            if result.success:
                self._audio_done_s += result.duration_s
            if self._task is not None:
                task = self.progress.tasks[0]
                total = task.total if task.total is None else max(task.total, self._audio_done_s)
                self.progress.update(self._task, completed=self._audio_done_s, total=total,
                                     files=self._files_text(), audio=self._audio_text())
        if not result.success:
            self.console.print(f"[red]failed[/red] {source.rel_path}: {result.error}", highlight=False)
        elif not self.interactive:
            self.console.print(
                f"ok {source.rel_path}: {result.duration_s:.1f} s audio in {result.processing_s:.2f} s "
                f"(RTF {result.realtime_factor:.3f})", highlight=False)

    def note(self, message: str) -> None:
        self.console.print(message, highlight=False)


SERVER_DEFAULT_MODEL = "whisper-1"
"""Sent with --server when no --model is given: OpenAI's name, which stenod serve maps to its default."""


def _make_runner(
    settings: Settings, *, server: str | None, server_model: str | None, options: TranscriptionOptions,
    pending: int,
) -> Runner:
    if not server:
        return local_runner(settings, options, pending=pending)
    b = settings.batch
    client = ServerClient(ServerOptions(
        base_url=server, model=server_model or SERVER_DEFAULT_MODEL, language=options.language, task=options.task,
        concurrency=b.server_concurrency, retries=b.server_retries, backoff_s=b.server_backoff_s,
        max_backoff_s=b.server_max_backoff_s, timeout_s=b.server_timeout_s,
        api_key=b.server_api_key.get_secret_value() if b.server_api_key else None,
        word_timestamps=options.word_timestamps,
    ))
    unreachable = client.check_reachable()
    if unreachable:
        client.close()
        fail(unreachable, code=EXIT_FAILED)
    return ServerRunner(client)


def batch_command(
    input_dir: Annotated[Path, typer.Argument(help="Folder of recordings (wav mp3 m4a flac ogg opus webm mp4, or any file whose content is audio).")],
    output_dir: Annotated[Path, typer.Option("--output-dir", "-o", help="Where transcripts, manifest.jsonl and summary.json/csv go.")],
    recursive: Annotated[bool, typer.Option("--recursive", "-r", help="Include sub-folders (mirrored in the output folder).")] = False,
    workers: Annotated[int | None, typer.Option("--workers", "-w", min=0, help="Local worker processes, each loading the model once (0 = choose from the cores).")] = None,
    threads: Annotated[int | None, typer.Option("--threads", "-t", min=0, help="CPU threads per worker (0 = cores // workers).")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", min=0, help="Use one process with faster-whisper's batched pipeline, this many windows at once.")] = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help="base, tiny.en, a hub name, a model folder or a ggml file (with --server: the name sent; default: the server's default model).")] = None,
    engine: Annotated[str | None, typer.Option("--engine", help="auto, faster-whisper or whisper.cpp.")] = None,
    compute_type: Annotated[str | None, typer.Option("--compute-type", help="auto, int8, float32, float16.")] = None,
    device: Annotated[str | None, typer.Option("--device", help="auto, cpu or cuda.")] = None,
    formats: Annotated[str | None, typer.Option("--formats", "--format", "-f", help="Comma-separated: txt, json, verbose_json, srt, vtt, tsv (default json,srt,vtt,txt).")] = None,
    language: Annotated[str, typer.Option("--language", "-l", help="ISO-639-1 code, or auto to detect per file.")] = "auto",
    task: Annotated[Task, typer.Option("--task", help="transcribe, or translate to English.")] = Task.TRANSCRIBE,
    beam_size: Annotated[int | None, typer.Option("--beam-size", min=1, max=16, help="1 = greedy (default).")] = None,
    max_line_width: Annotated[int | None, typer.Option("--max-line-width", min=1, help="Subtitles: wrap cue text at this many characters.", show_default=False)] = None,
    max_line_count: Annotated[int | None, typer.Option("--max-line-count", min=1, help="Subtitles: at most this many lines per cue (needs --max-line-width).", show_default=False)] = None,
    max_len: Annotated[int | None, typer.Option("--max-len", min=1, help="Subtitles: at most this many characters per cue; 1 = one word per cue.", show_default=False)] = None,
    word_cues: Annotated[bool, typer.Option("--word-cues", help="Subtitles: one cue per word.")] = False,
    word_timestamps: Annotated[bool, typer.Option("--word-timestamps", help="Word-level times (words in verbose_json; finer subtitle cuts).")] = False,
    retry_failed: Annotated[bool, typer.Option("--retry-failed", help="Also redo files that failed in an earlier run.")] = False,
    server: Annotated[str | None, typer.Option("--server", help="Send files to a running stenod (OpenAI-compatible) server at this URL instead of local workers.")] = None,
    concurrency: Annotated[int | None, typer.Option("--concurrency", min=1, help="With --server: requests in flight (default 2).")] = None,
    retries: Annotated[int | None, typer.Option("--retries", min=0, help="With --server: retries per file on 429/503/connection errors (default 5).")] = None,
    api_key: Annotated[str | None, typer.Option("--api-key", help="With --server: bearer key (or STENOD_BATCH__SERVER_API_KEY).")] = None,
    config: Annotated[Path | None, ConfigOption] = None,
) -> None:
    """Transcribe every recording in a folder; rerun to resume, --retry-failed to redo failures."""
    configure_cli_logging()
    if not input_dir.is_dir():
        fail(f"{input_dir}: not a folder", code=EXIT_USAGE)
    if server and batch_size:
        fail("--batch-size runs a local batched pipeline; it cannot be combined with --server", code=EXIT_USAGE)
    settings = build_settings(
        config,
        model={"name": model, "engine": engine, "compute_type": compute_type, "device": device, "beam_size": beam_size},
        batch={"workers": workers, "threads": threads, "batch_size": batch_size, "formats": formats,
               "server_concurrency": concurrency, "server_retries": retries, "server_api_key": api_key},
    )
    for flag, value in (("--threads", settings.batch.threads), ("--workers", settings.batch.workers)):
        message = threads_warning(value, cpu_count(), flag=flag)
        if message:
            warn(message)
    try:
        fmt_list: list[ResponseFormat] = list(dict.fromkeys(parse_formats(settings.batch.formats)))
    except typer.BadParameter as exc:
        fail(str(exc), code=EXIT_USAGE)
    try:
        subtitles = SubtitleOptions(max_line_width=max_line_width, max_line_count=max_line_count,
                                    max_cue_chars=max_len, word_cues=word_cues)
    except ValueError:
        fail("--max-line-count needs --max-line-width (lines are made by wrapping)", code=EXIT_USAGE)
    for message in no_effect_warnings(fmt_list, word_timestamps=word_timestamps, subtitles=subtitles, vad=None,
                                      vad_flags=(), no_timestamps=False, detect_language=False, decoding_flags=()):
        warn(message)
    # Word-level cues need word times from the engine; so does verbose_json when asked for words.
    wants_words = word_timestamps or (subtitles.splits_segments and bool(set(fmt_list) & SUBTITLE_FORMATS))
    lang = language_code_or_fail(language)
    options = build_options(settings.model, language=lang, task=task, batch_size=settings.batch.batch_size,
                            word_timestamps=wants_words)

    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        fail(f"{output_dir}: cannot create the output folder ({exc.strerror or exc})", code=EXIT_USAGE)
    try:  # scanning 10,000 files takes a moment; Ctrl-C here has nothing to save
        sources = discover_audio(input_dir, recursive=recursive, exclude=output_dir)
        manifest = Manifest(manifest_path(output_dir))
        plan = plan_batch(sources, manifest, input_dir=input_dir.resolve(), output_dir=output_dir,
                          formats=fmt_list, retry_failed=retry_failed, subtitles=subtitles,
                          granularities=("segment", "word") if word_timestamps else ("segment",))
        if not sources:
            stderr.print(f"stenod batch: no recordings found in {input_dir}"
                         + ("" if recursive else " (use --recursive for sub-folders)"), highlight=False)
        runner = _make_runner(settings, server=server, server_model=model, options=options,
                              pending=len(plan.pending))
    except KeyboardInterrupt:
        fail("interrupted before any file was started", code=EXIT_SIGINT)
    except ModelNotFoundError as exc:
        fail(exc.message, code=EXIT_USAGE)
    except StenodError as exc:
        fail(exc.message, code=EXIT_FAILED)

    stop = StopControl()
    received: list[int] = []
    with _Reporter(stderr) as reporter:

        def on_signal(signum: int, frame: FrameType | None) -> None:
            received.append(signum)
            if signum == signal.SIGTERM:  # a supervisor wants us gone: abandon in-flight files now
                stop.stop.set()
                stop.abandon.set()
                return
            if stop.escalate() == 1:
                reporter.note("Ctrl-C: finishing the files in flight, then writing the summary "
                              "(Ctrl-C again abandons them)")

        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        started = time.perf_counter()
        try:
            run = run_batch(plan, runner, manifest, stop=stop, reporter=reporter)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    Console(highlight=False).print(summary_table(run.summary))
    if plan.kept_failed and not retry_failed:
        stderr.print(f"{plan.kept_failed} file(s) failed in an earlier run and were not retried; "
                     "rerun with --retry-failed to retry them", highlight=False)
    stderr.print(f"summary: {output_dir / 'summary.json'} ({time.perf_counter() - started:.1f} s)", highlight=False)
    if run.fatal_error:
        fail(run.fatal_error, code=EXIT_FAILED)
    if received:
        code = EXIT_SIGTERM if signal.SIGTERM in received else EXIT_SIGINT
        fail(f"interrupted after {run.summary.run_files} of {len(plan.pending)} files "
             f"(rerun the same command to resume)", code=code)
    if run.summary.files_failed:
        raise typer.Exit(EXIT_FAILED)
