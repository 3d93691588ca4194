"""whisper.cpp engine through pywhispercpp's native binding (``_pywhispercpp``), for ggml model files.

Design choices:

- **Validate before loading.** whisper.cpp aborts the whole process (``GGML_ASSERT`` -> ``abort()``)
  on some malformed files, and pywhispercpp 1.5.1 (whisper.cpp 1.8.x) aborts on f32 ggml files.
  An abort cannot be caught, and in the server it would take every in-flight request down with
  it. So every file goes through :func:`stenod.models.ggml.validate_ggml_file` (magic,
  hparams, vocabulary, every tensor's name, type, shape and byte size, and the file length)
  first, f32 files are refused, and only then does whisper.cpp see the file. Failures are
  :class:`~stenod.errors.ModelLoadError` (HTTP 400 on ``/load``).
- **The low-level binding, not ``pywhispercpp.model.Model``.** ``Model`` fixes the sampling
  strategy (greedy or beam) when it is built and keeps one mutable ``whisper_full_params`` for
  every call, so per-call beam size and concurrent calls would need one ``Model`` per strategy
  and a lock around its shared params. Here each call builds its own params from
  ``whisper_full_default_params``, and reads token ids, probabilities and token timestamps that
  ``Model`` does not return.
- **Concurrency: one whisper context per slot.** A whisper.cpp context holds decoder state and is
  not safe to share between threads; the binding does not expose ``whisper_init_state`` (which
  would let states share one copy of the weights). ``whisper_full`` releases the GIL, so
  ``config.concurrency`` contexts in a pool run truly in parallel, each holding its own weights:
  about +110 MB of RSS per extra context for tiny.en q8_0 and +170 MB for base q8_0.
  ``EngineInfo.max_concurrency`` is the number of contexts. Measured against one context behind
  a lock (docs/ENGINES.md): the lock with all threads per call wins on quiet cores, but ggml's
  spinning threads collapse when other processes want the cores, while one thread per context
  holds up; so the engine follows the CPU plan it is given (the server's default on small
  machines is one thread per slot).
- **Cancellation** uses whisper.cpp's abort callback, which ggml polls while it computes the
  encoder graph, so a cancel stops a long file at the latest when the next 30 s window starts
  encoding (usually sooner than the next segment callback); ``CancelledError`` is raised once
  ``whisper_full`` returns. The same flag stops decoding when ``on_segment`` or
  ``progress`` raises: an exception must never unwind through the C++ frames.
- **Logs.** whisper.cpp and ggml log through ``whisper_log_set``, which is pointed at the
  logger ``stenod.engines.whisper_cpp.native`` (debug level), so nothing is written to the
  process's stdout/stderr and the server's JSON logs stay JSON. The hook is removed at interpreter exit: ggml may log during
  finalization, when a Python callback can no longer run.
- **No text carried between calls.** With ``no_context=false`` whisper.cpp keeps the decoded
  text of a call as the prompt of the *next* call on the same context, which would leak one
  request into another; see ``_forget_previous_text``.
- **VAD** reuses faster-whisper's Silero VAD (same model, same defaults) and maps times back, so
  both engines cut silence the same way. ``batch_size`` has no whisper.cpp equivalent and is
  ignored.
- **Segment fields** whisper.cpp does not report: ``no_speech_prob`` is 0, ``temperature`` is
  the first temperature of the schedule (the binding does not say which fallback step produced
  a segment), and ``seek`` is the segment's start in 10 ms frames.
"""

from __future__ import annotations

import atexit
import logging
import queue
import threading
import time
import zlib
from dataclasses import dataclass
from typing import Any

import _pywhispercpp as pw  # pywhispercpp's native module; an ImportError becomes the factory's message
import numpy as np

from stenod.audio import SAMPLE_RATE
from stenod.engines.base import (
    CancelledError,
    EngineConfig,
    EngineInfo,
    LanguageDetection,
    ProgressCallback,
    SegmentCallback,
    TranscriptionOptions,
    check_model_supports_or_raise,
)
from stenod.engines.vad import silero_vad_options
from stenod.errors import ModelLoadError, StenodError
from stenod.models.ggml import GgmlConversionError, GgmlFileInfo, validate_ggml_file
from stenod.transcript import Segment, Transcript, Word

logger = logging.getLogger(__name__)
_native_logger = logging.getLogger(__name__ + ".native")

ENGINE_NAME = "whisper.cpp"
CENTISECONDS_PER_S = 100.0
DETECT_WINDOW_S = 30.0
"""Language detection looks at the first 30 s, like Whisper and faster-whisper."""

