"""stenod.languages is Whisper's language table, kept by us (not faster-whisper's private list) and
imported by renderers without pulling in an engine."""

from __future__ import annotations

import subprocess
import sys

import pytest

from stenod.errors import UnknownLanguageError
from stenod.languages import CODES_BY_NAME, WHISPER_LANGUAGES, language_name, normalize_language_or_raise


def test_same_codes_as_faster_whisper() -> None:
    from faster_whisper.tokenizer import _LANGUAGE_CODES  # the drift check is the one place it is read

    assert WHISPER_LANGUAGES == frozenset(_LANGUAGE_CODES)


def test_names_and_codes() -> None:
    assert language_name("en") == "english" and language_name("yue") == "cantonese"
    assert language_name("xx") == "xx"
    assert CODES_BY_NAME["german"] == "de"


def test_normalize() -> None:
    assert normalize_language_or_raise(" EN ") == "en"
    assert normalize_language_or_raise("auto") is None
    with pytest.raises(UnknownLanguageError):
        normalize_language_or_raise("english")


def test_rendering_does_not_import_an_engine() -> None:
    code = ("import sys, stenod.formats, stenod.languages; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('ctranslate2', 'faster_whisper', 'av') "
            "or m.startswith('stenod.engines')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
