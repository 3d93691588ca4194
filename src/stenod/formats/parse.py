"""Format names as users write them (``--format txt,srt``, ``response_format=verbose_json``) turned
into :data:`ResponseFormat` values, with errors that name the bad value and the parameter."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

from stenod.errors import UnsupportedParameterError
from stenod.formats.render import RESPONSE_FORMATS, ResponseFormat

FORMAT_ALIASES: dict[str, ResponseFormat] = {"txt": "text", **{f: f for f in RESPONSE_FORMATS}}
"""Names accepted in format lists: every response format, plus ``txt`` (the file extension) for text."""
FORMAT_LIST_HELP = "txt, json, verbose_json, srt, vtt, tsv"


def parse_response_format_or_raise(
    value: str | None, allowed: Sequence[ResponseFormat] = RESPONSE_FORMATS, *, param: str = "response_format"
) -> ResponseFormat:
    """One format (``None`` or empty = ``json``, OpenAI's default), case-insensitive.

    Raises:
        UnsupportedParameterError: not one of ``allowed``, naming ``param``.
    """
    fmt = (value or "json").strip().lower()
    if fmt not in allowed:
        raise UnsupportedParameterError(
            f"{param} {value!r} is not supported; use one of {', '.join(allowed)}", param=param
        )
    return cast(ResponseFormat, fmt)


def parse_format_list_or_raise(value: str, *, param: str = "format") -> list[ResponseFormat]:
    """Comma-separated formats (``txt`` allowed for text), duplicates dropped, order kept.

    Raises:
        UnsupportedParameterError: an unknown name or an empty list, naming ``param``.
    """
    formats: list[ResponseFormat] = []
    for raw in value.split(","):
        name = raw.strip().lower()
        if name not in FORMAT_ALIASES:
            raise UnsupportedParameterError(f"unknown format {raw!r}; choose from {FORMAT_LIST_HELP}", param=param)
        formats.append(FORMAT_ALIASES[name])
    return list(dict.fromkeys(formats))
