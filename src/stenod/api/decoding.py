"""Decoding and subtitle fields beyond the basics, where OpenAI's or whisper.cpp's API has one.

* OpenAI: ``chunking_strategy`` (``auto``, or ``{"type": "server_vad", "threshold",
  "prefix_padding_ms", "silence_duration_ms"}``) turns voice-activity detection on with those
  settings.
* whisper.cpp ``/inference``: ``offset_t`` and ``duration`` (milliseconds), ``max_len`` (characters
  per cue; 1 = one word per cue), ``beam_size``, ``temperature_inc``, ``logprob_thold``,
  ``no_speech_thold``, ``entropy_thold`` (whisper.cpp's form of the compression-ratio check; any
  value <= 0 turns it off), ``vad``, ``vad_threshold``, ``vad_min_silence_duration_ms``,
  ``vad_speech_pad_ms``, ``token_timestamps``, ``split_on_word`` (always on here),
  ``detect_language``.

Each bad value is a 400 naming the field.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace

from stenod.engines.base import MIN_TEMPERATURE_STEP, TranscriptionOptions, temperature_schedule
from stenod.errors import UnsupportedParameterError
from stenod.formats import SubtitleOptions


def _range_or_raise(name: str, value: float | None, low: float | None, high: float | None) -> None:
    if value is None:
        return
    if not math.isfinite(value):
        raise UnsupportedParameterError(f"{name} must be a finite number", param=name)
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f"between {low:g} and {high:g}" if low is not None and high is not None else (
            f"at least {low:g}" if low is not None else f"at most {high:g}")
        raise UnsupportedParameterError(f"{name} must be {bounds}, got {value:g}", param=name)


def flag(value: str | None) -> bool:
    """whisper.cpp's booleans: true/1/yes/on."""
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def openai_chunking_or_raise(options: TranscriptionOptions, chunking_strategy: str | None) -> TranscriptionOptions:
    """Apply OpenAI's ``chunking_strategy`` form field (a string: ``auto`` or a JSON object).

    Raises:
        UnsupportedParameterError: not ``auto`` and not a valid ``server_vad`` object.
    """
    if chunking_strategy is None or not chunking_strategy.strip():
        return options
    if chunking_strategy.strip() == "auto":
        return replace(options, vad=True)
    try:
        data = json.loads(chunking_strategy)
    except json.JSONDecodeError:
        data = None
    if not isinstance(data, dict) or data.get("type") != "server_vad":
        raise UnsupportedParameterError(
            'chunking_strategy must be "auto" or {"type": "server_vad", ...}', param="chunking_strategy")
    threshold = data.get("threshold", options.vad_threshold)
    padding = data.get("prefix_padding_ms", options.vad_speech_pad_ms)
    silence = data.get("silence_duration_ms", options.vad_min_silence_ms)
    for name, value in (("threshold", threshold), ("prefix_padding_ms", padding), ("silence_duration_ms", silence)):
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise UnsupportedParameterError(f"chunking_strategy.{name} must be a number", param="chunking_strategy")
    _range_or_raise("chunking_strategy.threshold", float(threshold), 0.0, 1.0)
    _range_or_raise("chunking_strategy.prefix_padding_ms", float(padding), 0.0, 60_000.0)
    _range_or_raise("chunking_strategy.silence_duration_ms", float(silence), 0.0, 60_000.0)
    return replace(options, vad=True, vad_threshold=float(threshold), vad_speech_pad_ms=int(padding),
                   vad_min_silence_ms=int(silence))


@dataclass(frozen=True, slots=True)
class WhisperCppFields:
    """``/inference``'s optional form fields, as received (``None`` = not sent)."""

    offset_t: int | None = None
    duration: int | None = None
    max_len: int | None = None
    beam_size: int | None = None
    temperature_inc: float | None = None
    logprob_thold: float | None = None
    no_speech_thold: float | None = None
    entropy_thold: float | None = None
    vad: str | None = None
    vad_threshold: float | None = None
    vad_min_silence_duration_ms: int | None = None
    vad_speech_pad_ms: int | None = None
    token_timestamps: str | None = None

    def apply_or_raise(self, options: TranscriptionOptions, *, temperature: float | None) -> TranscriptionOptions:
        """``options`` with these fields applied.

        Raises:
            UnsupportedParameterError: a value out of range, naming the field.
        """
        _range_or_raise("offset_t", self.offset_t, 0, None)
        _range_or_raise("duration", self.duration, 0, None)
        _range_or_raise("beam_size", self.beam_size, 1, 16)
        _range_or_raise("temperature_inc", self.temperature_inc, 0.0, 1.0)
        if self.temperature_inc is not None and 0 < self.temperature_inc < MIN_TEMPERATURE_STEP:
            raise UnsupportedParameterError(
                f"temperature_inc must be 0 (no fallback) or at least {MIN_TEMPERATURE_STEP}", param="temperature_inc")
        _range_or_raise("no_speech_thold", self.no_speech_thold, 0.0, 1.0)
        _range_or_raise("vad_threshold", self.vad_threshold, 0.0, 1.0)
        _range_or_raise("vad_min_silence_duration_ms", self.vad_min_silence_duration_ms, 0, None)
        _range_or_raise("vad_speech_pad_ms", self.vad_speech_pad_ms, 0, None)
        changes: dict[str, object] = {}
        if self.offset_t:
            changes["offset_s"] = self.offset_t / 1000
        if self.duration:  # whisper.cpp: 0 means to the end
            changes["duration_s"] = self.duration / 1000
        if self.beam_size is not None:
            changes["beam_size"] = self.beam_size
        if self.temperature_inc is not None:
            changes["temperature"] = temperature_schedule(temperature or 0.0, self.temperature_inc)
        if self.logprob_thold is not None:
            changes["log_prob_threshold"] = self.logprob_thold
        if self.no_speech_thold is not None:
            changes["no_speech_threshold"] = self.no_speech_thold
        if self.entropy_thold is not None and self.entropy_thold <= 0:
            changes["compression_ratio_threshold"] = None
        if self.vad is not None:
            changes["vad"] = flag(self.vad)
        if self.vad_threshold is not None:
            changes["vad_threshold"] = self.vad_threshold
        if self.vad_min_silence_duration_ms is not None:
            changes["vad_min_silence_ms"] = self.vad_min_silence_duration_ms
        if self.vad_speech_pad_ms is not None:
            changes["vad_speech_pad_ms"] = self.vad_speech_pad_ms
        if flag(self.token_timestamps) or (self.max_len or 0) > 0:
            changes["word_timestamps"] = True  # finer cue cuts for max_len
        return replace(options, **changes)  # type: ignore[arg-type]

    def subtitles_or_raise(self) -> SubtitleOptions:
        """whisper.cpp's ``max_len`` (0 = no limit) as cue options."""
        _range_or_raise("max_len", self.max_len, 0, None)
        return SubtitleOptions(max_cue_chars=self.max_len or None)
