"""``stenod transcribe FILE...``: print transcripts or write them to a folder.

Inputs are files, ``-`` (standard input) or http(s) URLs (:mod:`stenod.cli.sources`); outputs go to
stdout or to distinct files (:mod:`stenod.cli.outputs`). whisper.cpp's flags are rewritten before
parsing (:mod:`stenod.cli.compat`). Exit codes: 0 all files done, 1 some file failed, 2 bad usage
(nothing done), 130 Ctrl-C ("interrupted after N of M files").
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from types import FrameType
from typing import Annotated, BinaryIO

import numpy as np
import typer
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeRemainingColumn

from stenod.audio import SAMPLE_RATE
from stenod.cli.checks import SUBTITLE_FORMATS, no_effect_warnings, threads_warning
from stenod.cli.common import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    ConfigOption,
    build_settings,
    configure_cli_logging,
    fail,
    report_error,
    stderr,
    warn,
)
from stenod.cli.outputs import OutputPlan, check_writable_or_raise
from stenod.cli.sources import InputSpec, download_or_raise, output_stems, read_stdin
from stenod.engines import (
    CancelledError,
    Engine,
    ProgressCallback,
    TranscriptionOptions,
    cpu_count,
    temperature_schedule,
)
from stenod.errors import ModelNotFoundError, StenodError
from stenod.formats import ResponseFormat, SubtitleOptions, parse_format_list_or_raise
from stenod.languages import LANGUAGE_NAMES, language_name, normalize_language_or_raise
from stenod.service import (
    TranscriptionResult,
    build_options,
    coverage_warning,
    detect_foreign_speech,
    load_engine,
    read_head,
    resolve_model,
    single_call_threads,
    speech_seconds,
    transcribe_source,
)
from stenod.settings import Settings
from stenod.transcript import Task

PROGRESS_MIN_DURATION_S = 30.0
"""Files longer than this get a progress bar."""
DOUBTFUL_AVG_LOGPROB = -0.6
"""An English-only model's transcript this unsure is checked for foreign speech (a multilingual
model's language detection on the first 30 s); confident transcripts skip the check."""
QUALITY_HEAD_S = 600.0
"""Quality checks read at most this much audio again (the coverage check needs the whole file)."""
DETECTOR_MODEL = "base"
"""The bundled multilingual model used to name the language of doubtful English-only transcripts."""

FORMAT_HELP = "txt, json, verbose_json, srt, vtt, tsv; comma-separate several (--formats also works)."
EXAMPLES = """
Examples:

  stenod transcribe talk.mp3                                  # text on stdout
  stenod transcribe a/x.mp3 b/x.flac -f srt,vtt -o subs/       # subs/x.mp3.srt, subs/x.flac.srt, ...
  stenod transcribe https://example.com/talk.ogg -l german    # a URL; language by name or code
  ffmpeg -i video.mkv -f wav - | stenod transcribe - -f srt   # standard input
  stenod transcribe talk.wav -f srt --max-line-width 42 --max-line-count 2
  stenod transcribe talk.wav --offset 60 --duration 30        # one minute in, 30 s
  stenod transcribe talk.wav --detect-language                # language and probabilities only
  stenod transcribe -m tiny.en -f talk.wav -osrt -of out/talk # whisper.cpp's flags work too
"""

P_OUT = "Input and output"
P_SUB = "Subtitles (srt, vtt, tsv)"
P_DEC = "Decoding"
P_VAD = "Voice-activity detection"
P_RUN = "Model and machine"


