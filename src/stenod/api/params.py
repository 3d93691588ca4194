"""Turn form fields into a typed TranscriptionRequest, with 400s that name the bad parameter.

HTTP-only parsing (response format, granularities) lives here; decoding options are built by
:func:`stenod.service.build_options`, the same as for the CLI, batch and job workers.
"""

from __future__ import annotations

from collections.abc import Sequence

from stenod.errors import UnsupportedParameterError
from stenod.formats import ResponseFormat, TimestampGranularity
from stenod.service import TranscriptionRequest, build_options
from stenod.settings import ModelSettings
from stenod.transcript import Task

OPENAI_FORMATS: tuple[ResponseFormat, ...] = ("json", "text", "srt", "verbose_json", "vtt")
GRANULARITIES: tuple[TimestampGranularity, ...] = ("segment", "word")


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
            out.append(item)
    if response_format != "verbose_json":
        # OpenAI's rule: granularities need verbose_json.
        raise UnsupportedParameterError(
            "timestamp_granularities requires response_format=verbose_json", param="timestamp_granularities[]"
        )
    return tuple(dict.fromkeys(out))


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
    """The route's form fields as a typed request; options come from the one builder.

    Raises:
        UnknownLanguageError, UnsupportedParameterError: a bad field, named in the error.
    """
    options = build_options(
        model_settings, language=language, task=task, temperature=temperature, prompt=prompt,
        word_timestamps=word_timestamps, without_timestamps=without_timestamps,
    )
    return TranscriptionRequest(model=model, options=options, endpoint=endpoint, diarize=diarize)
