"""Turn form fields into a typed TranscriptionRequest, with 400s that name the bad parameter."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

from stenod.engines.base import Task, TranscriptionOptions, temperature_schedule
from stenod.engines.languages import normalize_language_or_raise
from stenod.errors import UnsupportedParameterError
from stenod.formats import RESPONSE_FORMATS, ResponseFormat, TimestampGranularity
from stenod.service.server_transcription import TranscriptionRequest
from stenod.settings import ModelSettings

OPENAI_FORMATS: tuple[ResponseFormat, ...] = ("json", "text", "srt", "verbose_json", "vtt")
GRANULARITIES: tuple[TimestampGranularity, ...] = ("segment", "word")


def parse_response_format(value: str | None, allowed: Sequence[ResponseFormat] = RESPONSE_FORMATS) -> ResponseFormat:
    fmt = (value or "json").strip().lower()
    if fmt not in allowed:
        raise UnsupportedParameterError(
            f"response_format {value!r} is not supported; use one of {', '.join(allowed)}", param="response_format"
        )
    return cast(ResponseFormat, fmt)


def parse_granularities(values: Sequence[str] | None, response_format: ResponseFormat) -> tuple[TimestampGranularity, ...]:
    if not values:
        return ("segment",)
    out: list[TimestampGranularity] = []
    for value in values:
        for part in value.split(","):
            item = part.strip().lower()
            if item not in GRANULARITIES:
                raise UnsupportedParameterError(
                    f"timestamp_granularities value {part!r} is not supported; use segment or word",
                    param="timestamp_granularities[]",
                )
            out.append(cast(TimestampGranularity, item))
    if response_format != "verbose_json":
        # OpenAI's rule: granularities need verbose_json.
        raise UnsupportedParameterError(
            "timestamp_granularities requires response_format=verbose_json", param="timestamp_granularities[]"
        )
    return tuple(dict.fromkeys(out))


def parse_temperature(value: float | None) -> tuple[float, ...]:
    t = 0.0 if value is None else value
    if not 0.0 <= t <= 1.0:
        raise UnsupportedParameterError(f"temperature must be between 0 and 1, got {t:g}", param="temperature")
    return temperature_schedule(t)


def build_request(
    *,
    endpoint: str,
    model: str | None,
    task: Task,
    language: str | None,
    prompt: str | None,
    temperature: float | None,
    word_timestamps: bool,
    model_settings: ModelSettings,
    without_timestamps: bool = False,
    diarize: bool = False,
) -> TranscriptionRequest:
    options = TranscriptionOptions(
        language=normalize_language_or_raise(language),
        task=task,
        beam_size=model_settings.beam_size,
        temperature=parse_temperature(temperature),
        initial_prompt=prompt or None,
        word_timestamps=word_timestamps,
        vad_min_duration_s=model_settings.vad_min_duration_s,
        without_timestamps=without_timestamps,
    )
    return TranscriptionRequest(model=model, options=options, endpoint=endpoint, diarize=diarize)