_RESET_DURATION_MS = 100
_RESET_AUDIO = np.zeros(_RESET_DURATION_MS * SAMPLE_RATE // 1000, dtype=np.float32)
"""Exactly whisper.cpp's minimum input: whisper_full starts (and clears its text context) but encodes nothing."""

_log_hook_lock = threading.Lock()
_log_hook_installed = False


def _forward_native_log(level: int, text: str) -> None:
    # Runs inside whisper.cpp/ggml with the GIL taken by pybind11; must never raise. Everything
    # goes to debug: whisper.cpp logs "errors" on expected paths too (a cancelled call logs
    # "failed to encode"), and load failures are reported by the ModelLoadError instead.
    try:
        if _native_logger.isEnabledFor(logging.DEBUG):
            message = text.rstrip()
            if message:
                _native_logger.debug("[ggml level %d] %s", level, message)
    except Exception:
        pass


def _remove_log_hook() -> None:
    global _log_hook_installed
    with _log_hook_lock:
        if _log_hook_installed:
            pw.whisper_log_set(None)
            _log_hook_installed = False


def _install_log_hook() -> None:
    """Route whisper.cpp/ggml logs to Python logging (process-wide, done once on first load)."""
    global _log_hook_installed
    with _log_hook_lock:
        if _log_hook_installed:
            return
        pw.whisper_log_set(_forward_native_log)
        _log_hook_installed = True
    atexit.register(_remove_log_hook)


def validate_model_file_or_raise(path: str, *, name: str) -> GgmlFileInfo:
    """Check that whisper.cpp can load ``path`` without aborting the process.

    Raises:
        ModelLoadError: the file is missing, truncated, not a Whisper ggml file, or f32.
    """
    try:
        info = validate_ggml_file(path)
    except GgmlConversionError as exc:
        raise ModelLoadError(f"cannot load ggml model {name!r}: {exc}") from exc
    if info.weight_type == "f32":
        raise ModelLoadError(
            f"cannot load ggml model {name!r}: {path} stores f32 weights, which this whisper.cpp build "
            "(pywhispercpp 1.5.1) aborts on; convert to f16, q8_0 or q5_0 (stenod models convert SRC --to ggml)"
        )
    return info


@dataclass(slots=True)
class _CallState:
    """Per-call state shared with the native callbacks (which must not raise)."""

    cancel: threading.Event | None
    error: BaseException | None = None

    def should_abort(self) -> bool:
        return self.error is not None or (self.cancel is not None and self.cancel.is_set())


class WhisperCppEngine:
    """Args:
        config: resolved ggml model file and thread choices. ``config.concurrency`` whisper
            contexts are created, each with a full copy of the weights (see module docstring);
            ``config.threads`` is whisper.cpp's ``n_threads`` per call.

    Raises:
        ModelLoadError: the file fails validation, is f32, or whisper.cpp cannot load it.
    """

    def __init__(self, config: EngineConfig) -> None:
        self._config = config
        self._closed = False
        self._contexts: list[Any] = []
        self._pool: queue.SimpleQueue[Any] = queue.SimpleQueue()
        started = time.perf_counter()
        self._file = validate_model_file_or_raise(config.model_path, name=config.model_name)
        _install_log_hook()
        try:
            for _ in range(max(1, config.concurrency)):
                ctx = self._load_context()
                self._contexts.append(ctx)
                self._pool.put(ctx)
        except BaseException:
            self.close()
            raise
        first = self._contexts[0]
        self._multilingual = bool(pw.whisper_is_multilingual(first))
        self._eot = int(pw.whisper_token_eot(first))
        self.load_time_s = time.perf_counter() - started
        logger.info(
            "loaded %s (ggml %s) with %d whisper.cpp context(s) in %.2fs",
            config.model_name, self._file.weight_type, len(self._contexts), self.load_time_s,
        )

    def _load_context(self) -> Any:
        params = pw.whisper_context_default_params()
        params.use_gpu = self._config.device == "cuda"
        ctx = pw.whisper_init_from_file_with_params(self._config.model_path, params)
        if ctx is None:
            raise ModelLoadError(
                f"whisper.cpp could not load model {self._config.model_name!r} from {self._config.model_path}"
            )
        return ctx

    # -- protocol -----------------------------------------------------------------------------

    def info(self) -> EngineInfo:
        c = self._config
        return EngineInfo(
            engine=ENGINE_NAME,
            model=c.model_name,
            model_path=c.model_path,
            device=c.device,
            compute_type=self._file.weight_type,
            threads=c.threads,
            max_concurrency=len(self._contexts),
            multilingual=self._multilingual,
        )

    def transcribe(
        self,
        audio: np.ndarray,
        options: TranscriptionOptions,
        *,
        progress: ProgressCallback | None = None,
        on_segment: SegmentCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> Transcript:
        """Transcribe (or translate) 16 kHz mono float32 ``audio`` on one whisper context.

        Raises:
            UnsupportedParameterError: translation or a non-English language on an English-only model.
            CancelledError: ``cancel`` was set (polled by whisper.cpp's abort callback while encoding).
        """
        self._check_options(options)
        audio = np.ascontiguousarray(audio, dtype=np.float32)
        duration = len(audio) / SAMPLE_RATE
        speech_map: _SpeechMap | None = None
        if options.vad_enabled(duration) and len(audio):
            speech_map, audio = _apply_vad(audio, options)
        ctx = self._acquire()
        try:
            if cancel is not None and cancel.is_set():
                raise CancelledError("transcription cancelled")
            language, probability = self._language_for(ctx, audio, options)
            segments = (
                self._run(ctx, audio, options, language, duration, speech_map,
                          progress=progress, on_segment=on_segment, cancel=cancel)
                if len(audio) else []
            )
        finally:
            self._release(ctx)
        if progress is not None:
            progress(duration, duration)
        return Transcript.from_segments(
            segments,
            language=language,
            duration=duration,
            language_probability=probability,
            task=options.task,
        )

    def detect_language(self, audio: np.ndarray) -> LanguageDetection:
        """Whisper's language detection on the first 30 s (``whisper_lang_auto_detect``)."""
        if not self._multilingual:
            return LanguageDetection("en", 1.0, {"en": 1.0})
        audio = np.ascontiguousarray(audio, dtype=np.float32)
        ctx = self._acquire()
        try:
            return self._detect(ctx, audio)
        finally:
            self._release(ctx)

    def close(self) -> None:
        """Free every whisper context. Contexts in use by a running call are freed when it ends."""
        self._closed = True
        while True:
            try:
                ctx = self._pool.get_nowait()
            except queue.Empty:
                break
            pw.whisper_free(ctx)

    # -- internals ----------------------------------------------------------------------------

    def _acquire(self) -> Any:
        if self._closed:
            raise StenodError(f"whisper.cpp engine for {self._config.model_name!r} is closed")
        # Callers bound concurrency to max_concurrency, so this wait is short or none.
        return self._pool.get()

    def _release(self, ctx: Any) -> None:
        if self._closed:
            pw.whisper_free(ctx)
        else:
            self._pool.put(ctx)

    def _check_options(self, options: TranscriptionOptions) -> None:
        check_model_supports_or_raise(options, model_name=self._config.model_name, multilingual=self._multilingual)

    def _language_for(self, ctx: Any, audio: np.ndarray, options: TranscriptionOptions) -> tuple[str, float]:
        if not self._multilingual:
            return "en", 1.0
        if options.language is not None:
            return options.language, 1.0
        if len(audio) == 0:
            return "en", 0.0
        # Detecting here (rather than language="auto") costs the same encoder pass whisper.cpp
        # would run itself, and gives the probability that whisper_full does not report.
        detection = self._detect(ctx, audio)
        return detection.language, detection.probability

    def _detect(self, ctx: Any, audio: np.ndarray) -> LanguageDetection:
        window = audio[: int(DETECT_WINDOW_S * SAMPLE_RATE)]
        if len(window) == 0:
            return LanguageDetection("en", 0.0, {})
        threads = self._config.threads
        if pw.whisper_pcm_to_mel(ctx, window, len(window), threads) != 0:
            raise StenodError("whisper.cpp could not compute the mel spectrogram for language detection")
        probs = np.zeros(pw.whisper_lang_max_id() + 1, dtype=np.float32)
        top = pw.whisper_lang_auto_detect(ctx, 0, threads, probs)
        if top < 0:
            raise StenodError("whisper.cpp language detection failed")
        all_probs = {pw.whisper_lang_str(i): float(p) for i, p in enumerate(probs)}
        ranked = dict(sorted(all_probs.items(), key=lambda kv: kv[1], reverse=True))
        return LanguageDetection(pw.whisper_lang_str(top), float(probs[top]), ranked)

    def _params(self, options: TranscriptionOptions, language: str, state: _CallState) -> Any:
        beam = options.beam_size > 1
        strategy = pw.whisper_sampling_strategy
        params = pw.whisper_full_default_params(
            strategy.WHISPER_SAMPLING_BEAM_SEARCH if beam else strategy.WHISPER_SAMPLING_GREEDY
        )
        params.n_threads = self._config.threads
        params.print_progress = False
        params.print_realtime = False
        params.print_timestamps = False
        params.print_special = False
        params.language = language
        params.detect_language = False  # True would mean "detect and stop" in whisper.cpp
        params.translate = options.task == "translate"
        params.no_context = not options.condition_on_previous_text
        params.no_timestamps = options.without_timestamps
        params.token_timestamps = options.word_timestamps
        params.suppress_nst = True  # faster-whisper's default suppress_tokens=[-1]
        prompt = options.prompt_with_hotwords()  # whisper.cpp has no hotwords field
        if prompt:
            params.initial_prompt = prompt
        # whisper.cpp's fallback checks: token entropy (its form of the compression-ratio check),
        # average log-probability, and the no-speech probability. Disabled = a bound never crossed.
        if options.compression_ratio_threshold is None:
            params.entropy_thold = 0.0
        params.logprob_thold = -1e9 if options.log_prob_threshold is None else options.log_prob_threshold
        params.no_speech_thold = 2.0 if options.no_speech_threshold is None else options.no_speech_threshold
        temps = options.temperature or (0.0,)
        params.temperature = float(temps[0])
        params.temperature_inc = float(temps[1] - temps[0]) if len(temps) > 1 else 0.0
        params.greedy = {"best_of": max(options.beam_size, 1)}
        if beam:
            params.beam_search = {"beam_size": options.beam_size, "patience": -1.0}
        pw.assign_abort_callback(params, state.should_abort)
        return params

    def _run(
        self,
        ctx: Any,
        audio: np.ndarray,
        options: TranscriptionOptions,
        language: str,
        duration: float,
        speech_map: _SpeechMap | None,
        *,
        progress: ProgressCallback | None,
        on_segment: SegmentCallback | None,
        cancel: threading.Event | None,
    ) -> list[Segment]:
        state = _CallState(cancel)
        segments: list[Segment] = []
        temperature = float((options.temperature or (0.0,))[0])

        def collect(n_new: int) -> None:
            n = pw.whisper_full_n_segments(ctx)
            for i in range(n - n_new, n):
                segment = self._segment(ctx, i, len(segments), temperature, options.word_timestamps, speech_map)
                segments.append(segment)
                if on_segment is not None:
                    on_segment(segment)
                if progress is not None:
                    progress(min(segment.end, duration), duration)

        def on_new_segments(_ctx: Any, n_new: int, _user_data: Any = None) -> None:
            # Called by whisper_full on this thread; an exception must not unwind into C++.
            if state.error is not None:
                return
            try:
                collect(n_new)
            except BaseException as exc:
                state.error = exc

        params = self._params(options, language, state)
        pw.assign_new_segment_callback(params, on_new_segments)
        if not params.no_context:
            self._forget_previous_text(ctx)
        started = time.perf_counter()
        rc = pw.whisper_full(ctx, params, audio, audio.size)
        if state.error is not None:
            raise state.error
        if cancel is not None and cancel.is_set():
            raise CancelledError("transcription cancelled")
        if rc != 0:
            raise StenodError(f"whisper.cpp failed to transcribe (whisper_full returned {rc})")
        n_total = pw.whisper_full_n_segments(ctx)
        if n_total > len(segments):  # whisper.cpp reports every segment through the callback; be safe
            collect(n_total - len(segments))
        if logger.isEnabledFor(logging.DEBUG):
            elapsed = time.perf_counter() - started
            logger.debug("whisper.cpp: %.1f s audio in %.2f s (RTF %.3f)", duration, elapsed,
                         elapsed / duration if duration else 0.0)
        return segments

    def _forget_previous_text(self, ctx: Any) -> None:
        """Clear the text a context carries over from its previous call.

        With ``no_context=false`` whisper.cpp conditions each window on the text decoded so far,
        but it keeps that text (``state->prompt_past``) *across* ``whisper_full`` calls too, so one
        request's words would prime the next request on the same context (seen: a translation
        after a German transcription came out in German). ``whisper_full`` clears it when
        ``no_context`` is set, before its main loop; a call over exactly 100 ms passes the
        "input too short" check (>= 10 frames) and leaves the loop before encoding (< 10 frames
        left), so this costs a few milliseconds.
        """
        params = pw.whisper_full_default_params(pw.whisper_sampling_strategy.WHISPER_SAMPLING_GREEDY)
        params.no_context = True
        params.print_progress = False
        params.n_threads = 1
        params.duration_ms = _RESET_DURATION_MS  # else seek_end is the padded mel's length
        pw.whisper_full(ctx, params, _RESET_AUDIO, _RESET_AUDIO.size)

    def _segment(
        self,
        ctx: Any,
        i: int,
        index: int,
        temperature: float,
        word_timestamps: bool,
        speech_map: _SpeechMap | None,
    ) -> Segment:
        t0 = pw.whisper_full_get_segment_t0(ctx, i) / CENTISECONDS_PER_S
        t1 = pw.whisper_full_get_segment_t1(ctx, i) / CENTISECONDS_PER_S
        text = pw.whisper_full_get_segment_text(ctx, i).decode("utf-8", errors="replace")
        tokens: list[_Token] = []
        for j in range(pw.whisper_full_n_tokens(ctx, i)):
            data = pw.whisper_full_get_token_data(ctx, i, j)
            if data.id >= self._eot:  # timestamps, language, task and other special tokens
                continue
            tokens.append(_Token(data.id, pw.whisper_token_to_bytes(ctx, data.id), float(data.p),
                                 float(data.plog), data.t0 / CENTISECONDS_PER_S, data.t1 / CENTISECONDS_PER_S))
        words = _words(tokens, t0, t1) if word_timestamps else None
        if speech_map is not None:
            t0, t1, words = speech_map.restore(t0, t1, words)
        avg_logprob = float(np.mean([t.logprob for t in tokens])) if tokens else 0.0
        return Segment(
            id=index,
            seek=int(round(t0 * CENTISECONDS_PER_S)),
            start=round(t0, 3),
            end=round(t1, 3),
            text=text,
            tokens=tuple(t.id for t in tokens),
            temperature=temperature,
            avg_logprob=round(avg_logprob, 6),
            compression_ratio=_compression_ratio(text),
            no_speech_prob=0.0,
            words=words,
        )


@dataclass(frozen=True, slots=True)
class _Token:
    id: int
    text: bytes
    probability: float
    logprob: float
    start: float
    end: float


def _words(tokens: list[_Token], seg_start: float, seg_end: float) -> tuple[Word, ...]:
    """Merge text tokens into words (a token starting with a space starts a word, so punctuation
    joins the word before it, as in faster-whisper) and make times monotonic inside the segment.

    whisper.cpp's token timestamps (``token_timestamps``) are a heuristic on the timestamp-token
    probabilities; they can overlap or run backwards by a few centiseconds, hence the clamping.
    """
    groups: list[list[_Token]] = []
    for token in tokens:
        if groups and not token.text.startswith(b" "):
            groups[-1].append(token)
        else:
            groups.append([token])
    words: list[Word] = []
    previous_end = seg_start
    for group in groups:
        text = b"".join(t.text for t in group).decode("utf-8", errors="replace")
        if not text.strip():
            continue
        start = min(max(group[0].start, previous_end), seg_end)
        end = min(max(group[-1].end, start), seg_end)
        probability = float(np.mean([t.probability for t in group]))
        words.append(Word(start=round(start, 3), end=round(end, 3), word=text, probability=round(probability, 4)))
        previous_end = end
    return tuple(words)


def _compression_ratio(text: str) -> float:
    data = text.encode("utf-8")
    return round(len(data) / len(zlib.compress(data)), 4) if data else 0.0


class _SpeechMap:
    """Maps times in the VAD-cut audio back to the original file (faster-whisper's map)."""

    def __init__(self, chunks: list[dict[str, int]]) -> None:
        from faster_whisper.vad import SpeechTimestampsMap

        self._map = SpeechTimestampsMap(chunks, SAMPLE_RATE)

    def restore(
        self, start: float, end: float, words: tuple[Word, ...] | None
    ) -> tuple[float, float, tuple[Word, ...] | None]:
        if words:
            restored: list[Word] = []
            for w in words:
                chunk = self._map.get_chunk_index((w.start + w.end) / 2)
                restored.append(Word(
                    start=self._map.get_original_time(w.start, chunk),
                    end=self._map.get_original_time(w.end, chunk),
                    word=w.word,
                    probability=w.probability,
                ))
            return restored[0].start, max(restored[-1].end, restored[0].start), tuple(restored)
        return self._map.get_original_time(start), self._map.get_original_time(end, is_end=True), words


def _apply_vad(audio: np.ndarray, options: TranscriptionOptions) -> tuple[_SpeechMap | None, np.ndarray]:
    """Cut non-speech with faster-whisper's Silero VAD (threshold, silence and padding from ``options``)."""
    from faster_whisper.vad import collect_chunks, get_speech_timestamps

    chunks = get_speech_timestamps(audio, silero_vad_options(options))
    if not chunks:
        return None, np.zeros(0, dtype=np.float32)
    pieces, _ = collect_chunks(audio, chunks)
    return _SpeechMap(chunks), np.ascontiguousarray(np.concatenate(pieces), dtype=np.float32)


