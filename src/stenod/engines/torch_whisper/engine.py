"""The ``torch`` engine: Whisper in PyTorch on CUDA (fp16 or bf16) or the CPU (float32).

One instance holds one copy of the weights per device and one :class:`WindowBatcher` per device.
A call cuts its audio into 30 s windows and submits them; windows of every concurrent call are
decoded together, so throughput grows with load instead of with slots. Long audio is decoded as
independent windows in parallel (cut at the quietest point near each 30 s boundary, or at
voice-activity boundaries when VAD is on); ``batch_size=1`` asks for Whisper's sequential
algorithm instead (each window conditioned on the previous text, seeking to the last timestamp).
"""

from __future__ import annotations

import logging
import threading
import time
import zlib
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

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
from stenod.engines.torch_whisper.audio import (
    FRAMES_PER_SECOND,
    INPUT_STRIDE,
    N_FRAMES,
    SAMPLE_RATE,
    log_mel_spectrogram,
    window_mel,
)
from stenod.engines.torch_whisper.batcher import WindowBatcher
from stenod.engines.torch_whisper.decoding import WindowDecoder, WindowResult, WindowTask
from stenod.engines.torch_whisper.devices import parse_devices_or_raise, torch_dtype
from stenod.engines.torch_whisper.model import ModelDimensions, Whisper, disable_cudnn_attention
from stenod.engines.torch_whisper.tokens import TIME_PRECISION_S, WhisperTokenizer
from stenod.engines.torch_whisper.weights import (
    dims_from_state_dict,
    find_tokenizer_json,
    model_metadata,
    read_state_dict,
)
from stenod.errors import ModelLoadError
from stenod.transcript import Segment, Transcript

logger = logging.getLogger(__name__)

ENGINE_NAME = "torch"
MIN_CUT_S = 20.0
"""Parallel long-form windows are cut at the quietest 0.2 s between 20 and 30 s into the window."""
DEFAULT_MAX_ROWS = {"cuda": 128, "cpu": 8}
"""Most decoder rows per batch: on a GPU large batches are nearly free; on a CPU they barely pay."""


@dataclass(frozen=True, slots=True)
class _Window:
    start: int
    """First mel frame (100 per second) of the window in the file."""
    frames: int
    """Mel frames of content (at most 3000)."""


@dataclass(slots=True)
class _Device:
    name: str
    model: Whisper
    decoder: WindowDecoder
    batcher: WindowBatcher


