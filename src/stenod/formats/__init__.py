"""Render a Transcript as OpenAI's response formats (json, verbose_json, text, srt, vtt) and
whisper.cpp's tsv. One place owns timestamps, cue ordering and speaker labels."""

from stenod.formats.render import (
    FORMAT_EXTENSIONS,
    MEDIA_TYPES,
    RESPONSE_FORMATS,
    ResponseFormat,
    TimestampGranularity,
    format_timestamp,
    render,
    to_json_dict,
    to_verbose_json_dict,
)
from stenod.formats.subtitles import DEFAULT_SUBTITLES, SubtitleOptions, subtitle_cues

__all__ = [
    "DEFAULT_SUBTITLES",
    "SubtitleOptions",
    "subtitle_cues",
    "FORMAT_EXTENSIONS",
    "MEDIA_TYPES",
    "RESPONSE_FORMATS",
    "ResponseFormat",
    "TimestampGranularity",
    "format_timestamp",
    "render",
    "to_json_dict",
    "to_verbose_json_dict",
]
