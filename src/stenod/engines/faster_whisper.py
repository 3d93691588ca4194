"""faster-whisper (CTranslate2) engine: CPU int8 by default, CUDA where CTranslate2's build matches.

One :class:`FasterWhisperEngine` holds one copy of the weights. CTranslate2 runs up to
``concurrency`` ``generate`` calls in parallel on those weights (its ``inter_threads``), each with
``threads`` intra-op threads, so N scheduler slots cost one model's memory, not N.

Clips shorter than one 30 s window take a faster path (issue 10): the encoder runs on the audio
that exists plus a little padding instead of a full padded window (see
:mod:`stenod.engines.window_guard`), the language is detected from that same encoder output (the
ordinary path encodes the window twice when the language is not given), and the result goes
through the guard; a flagged result is decoded again the ordinary way. Segments, timestamps, words
and probabilities come out of faster-whisper's own ``generate_segments`` either way, so the
Transcript has the same shape. ``EngineConfig.trim_encoder=False`` turns the path off.
``EngineConfig.parallel_windows`` decodes long audio as VAD windows in parallel; off by default
because on 2 cores it measured slower per CPU second than the sequential path.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

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
from stenod.engines.batching import WindowBatcher
from stenod.engines.vad import silero_vad_options
from stenod.engines.window_guard import DEFAULT_TRIM_POLICY, TrimPolicy, clamped_to_audio, trimmed_decode_problem
from stenod.engines.windows import Span, group_speech
from stenod.errors import ModelLoadError
from stenod.transcript import Segment, Transcript, Word

if TYPE_CHECKING:  # the import loads CTranslate2 (slow); only the type is needed here
    from faster_whisper.transcribe import Segment as FwSegment

logger = logging.getLogger(__name__)

ENGINE_NAME = "faster-whisper"
HOP_LENGTH = 160
"""Samples per mel frame (10 ms)."""
LANGUAGE_DETECTION_THRESHOLD = 0.5
"""faster-whisper's own: below it, detection is redone on the full window."""
MAX_WINDOW_S = 28.0
"""Longest window cut from long audio: below 30 s so the padding still fits in one encoder pass."""


@dataclasses.dataclass(frozen=True, slots=True)
class _WindowResult:
    segments: list[Segment]
    language: str
    language_probability: float
    resume_frame: int | None = None
    """Where a batched decode stopped before the end of its audio (mel frame); ``None``: it did not."""

    def shifted(self, offset_s: float) -> _WindowResult:
        """The same result with times moved ``offset_s`` later (a window's place in its file)."""
        if offset_s == 0:
            return self
        frames = int(round(offset_s * 100))
        segments = [
            dataclasses.replace(
                seg,
                seek=seg.seek + frames,
                start=round(seg.start + offset_s, 3),
                end=round(seg.end + offset_s, 3),
                words=None if seg.words is None else tuple(
                    dataclasses.replace(w, start=round(w.start + offset_s, 3), end=round(w.end + offset_s, 3))
                    for w in seg.words
                ),
            )
            for seg in self.segments
        ]
        return _WindowResult(segments, self.language, self.language_probability)


@dataclasses.dataclass(slots=True)
class FastPathStats:
    """How often the trimmed-encoder path was taken and how often its guard sent a clip back.

    Counters only ever grow; read them for benchmarks and logs (not thread-exact, never used for
    decisions)."""

    trimmed: int = 0
    batched: int = 0
    """Trimmed decodes settled in a batch (a subset of ``trimmed``)."""
    retried: int = 0
    """Runaway trimmed decodes tried once more with more padding (``TrimPolicy.retry_pad_frames``)."""
    fallbacks: int = 0
    """Trimmed decodes the guard sent to the full window (after the retry, where there was one)."""
    full_window: int = 0