class TorchWhisperEngine:
    """Args:
        config: resolved model; ``device`` is ``cpu``, ``cuda``, ``cuda:N``, a comma list of
            CUDA devices, or ``all``; ``compute_type`` ``float16``, ``bfloat16`` or ``float32``.
        max_rows: decoder rows per batch (0 chooses per device type).
        static_decoding: greedy batches decode on fixed buffers, replayed as CUDA graphs on a
            GPU (``static_greedy.py``); ``None`` turns it on for CUDA devices only.

    Raises:
        ModelLoadError: unreadable weights or tokenizer.
        UnsupportedParameterError: a CUDA device was asked for and none is usable.
    """

    def __init__(
        self, config: EngineConfig, *, max_rows: int = 0, max_wait_s: float = 0.010, static_decoding: bool | None = None
    ) -> None:
        self._config = config
        started = time.perf_counter()
        devices = parse_devices_or_raise(config.device)
        dtype = torch_dtype(config.compute_type, devices[0])
        path = Path(config.model_path)
        state = read_state_dict(path)
        dims = dims_from_state_dict(state)
        multilingual = dims.n_vocab >= 51865
        self._tokenizer = WhisperTokenizer(find_tokenizer_json(path, multilingual=multilingual), multilingual=multilingual)
        meta = model_metadata(path)
        suppress = [int(t) for t in meta.get("suppress_ids", [])] or [-1]
        heads = [(int(a), int(b)) for a, b in meta.get("alignment_heads", [])]
        if not heads:  # openai-whisper's default: every head of the upper half of the decoder
            heads = [(layer, head) for layer in range(dims.n_text_layer // 2, dims.n_text_layer) for head in range(dims.n_text_head)]
        self.alignment_heads = heads
        self.dims = dims
        self._devices: list[_Device] = []
        tensors = {name: torch.from_numpy(np.array(a, dtype=np.float32)) for name, a in state.items()}  # writable copies
        del state
        if devices[0] != "cpu":
            disable_cudnn_attention()
        for name in devices:
            device = torch.device(name)
            model = Whisper(dims)
            missing, _unexpected = model.load_state_dict(tensors, strict=False)
            missing = [m for m in missing if not m.endswith("key.bias")]
            if missing:
                raise ModelLoadError(f"{path}: weights lack {len(missing)} tensors, first {missing[0]!r}")
            model = model.to(device=device, dtype=dtype).eval()
            rows = max_rows or DEFAULT_MAX_ROWS[device.type]
            static = device.type == "cuda" if static_decoding is None else static_decoding
            decoder = WindowDecoder(
                model,
                self._tokenizer,
                suppress_tokens=suppress,
                static_rows=_static_rows(dims, device, dtype, rows) if static else 0,
                graphs=device.type == "cuda",
            )
            batcher = WindowBatcher(decoder.decode, self._detect_batch(decoder), max_rows=rows, max_wait_s=max_wait_s, name=name)
            self._devices.append(_Device(name, model, decoder, batcher))
        self._dtype = dtype
        if devices[0] == "cpu":
            torch.set_num_threads(max(1, config.threads))
        self.load_time_s = time.perf_counter() - started
        logger.info("loaded %s on %s (%s) in %.2fs", config.model_name, ",".join(devices), dtype, self.load_time_s)

    @staticmethod
    def _detect_batch(decoder: WindowDecoder):  # type: ignore[no-untyped-def]
        def run(mels: list[torch.Tensor]) -> list[torch.Tensor]:
            probs = decoder.detect_language(torch.stack(mels))
            return list(probs.float().cpu())

        return run

    # ------------------------------------------------------------------------------------------
    @property
    def multilingual(self) -> bool:
        return self._tokenizer.multilingual

    def info(self) -> EngineInfo:
        c = self._config
        return EngineInfo(
            engine=ENGINE_NAME,
            model=c.model_name,
            model_path=c.model_path,
            device=",".join(d.name for d in self._devices),
            compute_type=str(self._dtype).removeprefix("torch."),
            threads=c.threads,
            max_concurrency=c.concurrency,
            multilingual=self.multilingual,
        )

    def device_stats(self) -> list[dict[str, object]]:
        """Per device: memory in use and reserved, batches and windows decoded, busy seconds,
        queued windows. Shown by /health."""
        out: list[dict[str, object]] = []
        for d in self._devices:
            s = d.batcher.stats
            entry: dict[str, object] = {
                "device": d.name,
                "batches": s.batches,
                "windows": s.windows,
                "largest_batch": s.largest_batch,
                "busy_s": round(s.busy_s, 3),
                "queued_windows": d.batcher.pending,
            }
            if d.name.startswith("cuda"):
                index = torch.device(d.name).index or 0
                free, total = torch.cuda.mem_get_info(index)
                entry.update(
                    memory_allocated_mb=round(torch.cuda.memory_allocated(index) / 2**20, 1),
                    memory_reserved_mb=round(torch.cuda.memory_reserved(index) / 2**20, 1),
                    memory_peak_mb=round(torch.cuda.max_memory_allocated(index) / 2**20, 1),
                    memory_free_mb=round(free / 2**20, 1),
                    memory_total_mb=round(total / 2**20, 1),
                )
            out.append(entry)
        return out

    def close(self) -> None:
        for d in getattr(self, "_devices", []):
            d.batcher.close()
        self._devices = []
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    # ------------------------------------------------------------------------------------------
    def _pick_device(self) -> _Device:
        """The device with the fewest waiting windows: the scheduler spreads calls over GPUs."""
        return min(self._devices, key=lambda d: d.batcher.pending)

    def detect_language(self, audio: np.ndarray) -> LanguageDetection:
        if not self.multilingual:
            return LanguageDetection("en", 1.0, {"en": 1.0})
        device = self._pick_device()
        mel = log_mel_spectrogram(audio, n_mels=self.dims.n_mels, device=torch.device(device.name))
        frames = min(N_FRAMES, max(1, len(audio) // 160))
        return self._detect(device, window_mel(mel, 0, frames))

    def _detect(self, device: _Device, mel: torch.Tensor) -> LanguageDetection:
        probs = device.batcher.submit_detect(mel).result()
        codes = list(self._tokenizer.special.languages)
        values = probs.tolist()
        best = int(np.argmax(values))
        return LanguageDetection(codes[best], float(values[best]), {c: float(p) for c, p in zip(codes, values, strict=False)})

    def transcribe(
        self,
        audio: np.ndarray,
        options: TranscriptionOptions,
        *,
        progress: ProgressCallback | None = None,
        on_segment: SegmentCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> Transcript:
        check_model_supports_or_raise(options, model_name=self._config.model_name, multilingual=self.multilingual)
        duration = len(audio) / SAMPLE_RATE
        device = self._pick_device()
        mel = log_mel_spectrogram(audio, n_mels=self.dims.n_mels, device=torch.device(device.name))
        content_frames = max(0, len(audio) // 160)
        if progress is not None:
            progress(0.0, duration)
        if not self.multilingual:
            language, language_probability = "en", 1.0
        elif options.language:
            language, language_probability = options.language, 1.0
        else:
            detected = self._detect(device, window_mel(mel, 0, min(N_FRAMES, max(1, content_frames))))
            language, language_probability = detected.language, detected.probability
        run = _Run(self, device, mel, options, language, cancel)
        if options.batch_size == 1:  # Whisper's own algorithm: one region, each window prompted
            segments = run.regions([_Window(0, max(1, content_frames))], condition=options.condition_on_previous_text)
        else:
            segments = run.regions(self._plan_windows(audio, options, content_frames), condition=options.condition_on_previous_text)
        if options.word_timestamps and segments:
            from stenod.engines.torch_whisper.timing import add_word_timestamps

            segments = add_word_timestamps(self, device, mel, segments, language=language, options=options)
        segments = [_with_id(i, s) for i, s in enumerate(segments)]
        for seg in segments:
            if on_segment is not None:
                on_segment(seg)
            if progress is not None:
                progress(min(seg.end, duration), duration)
        if progress is not None:
            progress(duration, duration)
        return Transcript.from_segments(
            segments, language=language, duration=duration, language_probability=float(language_probability), task=options.task
        )

    def _plan_windows(self, audio: np.ndarray, options: TranscriptionOptions, content_frames: int) -> list[_Window]:
        duration = len(audio) / SAMPLE_RATE
        if content_frames <= N_FRAMES:
            return [_Window(0, max(1, content_frames))]
        if options.vad_enabled(duration):
            spans = _speech_spans(audio, options)
            if spans is not None:
                return _windows_from_spans(spans)
        return _energy_windows(audio)


STATIC_MEMORY_SHARE = 0.25
"""At most this share of a GPU's free memory goes to the fixed greedy-decoding buffers."""


def _static_rows(dims: ModelDimensions, device: torch.device, dtype: torch.dtype, rows: int) -> int:
    """Rows of fixed decoding buffers (caches of every decoder layer for one window each) that fit
    in :data:`STATIC_MEMORY_SHARE` of the free memory: all ``rows`` for ``base`` on any GPU, fewer
    for a large model on a small card (larger greedy batches then take the general loop); 0 when
    not even one fits."""
    if device.type != "cuda":
        return rows
    free, _total = torch.cuda.mem_get_info(device)
    slots = dims.n_audio_ctx + 2 * dims.n_text_ctx  # cross-attention frames + the self-attention cache
    per_row = dims.n_text_layer * 2 * slots * dims.n_text_state * torch.finfo(dtype).bits // 8
    return min(rows, int(free * STATIC_MEMORY_SHARE) // per_row)


def _with_id(index: int, seg: Segment) -> Segment:
    return replace(seg, id=index)


# --------------------------------------------------------------------------------------------------
# Window planning
# --------------------------------------------------------------------------------------------------


def _energy_windows(audio: np.ndarray) -> list[_Window]:
    """Cut long audio into windows of at most 30 s at the quietest 0.2 s between 20 and 30 s in,
    so a cut rarely splits a word."""
    frame = SAMPLE_RATE // FRAMES_PER_SECOND  # one mel frame, 10 ms
    n = len(audio) // frame
    energy = np.square(audio[: n * frame].reshape(n, frame).astype(np.float32)).mean(axis=1)
    smooth = np.convolve(energy, np.ones(20, dtype=np.float32) / 20, mode="same")
    windows: list[_Window] = []
    pos = 0
    min_cut = int(MIN_CUT_S * FRAMES_PER_SECOND)
    while n - pos > N_FRAMES:
        lo, hi = pos + min_cut, pos + N_FRAMES
        cut = lo + int(np.argmin(smooth[lo:hi]))
        windows.append(_Window(pos, cut - pos))
        pos = cut
    if n - pos > 0:
        windows.append(_Window(pos, n - pos))
    return windows


def _speech_spans(audio: np.ndarray, options: TranscriptionOptions) -> list[tuple[int, int]] | None:
    """Speech spans in samples from faster-whisper's Silero VAD (the same settings as the other
    engines), or ``None`` when it is not installed: then energy cuts are used."""
    try:
        from faster_whisper.vad import get_speech_timestamps

        from stenod.engines.vad import silero_vad_options
    except ImportError:
        logger.info("VAD unavailable (faster-whisper not installed); cutting windows by energy")
        return None
    vad = silero_vad_options(options)
    vad.max_speech_duration_s = N_FRAMES / FRAMES_PER_SECOND - 1
    spans = get_speech_timestamps(audio, vad)
    return [(int(s["start"]), int(s["end"])) for s in spans]


def _windows_from_spans(spans: list[tuple[int, int]]) -> list[_Window]:
    """Group consecutive speech spans into windows of at most 30 s (silence between spans inside
    a window is kept, so timestamps need no remapping; silence between windows is skipped)."""
    frame = SAMPLE_RATE // FRAMES_PER_SECOND
    windows: list[_Window] = []
    start: int | None = None
    end = 0
    for s, e in spans:
        s, e = s // frame, -(-e // frame)
        if start is None:
            start, end = s, e
        elif e - start <= N_FRAMES:
            end = e
        else:
            windows.append(_Window(start, end - start))
            start, end = s, e
    if start is not None:
        windows.append(_Window(start, min(N_FRAMES, end - start)))
    return windows


# --------------------------------------------------------------------------------------------------
# One call's decoding
# --------------------------------------------------------------------------------------------------


class _Run:
    """Decoding state of one ``transcribe`` call."""

    def __init__(
        self,
        engine: TorchWhisperEngine,
        device: _Device,
        mel: torch.Tensor,
        options: TranscriptionOptions,
        language: str,
        cancel: threading.Event | None,
    ) -> None:
        self.engine = engine
        self.device = device
        self.mel = mel
        self.options = options
        self.language = language
        self.cancel = cancel
        tok = engine._tokenizer
        self.tok = tok
        self.sot_sequence = tok.sot_sequence(language=language if tok.multilingual else None, task=options.task)
        self.n_text_ctx = engine.dims.n_text_ctx
        prompt = options.prompt_with_hotwords()  # hotwords lead the prompt of every window
        self.initial_prompt = tok.encode(" " + prompt.strip()) if prompt else []

    def _check_cancel(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise CancelledError("transcription cancelled")

    def _task(self, window: _Window, prompt: list[int], temperature: float) -> WindowTask:
        o = self.options
        prefix: list[int] = []
        if prompt:
            prefix = [self.tok.special.sot_prev, *prompt[-(self.n_text_ctx // 2 - 1) :]]
        sot_index = len(prefix)
        prefix += self.sot_sequence
        if o.without_timestamps:
            prefix.append(self.tok.special.no_timestamps)
        sample_len = min(self.n_text_ctx // 2, self.n_text_ctx - len(prefix))
        return WindowTask(
            mel=window_mel(self.mel, window.start, window.frames),
            prefix=prefix,
            sot_index=sot_index,
            temperature=temperature,
            beam_size=max(1, o.beam_size),
            best_of=max(1, o.beam_size),
            without_timestamps=o.without_timestamps,
            sample_len=sample_len,
        )

    def _decode_with_fallback(self, windows: list[_Window], prompts: list[list[int]]) -> list[WindowResult]:
        """Decode every window at the first temperature; retry those whose output looks like a
        failure (repetitive, improbable) at the next one, all of them together again. A window
        that fails at every temperature keeps its most probable attempt (highest average
        log-probability among those not too repetitive, else among all), as faster-whisper does,
        not the last one: the last is sampled at the highest temperature and is often noise."""
        temps = self.options.temperature or (0.0,)
        results: list[WindowResult | None] = [None] * len(windows)
        attempts: list[list[WindowResult]] = [[] for _ in windows]
        todo = list(range(len(windows)))
        for i, t in enumerate(temps):
            self._check_cancel()
            futures = {}
            for w in todo:
                task = self._task(windows[w], prompts[w], t)
                futures[w] = self.device.batcher.submit_decode(task, rows=task.rows, mode=task.mode)
            retry: list[int] = []
            for w, fut in futures.items():
                result = fut.result()
                results[w] = result
                attempts[w].append(result)
                if len(temps) > 1 and self._needs_fallback(result):
                    if i + 1 < len(temps):
                        retry.append(w)
                    else:
                        results[w] = self._best_attempt(attempts[w])
            todo = retry
            if not todo:
                break
        return [r for r in results if r is not None]

    def _best_attempt(self, attempts: list[WindowResult]) -> WindowResult:
        threshold = self.options.compression_ratio_threshold
        fluent = [
            r for r in attempts if threshold is None or compression_ratio(self.tok.decode(r.tokens)) <= threshold
        ]
        best = max(fluent or attempts, key=lambda r: r.avg_logprob)
        # The last temperature, as faster-whisper reports it: the prompt is reset after it.
        return replace(best, temperature=attempts[-1].temperature)

    def _needs_fallback(self, r: WindowResult) -> bool:
        o = self.options
        text = self.tok.decode(r.tokens)
        needs = False
        if o.compression_ratio_threshold is not None and compression_ratio(text) > o.compression_ratio_threshold:
            needs = True
        if o.log_prob_threshold is not None and r.avg_logprob < o.log_prob_threshold:
            needs = True
        if o.no_speech_threshold is not None and r.no_speech_prob > o.no_speech_threshold:
            needs = False  # silence: a low log-probability is expected
        return needs

    def _is_silence(self, r: WindowResult) -> bool:
        o = self.options
        if o.no_speech_threshold is None or r.no_speech_prob <= o.no_speech_threshold:
            return False
        return o.log_prob_threshold is None or r.avg_logprob < o.log_prob_threshold

    # ------------------------------------------------------------------------------------------
    def regions(self, regions: list[_Window], *, condition: bool) -> list[Segment]:
        """Whisper's seek loop, run for every region at once: each round decodes one window per
        unfinished region (all in one batch), then each region seeks past what was decoded (to the
        last complete timestamp pair, so a sentence cut by the window is decoded again whole).
        ``condition``: each window is prompted with its region's previous text."""
        seeks = [r.start for r in regions]
        ends = [r.start + r.frames for r in regions]
        history: list[list[int]] = [list(self.initial_prompt) for _ in regions]
        reset_since = [0] * len(regions)
        found: list[list[Segment]] = [[] for _ in regions]
        while True:
            live = [i for i in range(len(regions)) if ends[i] - seeks[i] > 0]
            if not live:
                break
            windows = [_Window(seeks[i], min(N_FRAMES, ends[i] - seeks[i])) for i in live]
            prompts = [
                history[i][reset_since[i] :] if condition else list(self.initial_prompt) for i in live
            ]
            results = self._decode_with_fallback(windows, prompts)
            for i, window, result in zip(live, windows, results, strict=False):
                if self._is_silence(result):
                    seeks[i] += window.frames
                    continue
                segs, advance = self._segments(window, result)
                # A window shorter than a second that decodes to nothing ends the region.
                seeks[i] += advance if segs or window.frames > FRAMES_PER_SECOND else window.frames
                found[i].extend(segs)
                for seg in segs:
                    history[i].extend(seg.tokens)
                if result.temperature > 0.5:
                    reset_since[i] = len(history[i])
        return [seg for segs in found for seg in segs]

    def _segments(self, window: _Window, r: WindowResult) -> tuple[list[Segment], int]:
        """openai-whisper's split of one window's tokens at consecutive timestamps. Returns the
        segments and how many frames the seek loop advances."""
        tb = self.tok.special.timestamp_begin
        tokens = r.tokens
        offset = window.start / FRAMES_PER_SECOND
        window_s = window.frames / FRAMES_PER_SECOND
        is_ts = [t >= tb for t in tokens]
        single_ending = len(tokens) >= 2 and not is_ts[-2] and is_ts[-1]
        consecutive = [i + 1 for i in range(len(tokens) - 1) if is_ts[i] and is_ts[i + 1]]
        segments: list[Segment] = []

        def add(toks: list[int], start: float, end: float) -> None:
            text = self.tok.decode(toks)
            if not text.strip():
                return
            segments.append(
                Segment(
                    id=0,
                    seek=window.start,
                    start=round(offset + start, 3),
                    end=round(offset + min(max(end, start), window_s), 3),
                    text=text,
                    tokens=tuple(toks),
                    temperature=r.temperature,
                    avg_logprob=r.avg_logprob,
                    compression_ratio=compression_ratio(text),
                    no_speech_prob=r.no_speech_prob,
                )
            )

        if consecutive:
            slices = list(consecutive)
            if single_ending:
                slices.append(len(tokens))
            last = 0
            for cur in slices:
                piece = tokens[last:cur]
                if not piece:
                    continue
                start = (piece[0] - tb) * TIME_PRECISION_S if piece[0] >= tb else (
                    (tokens[last - 1] - tb) * TIME_PRECISION_S if last else 0.0
                )
                end = (piece[-1] - tb) * TIME_PRECISION_S if piece[-1] >= tb else window_s
                add(piece, start, end)
                last = cur
            if single_ending:
                advance = window.frames
            else:
                advance = (tokens[last - 1] - tb) * INPUT_STRIDE
        else:
            end = window_s
            stamps = [t for t in tokens if t >= tb]
            if stamps and stamps[-1] != tb:
                end = (stamps[-1] - tb) * TIME_PRECISION_S
            start = (stamps[0] - tb) * TIME_PRECISION_S if stamps and tokens[0] >= tb else 0.0
            add(tokens, start if start < end else 0.0, end)
            advance = window.frames
        return segments, max(1, int(advance))


def compression_ratio(text: str) -> float:
    data = text.encode("utf-8")
    if not data:
        return 0.0
    return len(data) / len(zlib.compress(data))