def transcribe_command(
    files: Annotated[list[str], typer.Argument(help="Audio or video files (any container FFmpeg reads), - for standard input, or http(s) URLs.", show_default=False)],
    output_format: Annotated[str, typer.Option("--format", "--formats", "-f", help=FORMAT_HELP, rich_help_panel=P_OUT)] = "txt",
    output_dir: Annotated[Path | None, typer.Option("--output-dir", "-o", help="Write DIR/<name>.<ext> (created if needed) instead of printing; names never collide.", rich_help_panel=P_OUT)] = None,
    output_file: Annotated[Path | None, typer.Option("--output-file", help="Write BASE.<ext> for the one input (whisper.cpp's -of).", rich_help_panel=P_OUT)] = None,
    language: Annotated[str, typer.Option("--language", "-l", help="Code or English name (de, german), or auto to detect.", rich_help_panel=P_OUT)] = "auto",
    task: Annotated[Task, typer.Option("--task", help="transcribe, or translate to English.", rich_help_panel=P_OUT)] = Task.TRANSCRIBE,
    detect_language: Annotated[bool, typer.Option("--detect-language", help="Only identify the language: print the top languages with probabilities.", rich_help_panel=P_OUT)] = False,
    offset: Annotated[float, typer.Option("--offset", min=0.0, help="Start this many seconds into the audio.", rich_help_panel=P_OUT)] = 0.0,
    duration: Annotated[float | None, typer.Option("--duration", min=0.0, help="Transcribe at most this many seconds (default: to the end).", rich_help_panel=P_OUT, show_default=False)] = None,
    diarize: Annotated[bool, typer.Option("--diarize", help="Label speakers of a two-channel recording by channel.", rich_help_panel=P_OUT)] = False,
    max_line_width: Annotated[int | None, typer.Option("--max-line-width", min=1, help="Wrap cue text at this many characters.", rich_help_panel=P_SUB, show_default=False)] = None,
    max_line_count: Annotated[int | None, typer.Option("--max-line-count", min=1, help="At most this many lines per cue (needs --max-line-width).", rich_help_panel=P_SUB, show_default=False)] = None,
    max_len: Annotated[int | None, typer.Option("--max-len", min=1, help="At most this many characters per cue; 1 = one word per cue (whisper.cpp's -ml).", rich_help_panel=P_SUB, show_default=False)] = None,
    word_cues: Annotated[bool, typer.Option("--word-cues", help="One cue per word.", rich_help_panel=P_SUB)] = False,
    word_timestamps: Annotated[bool, typer.Option("--word-timestamps", help="Word-level times (verbose_json words; finer subtitle cuts).", rich_help_panel=P_DEC)] = False,
    no_timestamps: Annotated[bool, typer.Option("--no-timestamps", help="Decode without timestamp tokens (faster; segments are whole windows).", rich_help_panel=P_DEC)] = False,
    beam_size: Annotated[int | None, typer.Option("--beam-size", min=1, max=16, help="1 = greedy. [default: 1, or STENOD_MODEL__BEAM_SIZE]", rich_help_panel=P_DEC, show_default=False)] = None,
    temperature: Annotated[float, typer.Option("--temperature", min=0.0, max=1.0, help="Start temperature.", rich_help_panel=P_DEC)] = 0.0,
    temperature_increment: Annotated[float, typer.Option("--temperature-increment", min=0.0, max=1.0, help="Fallback step when a window fails the checks below; 0 = no fallback.", rich_help_panel=P_DEC)] = 0.2,
    compression_ratio_threshold: Annotated[float, typer.Option("--compression-ratio-threshold", min=0.0, help="Retry a window whose text compresses better than this (repetition).", rich_help_panel=P_DEC)] = 2.4,
    logprob_threshold: Annotated[float, typer.Option("--logprob-threshold", help="Retry a window whose average log-probability is below this.", rich_help_panel=P_DEC)] = -1.0,
    no_speech_threshold: Annotated[float, typer.Option("--no-speech-threshold", min=0.0, max=1.0, help="Skip a window as silence above this no-speech probability (and below the log-probability threshold).", rich_help_panel=P_DEC)] = 0.6,
    initial_prompt: Annotated[str | None, typer.Option("--initial-prompt", "--prompt", help="Text that primes vocabulary and style.", rich_help_panel=P_DEC, show_default=False)] = None,
    hotwords: Annotated[str | None, typer.Option("--hotwords", help="Names or terms to favour, e.g. 'Kubernetes Nginx'.", rich_help_panel=P_DEC, show_default=False)] = None,
    vad: Annotated[bool | None, typer.Option("--vad/--no-vad", help="Skip non-speech. [default: on for audio over 30 s]", rich_help_panel=P_VAD, show_default=False)] = None,
    vad_threshold: Annotated[float, typer.Option("--vad-threshold", min=0.0, max=1.0, help="Speech probability above which a frame is speech.", rich_help_panel=P_VAD)] = 0.5,
    vad_min_silence_ms: Annotated[int, typer.Option("--vad-min-silence-ms", min=0, help="Shorter pauses do not split speech.", rich_help_panel=P_VAD)] = 2000,
    vad_speech_pad_ms: Annotated[int, typer.Option("--vad-speech-pad-ms", min=0, help="Audio kept around each speech stretch.", rich_help_panel=P_VAD)] = 400,
    model: Annotated[str | None, typer.Option("--model", "-m", help="base, tiny.en, a hub name, a model folder or a ggml file. [default: base, or STENOD_MODEL__NAME]", rich_help_panel=P_RUN, show_default=False)] = None,
    engine: Annotated[str | None, typer.Option("--engine", help="auto, faster-whisper or whisper.cpp. [default: auto]", rich_help_panel=P_RUN, show_default=False)] = None,
    threads: Annotated[int | None, typer.Option("--threads", "-t", min=0, help="CPU threads (0 = every core, up to 8).", rich_help_panel=P_RUN, show_default=False)] = None,
    compute_type: Annotated[str | None, typer.Option("--compute-type", help="auto, int8, float32, float16. [default: auto]", rich_help_panel=P_RUN, show_default=False)] = None,
    device: Annotated[str | None, typer.Option("--device", help="auto, cpu or cuda. [default: auto]", rich_help_panel=P_RUN, show_default=False)] = None,
    config: Annotated[Path | None, ConfigOption] = None,
) -> None:
    """Transcribe files: transcripts on stdout or in --output-dir, one summary line per file on stderr."""
    configure_cli_logging()
    formats = _formats_or_fail(output_format)
    inputs = [InputSpec(f) for f in files]
    if sum(i.is_stdin for i in inputs) > 1:
        fail("- (standard input) can be given only once", code=EXIT_USAGE)
    if output_file is not None and (len(inputs) > 1 or output_dir is not None):
        fail("--output-file names the outputs of one input; with several inputs use --output-dir", code=EXIT_USAGE)
    try:
        subtitles = SubtitleOptions(max_line_width=max_line_width, max_line_count=max_line_count,
                                    max_cue_chars=max_len, word_cues=word_cues)
    except ValueError:
        fail("--max-line-count needs --max-line-width (lines are made by wrapping)", code=EXIT_USAGE)
    vad_flags = [name for name, value, default in (
        ("--vad-threshold", vad_threshold, 0.5), ("--vad-min-silence-ms", vad_min_silence_ms, 2000),
        ("--vad-speech-pad-ms", vad_speech_pad_ms, 400)) if value != default]
    decoding_flags = [name for name, on in (
        ("--offset", offset > 0), ("--duration", duration is not None), ("--hotwords", bool(hotwords)),
        ("--initial-prompt", bool(initial_prompt)), ("--no-timestamps", no_timestamps)) if on]
    for message in no_effect_warnings(formats, word_timestamps=word_timestamps, subtitles=subtitles, vad=vad,
                                      vad_flags=vad_flags, no_timestamps=no_timestamps,
                                      detect_language=detect_language, decoding_flags=decoding_flags):
        warn(message)
    plan = OutputPlan(formats=formats, output_dir=output_dir, output_file=output_file, inputs=len(inputs),
                      granularities=("segment", "word") if word_timestamps else ("segment",), subtitles=subtitles)
    _check_output_or_fail(plan)
    settings = build_settings(
        config,
        model={"name": model, "engine": engine, "threads": threads, "compute_type": compute_type,
               "device": device, "beam_size": beam_size},
    )
    cores = cpu_count()
    threads_message = threads_warning(settings.model.threads, cores)
    if threads_message:
        warn(threads_message)
    lang = language_code_or_fail(language)
    wants_words = word_timestamps or (subtitles.splits_segments and bool(set(formats) & SUBTITLE_FORMATS))
    try:
        options = replace(
            build_options(settings.model, language=lang, task=task, temperature=temperature, prompt=initial_prompt,
                          word_timestamps=wants_words, vad=vad, without_timestamps=no_timestamps),
            # The CLI's decoding knobs beyond the common ones.
            temperature=temperature_schedule(temperature, temperature_increment), hotwords=hotwords or None,
            compression_ratio_threshold=compression_ratio_threshold, log_prob_threshold=logprob_threshold,
            no_speech_threshold=no_speech_threshold, vad_threshold=vad_threshold,
            vad_min_silence_ms=vad_min_silence_ms, vad_speech_pad_ms=vad_speech_pad_ms,
            offset_s=offset, duration_s=duration,
        )
    except StenodError as exc:
        fail(exc.message, code=EXIT_USAGE)
    engine_obj = _load_engine_or_fail(settings, options)
    run = _Run(settings=settings, engine=engine_obj, options=options, plan=plan, diarize=diarize,
               detect_only=detect_language, total=len(inputs))
    try:
        run.all(inputs)
    finally:
        run.close()
    if plan.written:
        stderr.print("wrote " + " ".join(str(p) for p in plan.written), markup=False, soft_wrap=True)
    if run.interrupted:
        fail(f"interrupted after {run.done} of {len(inputs)} files", code=EXIT_INTERRUPTED)
    if run.failures:
        raise typer.Exit(EXIT_FAILED)


