"""``stenod transcribe FILE...``: print transcripts or write them next to each other in a folder."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeRemainingColumn

from stenod.cli.common import ConfigOption, build_settings, configure_cli_logging, fail, report_error, stderr
from stenod.engines import TranscriptionOptions, cpu_count, create_engine, temperature_schedule
from stenod.engines.base import Engine
from stenod.engines.languages import normalize_language_or_raise
from stenod.errors import StenodError, UnsupportedParameterError
from stenod.formats import FORMAT_EXTENSIONS, RESPONSE_FORMATS, ResponseFormat, render
from stenod.models import resolve_model_or_raise
from stenod.service.transcription import TranscriptionResult, transcribe_source
from stenod.settings import Settings
from stenod.storage.atomic import write_atomic

PROGRESS_MIN_DURATION_S = 30.0
"""Files longer than this get a progress bar."""

_FORMAT_ALIASES: dict[str, ResponseFormat] = {"txt": "text", **{f: f for f in RESPONSE_FORMATS}}


def parse_formats(value: str) -> list[ResponseFormat]:
    formats: list[ResponseFormat] = []
    for raw in value.split(","):
        name = raw.strip().lower()
        if name not in _FORMAT_ALIASES:
            raise typer.BadParameter(f"unknown format {raw!r}; choose from txt, json, verbose_json, srt, vtt, tsv")
        formats.append(_FORMAT_ALIASES[name])
    return formats


def transcribe_command(
    files: Annotated[list[Path], typer.Argument(help="Audio or video files (any container FFmpeg reads).")],
    model: Annotated[str | None, typer.Option("--model", "-m", help="base, tiny.en, a hub name, a model folder or a ggml file.")] = None,
    engine: Annotated[str | None, typer.Option("--engine", help="auto, faster-whisper or whisper.cpp.")] = None,
    language: Annotated[str, typer.Option("--language", "-l", help="ISO-639-1 code, or auto to detect.")] = "auto",
    task: Annotated[str, typer.Option("--task", help="transcribe, or translate to English.")] = "transcribe",
    output_format: Annotated[str, typer.Option("--format", "-f", help="txt, json, verbose_json, srt, vtt, tsv (comma-separate several).")] = "txt",
    output_dir: Annotated[Path | None, typer.Option("--output-dir", "-o", help="Write DIR/<stem>.<ext> instead of printing.")] = None,
    word_timestamps: Annotated[bool, typer.Option("--word-timestamps", help="Word-level times in verbose_json.")] = False,
    vad: Annotated[bool | None, typer.Option("--vad/--no-vad", help="Voice-activity detection (default: on for audio over 30 s).")] = None,
    beam_size: Annotated[int | None, typer.Option("--beam-size", min=1, max=16, help="1 = greedy (default).")] = None,
    temperature: Annotated[float, typer.Option("--temperature", min=0.0, max=1.0, help="Start temperature; falls back in 0.2 steps.")] = 0.0,
    initial_prompt: Annotated[str | None, typer.Option("--initial-prompt", help="Text that primes vocabulary and style.")] = None,
    threads: Annotated[int | None, typer.Option("--threads", "-t", min=0, help="CPU threads (0 = choose).")] = None,
    compute_type: Annotated[str | None, typer.Option("--compute-type", help="auto, int8, float32, float16.")] = None,
    device: Annotated[str | None, typer.Option("--device", help="auto, cpu or cuda.")] = None,
    diarize: Annotated[bool, typer.Option("--diarize", help="Label speakers of a two-channel recording by channel.")] = False,
    config: Annotated[Path | None, ConfigOption] = None,
) -> None:
    """Transcribe files; one summary line per file on stderr, transcripts on stdout or in --output-dir."""
    configure_cli_logging()
    if task not in ("transcribe", "translate"):
        fail(f"--task must be transcribe or translate, not {task!r}", code=2)
    formats = parse_formats(output_format)
    if output_dir is not None:  # before the model loads: a bad folder should not cost a load
        try:
            output_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            fail(f"cannot create output folder {output_dir}: {exc.strerror or exc}")
    settings = build_settings(
        config,
        model={"name": model, "engine": engine, "threads": threads, "compute_type": compute_type,
               "device": device, "beam_size": beam_size},
    )
    try:
        options = TranscriptionOptions(
            language=normalize_language_or_raise(language),
            task=task,  # type: ignore[arg-type]
            beam_size=settings.model.beam_size,
            temperature=temperature_schedule(temperature),
            initial_prompt=initial_prompt,
            word_timestamps=word_timestamps,
            vad=vad,
            vad_min_duration_s=settings.model.vad_min_duration_s,
        )
        engine_obj = _load_engine(settings)
    except StenodError as exc:
        fail(exc.message)
    failures = 0
    try:
        for path in files:
            try:
                result = _transcribe_one(engine_obj, path, options, settings, diarize=diarize)
            except StenodError as exc:
                report_error(exc, subject=path)
                failures += 1
                continue
            try:
                _emit(result, path, formats, output_dir, word_timestamps)
            except OSError as exc:  # disk full, folder removed or made read-only mid-run
                target = output_dir or "stdout"
                report_error(StenodError(f"cannot write output to {target}: {exc.strerror or exc}"), subject=path)
                failures += 1
                continue
            _summary(path, result)
    finally:
        engine_obj.close()
    if failures:
        raise typer.Exit(1)


def _load_engine(settings: Settings) -> Engine:
    resolved = resolve_model_or_raise(settings.model.name, cache_dir=settings.model.cache_dir, offline=settings.offline)
    # One file at a time: give the one call every core (threads=0 -> all cores, capped at 8).
    threads = settings.model.threads or min(8, cpu_count())
    return create_engine(resolved, settings.model, threads=threads, concurrency=1)


def _transcribe_one(
    engine: Engine, path: Path, options: TranscriptionOptions, settings: Settings, *, diarize: bool
) -> TranscriptionResult:
    if options.task == "translate" and not engine.info().multilingual:
        raise UnsupportedParameterError(f"model {engine.info().model!r} is English-only and cannot translate")
    with Progress(
        TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
        TimeRemainingColumn(), console=stderr, transient=True, disable=not stderr.is_terminal,
    ) as bar:
        task_ids: list[TaskID] = []  # the bar appears only once the audio is known to be long

        def progress(done_s: float, total_s: float) -> None:
            if total_s < PROGRESS_MIN_DURATION_S:
                return
            if not task_ids:
                task_ids.append(bar.add_task(path.name, total=total_s))
            bar.update(task_ids[0], completed=done_s)

        return transcribe_source(
            engine, path, options, max_duration_s=settings.audio.max_duration_s,
            diarize=diarize, progress=progress, chunk_s=settings.audio.chunk_s,
        )


def _emit(
    result: TranscriptionResult, path: Path, formats: list[ResponseFormat], output_dir: Path | None, words: bool
) -> None:
    granularities = ("segment", "word") if words else ("segment",)
    for fmt in formats:
        body = render(result.transcript, fmt, granularities=granularities)
        if output_dir is None:
            sys.stdout.write(body if body.endswith("\n") or not body else body + "\n")
            sys.stdout.flush()
        else:
            write_atomic(output_dir / f"{path.stem}.{FORMAT_EXTENSIONS[fmt]}", body)


def _summary(path: Path, result: TranscriptionResult) -> None:
    rtf = result.realtime_factor
    speed = f"{1 / rtf:.1f}x real time" if rtf > 0 else "-"
    stderr.print(
        f"{path.name}: {result.audio_duration_s:.1f} s audio in {result.processing_s:.2f} s "
        f"(RTF {rtf:.3f}, {speed}), language {result.transcript.language}",
        markup=False,
    )
