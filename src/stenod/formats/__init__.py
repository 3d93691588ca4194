"""Render a Transcript as OpenAI's response formats (json, verbose_json, text, srt, vtt) and
whisper.cpp's tsv, parse format names, and read verbose_json back. One place owns timestamps, cue
ordering and speaker labels."""

from stenod.formats.parse import FORMAT_ALIASES, parse_format_list_or_raise, parse_response_format_or_raise
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
from stenod.formats.verbose_json import transcript_from_verbose_json

__all__ = [
    "DEFAULT_SUBTITLES",
    "FORMAT_ALIASES",
    "FORMAT_EXTENSIONS",
    "MEDIA_TYPES",
    "RESPONSE_FORMATS",
    "ResponseFormat",
    "SubtitleOptions",
    "TimestampGranularity",
    "format_timestamp",
    "parse_format_list_or_raise",
    "parse_response_format_or_raise",
    "render",
    "subtitle_cues",
    "to_json_dict",
    "to_verbose_json_dict",
    "transcript_from_verbose_json",
]