@dataclasses.dataclass(frozen=True, slots=True)
class _BatchItem:
    """One short clip waiting for a batched decode: its mel features and what to decode it with."""

    features: np.ndarray
    content_frames: int
    language: str | None
    """Known language, or ``None`` to detect it from the batch's encoder output."""
    task: str
    fw_options: Any
    """faster-whisper's TranscriptionOptions (one temperature); equal for every item of a batch."""


class FasterWhisperEngine:
    """Args:
        config: resolved model and device/thread choices.

    Raises:
        ModelLoadError: CTranslate2 could not load the weights (corrupt folder, bad device).
    """

    def __init__(self, config: EngineConfig) -> None:
        from faster_whisper import WhisperModel  # CTranslate2 import is slow; keep it off CLI start-up

        self._config = config
        started = time.perf_counter()
        try:
            self._model = WhisperModel(
                config.model_path,
                device=config.device,
                compute_type=config.compute_type,
                cpu_threads=config.threads,
                num_workers=config.concurrency,
                local_files_only=True,
            )
        except (RuntimeError, ValueError, OSError) as exc:
            raise ModelLoadError(f"could not load model {config.model_name!r} from {config.model_path}: {exc}") from exc
        self.load_time_s = time.perf_counter() - started
        self.trim_policy: TrimPolicy | None = DEFAULT_TRIM_POLICY if config.trim_encoder else None
        self.fast_path_stats = FastPathStats()
        # Windows of long files, from every caller: as many at once as CTranslate2 has workers.
        self._window_pool = ThreadPoolExecutor(max_workers=max(1, config.concurrency), thread_name_prefix="stenod-window")
        # Short clips from every caller, decoded in batches on as many runners as CTranslate2 has
        # workers; without batching (batch_size 1) each caller decodes its own clip.
        self._batcher: WindowBatcher[_BatchItem, _WindowResult | None] | None = None
        if config.trim_encoder and config.batch_size > 1:
            self._batcher = WindowBatcher(
                self._decode_batch, max_batch=config.batch_size, max_wait_s=config.batch_wait_ms / 1000,
                workers=max(1, config.concurrency),
            )
        logger.info(
            "loaded %s on %s/%s in %.2fs", config.model_name, config.device, config.compute_type, self.load_time_s
        )

    def info(self) -> EngineInfo:
        c = self._config
        return EngineInfo(
            engine=ENGINE_NAME,
            model=c.model_name,
            model_path=c.model_path,
            device=c.device,
            compute_type=c.compute_type,
            threads=c.threads,
            max_concurrency=c.concurrency,
            multilingual=self._model.model.is_multilingual,
            max_batch=self._batcher.max_batch if self._batcher is not None else 1,
        )

    def _check_options(self, options: TranscriptionOptions) -> None:
        check_model_supports_or_raise(options, model_name=self._config.model_name, multilingual=self._model.model.is_multilingual)

    def transcribe(
        self,
        audio: np.ndarray,
        options: TranscriptionOptions,
        *,
        progress: ProgressCallback | None = None,
        on_segment: SegmentCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> Transcript:
        self._check_options(options)
        duration = len(audio) / SAMPLE_RATE
        kwargs = self._decode_kwargs(options)
        if progress is not None:
            progress(0.0, duration)  # before the first window, so a progress bar shows at once
        policy = self.trim_policy
        if policy is not None and options.batch_size <= 1:
            if options.vad_enabled(duration) and self._config.parallel_windows:
                return self._transcribe_windows(
                    audio, options, kwargs, policy, progress=progress, on_segment=on_segment, cancel=cancel
                )
            if not options.vad_enabled(duration) and policy.pays(len(audio) // HOP_LENGTH):
                result = self._decode_window(audio, options, kwargs, policy, language=None)
                return self._emit(result, duration, options, progress=progress, on_segment=on_segment, cancel=cancel)
        return self._transcribe_sequential(
            audio, options, kwargs, progress=progress, on_segment=on_segment, cancel=cancel
        )

    def _decode_kwargs(self, options: TranscriptionOptions) -> dict[str, Any]:
        """``WhisperModel.transcribe`` keyword arguments for ``options``."""
        return {
            "language": options.language if self._model.model.is_multilingual else "en",
            "task": options.task,
            "beam_size": options.beam_size,
            "best_of": max(options.beam_size, 1),
            "temperature": list(options.temperature),
            "initial_prompt": options.initial_prompt or None,
            "word_timestamps": options.word_timestamps,
            "condition_on_previous_text": options.condition_on_previous_text,
            "without_timestamps": options.without_timestamps,
            "hotwords": options.hotwords or None,
            "compression_ratio_threshold": options.compression_ratio_threshold,
            "log_prob_threshold": options.log_prob_threshold,
            "no_speech_threshold": options.no_speech_threshold,
            "max_new_tokens": options.max_new_tokens,
            "vad_parameters": silero_vad_options(options),
        }

    def _transcribe_sequential(
        self,
        audio: np.ndarray,
        options: TranscriptionOptions,
        kwargs: dict[str, Any],
        *,
        progress: ProgressCallback | None,
        on_segment: SegmentCallback | None,
        cancel: threading.Event | None,
    ) -> Transcript:
        """faster-whisper's own path: full 30 s windows one after another (or its batched pipeline)."""
        duration = len(audio) / SAMPLE_RATE
        self.fast_path_stats.full_window += 1
        if options.batch_size > 1:
            from faster_whisper import BatchedInferencePipeline

            # A pipeline keeps per-call state (last_speech_timestamp): one per call, never shared.
            pipeline = BatchedInferencePipeline(self._model)
            segments_iter, info = pipeline.transcribe(audio, batch_size=options.batch_size, **kwargs)
        else:
            segments_iter, info = self._model.transcribe(audio, vad_filter=options.vad_enabled(duration), **kwargs)
        # Segments are a lazy generator: all decoding happens in this loop, on the caller's thread.
        segments: list[Segment] = []
        for seg in segments_iter:
            if cancel is not None and cancel.is_set():
                raise CancelledError("transcription cancelled")
            segment = _convert_segment(len(segments), seg)
            segments.append(segment)
            if on_segment is not None:
                on_segment(segment)
            if progress is not None:
                progress(min(seg.end, duration), duration)
        if progress is not None:
            progress(duration, duration)
        return Transcript.from_segments(
            segments,
            language=info.language,
            duration=duration,
            language_probability=float(info.language_probability),
            task=options.task,
        )

    def _decode_window(
        self,
        audio: np.ndarray,
        options: TranscriptionOptions,
        kwargs: dict[str, Any],
        policy: TrimPolicy,
        *,
        language: str | None,
    ) -> _WindowResult:
        """Decode audio of at most one window with the encoder trimmed to it; when the guard rejects
        the result, decode it again on the full window with the whole temperature schedule.

        ``language`` (already detected for the file) overrides ``options.language``; with neither,
        the language is detected from the trimmed encoder output. Times are relative to ``audio``.
        """
        model = self._model
        features = model.feature_extractor(audio)
        content_frames = features.shape[-1] - 1
        duration = len(audio) / SAMPLE_RATE
        guard = _guard_for(policy, options)
        known = language or kwargs["language"]
        result: _WindowResult | None = None
        if self._batcher is not None and not options.word_timestamps:
            result = self._decode_batched(features, content_frames, options, kwargs, language=language)
            if result is not None and result.resume_frame is not None:
                result = self._resumed(audio, result, options, kwargs, policy)
        if result is None:
            self.fast_path_stats.trimmed += 1
            result = self._decode_trimmed(features, content_frames, options, kwargs, policy, language=known)
        problem = trimmed_decode_problem(result.segments, duration_s=duration, policy=guard)
        retry = policy.for_retry(content_frames) if problem is not None and problem.runaway else None
        if retry is not None:
            # A runaway decode, tried once more with the end of the speech well inside its input
            # (alone: a batch would pad it to its mates, not by the retry's rule).
            logger.debug("trimmed-encoder result rejected (%s); decoding it again with more padding", problem)
            self.fast_path_stats.retried += 1
            result = self._decode_trimmed(features, content_frames, options, kwargs, retry, language=known or result.language)
            problem = trimmed_decode_problem(result.segments, duration_s=duration, policy=guard)
        if problem is None:
            return _WindowResult(clamped_to_audio(result.segments, duration), result.language, result.language_probability)
        logger.debug("trimmed-encoder result rejected (%s); decoding the full window", problem)
        return self._full_window(audio, kwargs, known)

    def _decode_trimmed(
        self,
        features: np.ndarray,
        content_frames: int,
        options: TranscriptionOptions,
        kwargs: dict[str, Any],
        policy: TrimPolicy,
        *,
        language: str | None,
    ) -> _WindowResult:
        """One clip's decode with the encoder trimmed to its audio (unguarded: the caller judges)."""
        from faster_whisper.tokenizer import Tokenizer

        model = self._model
        frames = policy.encoder_frames(content_frames)
        window = np.zeros((features.shape[0], frames), dtype=features.dtype)
        kept = min(content_frames, frames)
        window[:, :kept] = features[:, :kept]  # what pad_or_trim does, to a shorter length
        encoder_output = model.encode(window)
        detected = (language, 1.0) if language else self._detect_from(encoder_output, features)
        fw_options = self._trimmed_options(kwargs, detected[0], policy, content_frames)
        tokenizer = Tokenizer(model.hf_tokenizer, model.model.is_multilingual, task=options.task, language=detected[0])
        # A window whose text stops at a timestamp before its audio ends is continued from there.
        # faster-whisper encodes that rest as a full 30 s window; the trimmed encoder does it on
        # the rest's own length. On 50 LibriSpeech clips 13 of 51 trimmed decodes continued, most
        # of them on a tail under 2 s that holds no words, and a full window for that cost more
        # than the clip's own decode; trimmed, the whole set took 1.25x less CPU at a WER of
        # 5.94 % against 7.22 % (docs/BENCHMARKS.md, issue 10).
        generated = type(model).generate_segments(
            _TrimmedEncoder(model, policy), features, tokenizer, fw_options, False, encoder_output
        )
        segments = [_convert_segment(i, seg) for i, seg in enumerate(generated)]
        return _WindowResult(segments, detected[0], detected[1])

    def _trimmed_options(self, kwargs: dict[str, Any], language: str, policy: TrimPolicy, content_frames: int) -> Any:
        """faster-whisper's options for a trimmed decode: one temperature (a result that would need
        the fallback schedule is redone on the full window, where the whole schedule runs as on the
        ordinary path) and a token budget for the clip's length (:meth:`TrimPolicy.token_budget`),
        so a loop stops early instead of running to Whisper's 224 tokens."""
        fw_options = self._faster_whisper_options(kwargs, language)
        budget = policy.token_budget(content_frames / 100, fw_options.max_new_tokens)
        return dataclasses.replace(fw_options, temperatures=[fw_options.temperatures[0]], max_new_tokens=budget)

    def _resumed(
        self,
        audio: np.ndarray,
        head: _WindowResult,
        options: TranscriptionOptions,
        kwargs: dict[str, Any],
        policy: TrimPolicy,
    ) -> _WindowResult:
        """A batched decode that stopped at a timestamp before the end of its audio, continued from
        there the way ``generate_segments`` continues a window (trimmed encoder, the text so far as
        the prompt when conditioning on previous text), instead of decoding the clip again alone."""
        assert head.resume_frame is not None
        rest = audio[head.resume_frame * HOP_LENGTH :]
        rest_kwargs = kwargs
        if options.condition_on_previous_text:
            previous = " ".join(t for t in (kwargs.get("initial_prompt") or "", *(seg.text.strip() for seg in head.segments)) if t)
            rest_kwargs = {**kwargs, "initial_prompt": previous or None}
        features = self._model.feature_extractor(rest)
        tail = self._decode_trimmed(features, features.shape[-1] - 1, options, rest_kwargs, policy, language=head.language)
        shifted = tail.shifted(head.resume_frame / 100)
        segments = [*head.segments, *(dataclasses.replace(seg, id=len(head.segments) + i) for i, seg in enumerate(shifted.segments))]
        return _WindowResult(segments, head.language, head.language_probability)

    def _full_window(self, audio: np.ndarray, kwargs: dict[str, Any], language: str | None) -> _WindowResult:
        """The ordinary decode (full 30 s window, whole temperature schedule) of a clip whose
        trimmed decode the guard rejected. Without a known language it is detected again on the
        full window, as today."""
        self.fast_path_stats.fallbacks += 1
        segments_iter, info = self._model.transcribe(audio, vad_filter=False, **{**kwargs, "language": language})
        segments = [_convert_segment(i, seg) for i, seg in enumerate(segments_iter)]
        return _WindowResult(segments, info.language, float(info.language_probability))

    def _decode_batched(
        self,
        features: np.ndarray,
        content_frames: int,
        options: TranscriptionOptions,
        kwargs: dict[str, Any],
        *,
        language: str | None,
    ) -> _WindowResult | None:
        """The clip's trimmed decode as part of a batch with other callers' clips (same decode
        options), or ``None`` where the batch could not settle it alone (unsure language, a
        no-speech window): the caller then takes the one-clip path, which handles those cases as
        before. A decode that stopped before the end of its audio comes back with ``resume_frame``
        set, for the caller to continue."""
        assert self._batcher is not None
        known = language or kwargs["language"]
        fw_options = self._faster_whisper_options(kwargs, known or "en")
        fw_options = dataclasses.replace(fw_options, temperatures=[fw_options.temperatures[0]])
        if fw_options.hallucination_silence_threshold is not None:
            return None  # needs word timings, which the batch does not compute
        # The token cap is per clip (a long file's windows each get one for their length), not
        # part of the key: windows of different lengths share a batch, each held to its own cap.
        key = (known, options.task, repr(dataclasses.replace(fw_options, max_new_tokens=None)))
        item = _BatchItem(features, content_frames, known, options.task, fw_options)
        return self._batcher.submit(key, content_frames, item, group=options.group)

    def _decode_batch(self, items: Sequence[_BatchItem]) -> list[_WindowResult | None]:
        """One encoder pass and one ``generate`` for clips with equal decode options: the encoder
        input is as long as the longest clip needs (:meth:`TrimPolicy.encoder_frames`), shorter
        clips are padded with silence as the full window pads them. Segments are split from the
        timestamp tokens the way faster-whisper's ``generate_segments`` splits them."""
        from faster_whisper.tokenizer import Tokenizer
        from faster_whisper.transcribe import get_compression_ratio

        model = self._model
        policy = self.trim_policy or DEFAULT_TRIM_POLICY
        first = items[0]
        fw = first.fw_options
        # The most any clip of the batch needs (a short clip's floor can exceed a longer clip's need).
        frames = max(policy.encoder_frames(item.content_frames) for item in items)
        batch = np.zeros((len(items), first.features.shape[0], frames), dtype=first.features.dtype)
        for i, item in enumerate(items):
            kept = min(item.content_frames, frames)
            batch[i, :, :kept] = item.features[:, :kept]
        encoder_output = model.encode(batch)
        multilingual = model.model.is_multilingual
        tokenizer = Tokenizer(model.hf_tokenizer, multilingual, task=first.task, language=first.language or "en")
        previous = tokenizer.encode(" " + fw.initial_prompt.strip()) if isinstance(fw.initial_prompt, str) else []
        prompt = model.get_prompt(
            tokenizer, previous, without_timestamps=fw.without_timestamps, prefix=fw.prefix, hotwords=fw.hotwords
        )
        prompts = [list(prompt) for _ in items]
        languages: list[tuple[str, float] | None] = [(first.language, 1.0)] * len(items) if first.language else []
        if not first.language:
            slot = prompt.index(tokenizer.language)
            for i, detected in enumerate(model.model.detect_language(encoder_output)):
                token, probability = detected[0]
                # An unsure detection is redone by the one-clip path (on the full window).
                languages.append((token[2:-2], float(probability)) if probability >= LANGUAGE_DETECTION_THRESHOLD else None)
                prompts[i][slot] = tokenizer.tokenizer.token_to_id(token)
        temperature = fw.temperatures[0]
        sampling = (
            {"beam_size": 1, "num_hypotheses": fw.best_of, "sampling_topk": 0, "sampling_temperature": temperature}
            if temperature > 0
            else {"beam_size": fw.beam_size, "patience": fw.patience}
        )
        # One generate call has one length limit: the largest clip's budget
        # (TrimPolicy.token_budget, within its caller's cap). Each clip's tokens are cut to its
        # own budget below, where it would have stopped decoded alone (a sequence's greedy tokens
        # do not depend on its batch mates).
        budgets = [policy.token_budget(item.content_frames / 100, item.fw_options.max_new_tokens) for item in items]
        max_length = len(prompt) + max(budgets)
        results = model.model.generate(
            encoder_output, prompts, length_penalty=fw.length_penalty, repetition_penalty=fw.repetition_penalty,
            no_repeat_ngram_size=fw.no_repeat_ngram_size, max_length=max_length, return_scores=True,
            return_no_speech_prob=True, suppress_blank=fw.suppress_blank, suppress_tokens=fw.suppress_tokens,
            max_initial_timestamp_index=int(round(fw.max_initial_timestamp / model.time_precision)), **sampling,
        )
        out: list[_WindowResult | None] = []
        for item, budget, detected, result in zip(items, budgets, languages, results, strict=True):
            tokens = result.sequences_ids[0][:budget]
            avg_logprob = result.scores[0] * (len(tokens) ** fw.length_penalty) / (len(tokens) + 1)
            silent = fw.no_speech_threshold is not None and result.no_speech_prob > fw.no_speech_threshold and not (
                fw.log_prob_threshold is not None and avg_logprob > fw.log_prob_threshold
            )
            pieces, seek, _ = model._split_segments_by_timestamps(
                tokenizer=tokenizer, tokens=tokens, time_offset=0.0, segment_size=item.content_frames,
                segment_duration=item.content_frames / 100, seek=0,
            )
            if detected is None or silent or seek <= 0:
                out.append(None)
                continue
            compression_ratio = get_compression_ratio(tokenizer.decode(tokens).strip())
            segments: list[Segment] = []
            for piece in pieces:
                text = tokenizer.decode(piece["tokens"])
                if piece["start"] == piece["end"] or not text.strip():
                    continue
                segments.append(Segment(
                    id=len(segments), seek=0, start=round(float(piece["start"]), 3), end=round(float(piece["end"]), 3),
                    text=text, tokens=tuple(piece["tokens"]), temperature=float(temperature),
                    avg_logprob=float(avg_logprob), compression_ratio=float(compression_ratio),
                    no_speech_prob=float(result.no_speech_prob), words=None,
                ))
            self.fast_path_stats.trimmed += 1
            self.fast_path_stats.batched += 1
            # Stopped at a timestamp before the end of the audio: the caller continues from there.
            rest = item.content_frames - seek
            resume = seek if policy.resumes(tokens, timestamp_begin=tokenizer.timestamp_begin, rest_frames=rest) else None
            out.append(_WindowResult(segments, detected[0], detected[1], resume_frame=resume))
        return out

    def _transcribe_windows(
        self,
        audio: np.ndarray,
        options: TranscriptionOptions,
        kwargs: dict[str, Any],
        policy: TrimPolicy,
        *,
        progress: ProgressCallback | None,
        on_segment: SegmentCallback | None,
        cancel: threading.Event | None,
    ) -> Transcript:
        """Long audio: VAD speech grouped into windows cut at pauses (:mod:`stenod.engines.windows`),
        each decoded on its own by :meth:`_decode_window`, up to ``concurrency`` at once on the
        shared window pool, so one long file uses every CTranslate2 worker. The first window runs
        alone when the language must be detected; the others then use its language."""
        from faster_whisper.vad import get_speech_timestamps

        duration = len(audio) / SAMPLE_RATE
        # The caller's VAD settings; spans longer than a window are split at their last short pause.
        vad = dataclasses.replace(silero_vad_options(options), max_speech_duration_s=MAX_WINDOW_S)
        speech = [
            Span(chunk["start"] / SAMPLE_RATE, chunk["end"] / SAMPLE_RATE)
            for chunk in get_speech_timestamps(audio, vad)
        ]
        spans = group_speech(speech, max_window_s=MAX_WINDOW_S)

        def decode(span: Span, language: str | None) -> _WindowResult:
            if cancel is not None and cancel.is_set():
                raise CancelledError("transcription cancelled")
            piece = audio[int(span.start * SAMPLE_RATE) : int(span.end * SAMPLE_RATE)]
            return self._decode_window(piece, options, kwargs, policy, language=language).shifted(span.start)

        language: str | None = kwargs["language"]
        probability = 1.0
        results: list[Future[_WindowResult]] = []
        if spans and language is None:
            first = decode(spans[0], None)
            language, probability = first.language, first.language_probability
            done: Future[_WindowResult] = Future()
            done.set_result(first)
            results.append(done)
        results += [self._window_pool.submit(decode, span, language) for span in spans[len(results) :]]
        segments: list[Segment] = []
        try:
            for span, future in zip(spans, results, strict=True):
                for seg in future.result().segments:
                    segment = dataclasses.replace(seg, id=len(segments))
                    segments.append(segment)
                    if on_segment is not None:
                        on_segment(segment)
                if progress is not None:
                    progress(span.end, duration)
        finally:
            for future in results:
                future.cancel()  # after a cancel or an error, windows not yet started never run
        if progress is not None:
            progress(duration, duration)
        return Transcript.from_segments(
            segments,
            language=language or "en",
            duration=duration,
            language_probability=probability,
            task=options.task,
        )

    def _detect_from(self, encoder_output: object, features: np.ndarray) -> tuple[str, float]:
        """The language detected from a trimmed encoder output; an unsure detection is redone the
        ordinary way (first full window)."""
        token, probability = self._model.model.detect_language(encoder_output)[0][0]
        if probability >= LANGUAGE_DETECTION_THRESHOLD:
            return token[2:-2], float(probability)
        language, probability, _ = self._model.detect_language(features=features)
        return language, float(probability)

    def _faster_whisper_options(self, kwargs: dict[str, Any], language: str) -> Any:
        """faster-whisper's own option object for ``kwargs``, built by its ``transcribe`` on 0.1 s of
        silence (lazy: nothing is decoded), so every field keeps the library's defaults."""
        probe = np.zeros(SAMPLE_RATE // 10, dtype=np.float32)
        _, info = self._model.transcribe(probe, **{**kwargs, "language": language})
        return info.transcription_options

    def _emit(
        self,
        result: _WindowResult,
        duration: float,
        options: TranscriptionOptions,
        *,
        progress: ProgressCallback | None,
        on_segment: SegmentCallback | None,
        cancel: threading.Event | None,
    ) -> Transcript:
        for segment in result.segments:
            if cancel is not None and cancel.is_set():
                raise CancelledError("transcription cancelled")
            if on_segment is not None:
                on_segment(segment)
            if progress is not None:
                progress(min(segment.end, duration), duration)
        if progress is not None:
            progress(duration, duration)
        return Transcript.from_segments(
            result.segments,
            language=result.language,
            duration=duration,
            language_probability=result.language_probability,
            task=options.task,
        )

    def detect_language(self, audio: np.ndarray) -> LanguageDetection:
        if not self._model.model.is_multilingual:
            return LanguageDetection("en", 1.0, {"en": 1.0})
        language, probability, all_probs = self._model.detect_language(audio)
        return LanguageDetection(language, float(probability), {k: float(v) for k, v in all_probs})

    def close(self) -> None:
        batcher = getattr(self, "_batcher", None)
        if batcher is not None:
            batcher.close()
        pool = getattr(self, "_window_pool", None)
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        model = getattr(self, "_model", None)
        if model is not None:
            model.model.unload_model()
            del self._model


class _TrimmedEncoder:
    """The model as ``WhisperModel.generate_segments`` sees it, except that ``encode`` cuts the
    zero padding ``pad_or_trim`` added to a window down to :meth:`TrimPolicy.encoder_frames`
    (log-mel frames of real audio, silence included, are never all exactly zero). Per call, so
    other threads using the model are untouched."""

    def __init__(self, model: Any, policy: TrimPolicy) -> None:
        self._model = model
        self._policy = policy

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def _split_segments_by_timestamps(
        self, *, tokenizer: Any, tokens: list[int], time_offset: float, segment_size: int,
        segment_duration: float, seek: int,
    ) -> tuple[list[dict[str, Any]], int, bool]:
        """faster-whisper's split, except that a window whose segments are all closed is not
        continued on a rest shorter than :attr:`TrimPolicy.min_resume_frames` (reported as a
        single-timestamp ending: the window is done)."""
        segments, next_seek, single = self._model._split_segments_by_timestamps(
            tokenizer=tokenizer, tokens=tokens, time_offset=time_offset, segment_size=segment_size,
            segment_duration=segment_duration, seek=seek,
        )
        end = seek + segment_size
        if next_seek < end and not self._policy.resumes(
            tokens, timestamp_begin=tokenizer.timestamp_begin, rest_frames=end - next_seek
        ):
            return segments, end, True
        return segments, next_seek, single

    def encode(self, features: np.ndarray) -> Any:
        columns = np.flatnonzero(np.any(features != 0, axis=0))
        content = int(columns[-1]) + 1 if len(columns) else 0
        frames = self._policy.encoder_frames(content)
        return self._model.encode(np.ascontiguousarray(features[:, :frames]) if frames < features.shape[-1] else features)


def _guard_for(policy: TrimPolicy, options: TranscriptionOptions) -> TrimPolicy:
    """The guard with the caller's failure thresholds where set (a stricter threshold sends more
    clips to the full window, as it sends more windows to the temperature fallback on the ordinary
    path); a threshold turned off keeps the guard's default, which protects the trimmed decode."""
    return dataclasses.replace(
        policy,
        compression_ratio_threshold=(
            policy.compression_ratio_threshold
            if options.compression_ratio_threshold is None
            else options.compression_ratio_threshold
        ),
        log_prob_threshold=policy.log_prob_threshold if options.log_prob_threshold is None else options.log_prob_threshold,
        no_speech_threshold=(
            policy.no_speech_threshold if options.no_speech_threshold is None else options.no_speech_threshold
        ),
    )


def _convert_segment(index: int, seg: FwSegment) -> Segment:
    words = None
    if seg.words is not None:
        words = tuple(
            Word(
                start=round(float(w.start), 3),
                end=round(float(w.end), 3),
                word=w.word,
                probability=round(float(w.probability), 4),
            )
            for w in seg.words
        )
    return Segment(
        id=index,
        seek=int(seg.seek),
        start=round(float(seg.start), 3),
        end=round(float(seg.end), 3),
        text=seg.text,
        tokens=tuple(seg.tokens),
        temperature=float(seg.temperature or 0.0),
        avg_logprob=float(seg.avg_logprob),
        compression_ratio=float(seg.compression_ratio),
        no_speech_prob=float(seg.no_speech_prob),
        words=words,
    )