def parse_formats(value: str) -> list[ResponseFormat]:
    """``--format``/``--formats``: a usage error (exit 2) for an unknown name."""
    try:
        return parse_format_list_or_raise(value)
    except StenodError as exc:
        raise typer.BadParameter(exc.message) from None


def language_code_or_fail(value: str, *, flag: str = "--language") -> str | None:
    """A code (``de``) or an English name (``German``, as openai-whisper's CLI takes) as a code;
    ``None`` for auto. Unknown values are a usage error with the closest names."""
    import difflib

    wanted = value.strip().lower()
    by_name = {name: code for code, name in LANGUAGE_NAMES.items()}
    try:
        return normalize_language_or_raise(by_name.get(wanted, wanted))
    except StenodError:
        close = difflib.get_close_matches(wanted, [*by_name, *LANGUAGE_NAMES], n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else "; use a code (de) or an English name (german), or auto"
        fail(f"{flag}: unknown language {value!r}{hint}", code=EXIT_USAGE)


def _formats_or_fail(value: str) -> list[ResponseFormat]:
    try:
        return list(dict.fromkeys(parse_formats(value)))
    except typer.BadParameter as exc:
        fail(f"--format: {exc.message}", code=EXIT_USAGE)


def _check_output_or_fail(plan: OutputPlan) -> None:
    """Before the model loads: a folder that cannot be written fails now, not after the work."""
    folder = plan.output_dir if plan.output_dir is not None else (
        plan.output_file.parent if plan.output_file is not None else None)
    if folder is None:
        return
    flag = "--output-dir" if plan.output_dir is not None else "--output-file"
    try:
        check_writable_or_raise(folder)
    except OSError as exc:
        fail(f"{flag} {folder}: cannot write there ({exc.strerror or exc})", code=EXIT_USAGE)


def _load_engine_or_fail(settings: Settings, options: TranscriptionOptions) -> Engine:
    try:
        resolved = resolve_model(settings)
    except ModelNotFoundError as exc:  # a bad --model value: usage, as in batch
        fail(f"--model: {exc.message}", code=EXIT_USAGE)
    except StenodError as exc:  # found but not usable here (cache folder not writable, ...)
        fail(exc.message, code=EXIT_FAILED)
    try:
        engine = load_engine(settings, model=resolved)  # one file at a time: the one call gets every core
    except StenodError as exc:
        fail(exc.message, code=EXIT_FAILED)
    info = engine.info()
    if not info.multilingual and (options.task is Task.TRANSLATE or options.language not in (None, "en")):
        engine.close()
        what = "translate" if options.task is Task.TRANSLATE else f"transcribe language {options.language!r}"
        fail(f"--model {info.model} is English-only and cannot {what}; use a multilingual model such as "
             f"--model base", code=EXIT_USAGE)
    return engine


class _Run:
    """The per-file loop: read, transcribe (Ctrl-C cancels the file in progress), emit, report."""

    def __init__(self, *, settings: Settings, engine: Engine, options: TranscriptionOptions, plan: OutputPlan,
                 diarize: bool, detect_only: bool, total: int) -> None:
        self.settings, self.engine, self.options, self.plan = settings, engine, options, plan
        self.diarize, self.detect_only, self.total = diarize, detect_only, total
        self.done = 0
        self.failures = 0
        self.interrupted = False
        self._detector: Engine | None = None
        self._cancel = threading.Event()

    def close(self) -> None:
        self.engine.close()
        if self._detector is not None:
            self._detector.close()

    def all(self, inputs: list[InputSpec]) -> None:
        stems = output_stems(inputs)
        try:
            for spec, stem in zip(inputs, stems, strict=True):
                if not self.one(spec, stem):
                    break
                self.done += 1
        except KeyboardInterrupt:  # Ctrl-C while reading input or writing output
            self.interrupted = True

    def one(self, spec: InputSpec, stem: str) -> bool:
        """Process one input; False when interrupted."""
        max_s = self.settings.audio.max_duration_s
        try:
            source = self._open(spec)
            if self.detect_only:  # Whisper detects from the first 30 s
                self._print_detection(spec, read_head(source, seconds=30.0, max_duration_s=max_s)[0])
                return True
            with _ctrl_c_cancels(self._cancel), self._progress(spec) as progress:
                # Streamed and chunked: memory stays bounded whatever the audio's duration.
                result = transcribe_source(self.engine, source, self.options, max_duration_s=max_s,
                                           diarize=self.diarize, progress=progress, cancel=self._cancel,
                                           chunk_s=self.settings.audio.chunk_s)
        except CancelledError:
            self.interrupted = True
            return False
        except StenodError as exc:
            report_error(exc, subject=spec.arg)
            self.failures += 1
            return True
        try:
            self.plan.emit(result.transcript, stem)
        except OSError as exc:  # disk full, folder removed or made read-only mid-run
            target = self.plan.output_dir or self.plan.output_file or "stdout"
            report_error(StenodError(f"cannot write output to {target}: {exc.strerror or exc}"), subject=spec.arg)
            self.failures += 1
            return True
        _summary(spec, result)
        try:
            for message in self._quality(result, source):
                warn(f"{spec.arg}: {message}")
        except StenodError:  # the checks are advice; the transcript is already out
            pass
        return True

    def _open(self, spec: InputSpec) -> str | BinaryIO:
        if spec.is_stdin:
            return read_stdin()
        if spec.is_url:
            return download_or_raise(spec.arg, max_bytes=int(self.settings.audio.max_file_mb * 1_000_000))
        return spec.arg

    @contextmanager
    def _progress(self, spec: InputSpec) -> Iterator[ProgressCallback]:
        with Progress(
            TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
            TimeRemainingColumn(), console=stderr, transient=True, disable=not stderr.is_terminal,
        ) as bar:
            task_ids: list[TaskID] = []  # the bar appears only once the audio is known to be long

            def progress(done_s: float, total_s: float) -> None:
                if total_s < PROGRESS_MIN_DURATION_S:
                    return
                if not task_ids:
                    task_ids.append(bar.add_task(f"{spec.file_name} ({self.done + 1}/{self.total})", total=total_s))
                bar.update(task_ids[0], completed=done_s)

            yield progress

    def _print_detection(self, spec: InputSpec, samples: np.ndarray) -> None:
        if not self.engine.info().multilingual:
            fail(f"--detect-language needs a multilingual model; {self.engine.info().model} is English-only "
                 f"(use --model base)", code=EXIT_USAGE)
        detection = self.engine.detect_language(samples)
        ranked = sorted(detection.all_probabilities.items(), key=lambda kv: kv[1], reverse=True)[:5]
        others = ", ".join(f"{code} {p:.3f}" for code, p in ranked if code != detection.language)
        typer.echo(f"{spec.arg}: {detection.language} ({language_name(detection.language)}) "
                   f"{detection.probability:.3f}" + (f"; then {others}" if others else ""))

    def _quality(self, result: TranscriptionResult, source: str | BinaryIO) -> list[str]:
        """Foreign speech for an English-only model (only when its transcript is doubtful) and low
        coverage (audio up to :data:`QUALITY_HEAD_S`; longer files are not re-read whole)."""
        out: list[str] = []
        transcript = result.transcript
        info = self.engine.info()
        segments = [s for s in transcript.segments if s.text.strip()]
        doubtful = bool(segments) and sum(s.avg_logprob for s in segments) / len(segments) < DOUBTFUL_AVG_LOGPROB
        check_language = not info.multilingual and self.options.language is None and doubtful
        check_coverage = result.audio_duration_s >= 10 and not self.options.without_timestamps
        # The coverage check's own VAD (result.speech_s) where it ran; VAD over the head otherwise.
        speech_s = result.speech_s if check_coverage else None
        read_vad = check_coverage and speech_s is None
        if check_language or read_vad:
            head, complete = read_head(source, seconds=QUALITY_HEAD_S, max_duration_s=self.settings.audio.max_duration_s)
            if check_language:
                detector = self._language_detector()
                message = None if detector is None else detect_foreign_speech(detector, head, model=info.model)
                if message:
                    out.append(message)
            if read_vad and complete:
                start = int(self.options.offset_s * SAMPLE_RATE)
                stop = None if self.options.duration_s is None else start + int(self.options.duration_s * SAMPLE_RATE)
                speech_s = speech_seconds(head[start:stop])
        message = None if speech_s is None else coverage_warning(transcript, speech_s)
        if message:
            out.append(message)
        return out

    def _language_detector(self) -> Engine | None:
        if self._detector is None:
            try:
                detector_settings = self.settings.model_copy(update={
                    "model": self.settings.model.model_copy(update={"engine": "faster-whisper"})})
                self._detector = load_engine(detector_settings, model=DETECTOR_MODEL,
                                             threads=single_call_threads(self.settings.model))
            except StenodError:
                return None
        return self._detector


@contextmanager
def _ctrl_c_cancels(cancel: threading.Event) -> Iterator[None]:
    """While a file is transcribed, the first Ctrl-C cancels it at the next segment (the engine
    stops cleanly); a second one interrupts at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_sigint(signum: int, frame: FrameType | None) -> None:
        if cancel.is_set():
            raise KeyboardInterrupt
        cancel.set()

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _summary(spec: InputSpec, result: TranscriptionResult) -> None:
    rtf = result.realtime_factor
    speed = f"{1 / rtf:.1f}x real time" if rtf > 0 else "-"
    stderr.print(
        f"{spec.file_name if not spec.is_url else spec.arg}: {result.audio_duration_s:.1f} s audio in "
        f"{result.processing_s:.2f} s (RTF {rtf:.3f}, {speed}), language {result.transcript.language}",
        markup=False,
    )
