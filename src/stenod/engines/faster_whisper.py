"""faster-whisper (CTranslate2) engine: CPU int8 by default, CUDA where CTranslate2's build matches.

One :class:`FasterWhisperEngine` holds one copy of the weights. CTranslate2 runs up to
``concurrency`` ``generate`` calls in parallel on those weights (its ``inter_threads``), each with
``threads`` intra-op threads, so N scheduler slots cost one model's memory, not N.
"""

from __future__ import annotations

import logging
import threading
import time

import numpy as np

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
from stenod.errors import ModelLoadError
from stenod.transcript import Segment, Transcript, Word

logger = logging.getLogger(__name__)

ENGINE_NAME = "faster-whisper"


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
        duration = len(audio) / 16_000
        # Segments are a lazy generator: all decoding happens in this loop, on the caller's thread.
        kwargs = dict(
            language=options.language if self._model.model.is_multilingual else "en",
            task=options.task,
            beam_size=options.beam_size,
            best_of=max(options.beam_size, 1),
            temperature=list(options.temperature),
            initial_prompt=options.initial_prompt or None,
            word_timestamps=options.word_timestamps,
            condition_on_previous_text=options.condition_on_previous_text,
            without_timestamps=options.without_timestamps,
            hotwords=options.hotwords or None,
            compression_ratio_threshold=options.compression_ratio_threshold,
            log_prob_threshold=options.log_prob_threshold,
            no_speech_threshold=options.no_speech_threshold,
            vad_parameters=silero_vad_options(options),
        )
        if options.batch_size > 1:
            from faster_whisper import BatchedInferencePipeline

            # A pipeline keeps per-call state (last_speech_timestamp): one per call, never shared.
            pipeline = BatchedInferencePipeline(self._model)
            segments_iter, info = pipeline.transcribe(audio, batch_size=options.batch_size, **kwargs)
        else:
            segments_iter, info = self._model.transcribe(audio, vad_filter=options.vad_enabled(duration), **kwargs)
        segments: list[Segment] = []
        if progress is not None:
            progress(0.0, duration)  # before the first window, so a progress bar shows at once
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

    def detect_language(self, audio: np.ndarray) -> LanguageDetection:
        if not self._model.model.is_multilingual:
            return LanguageDetection("en", 1.0, {"en": 1.0})
        language, probability, all_probs = self._model.detect_language(audio)
        return LanguageDetection(language, float(probability), {k: float(v) for k, v in all_probs})

    def close(self) -> None:
        model = getattr(self, "_model", None)
        if model is not None:
            model.model.unload_model()
            del self._model


def _convert_segment(index: int, seg: object) -> Segment:
    words = None
    if getattr(seg, "words", None) is not None:
        words = tuple(
            Word(
                start=round(float(w.start), 3),
                end=round(float(w.end), 3),
                word=w.word,
                probability=round(float(w.probability), 4),
            )
            for w in seg.words  # type: ignore[attr-defined]
        )
    return Segment(
        id=index,
        seek=int(seg.seek),  # type: ignore[attr-defined]
        start=round(float(seg.start), 3),  # type: ignore[attr-defined]
        end=round(float(seg.end), 3),  # type: ignore[attr-defined]
        text=seg.text,  # type: ignore[attr-defined]
        tokens=tuple(seg.tokens),  # type: ignore[attr-defined]
        temperature=float(seg.temperature or 0.0),  # type: ignore[attr-defined]
        avg_logprob=float(seg.avg_logprob),  # type: ignore[attr-defined]
        compression_ratio=float(seg.compression_ratio),  # type: ignore[attr-defined]
        no_speech_prob=float(seg.no_speech_prob),  # type: ignore[attr-defined]
        words=words,
    )
