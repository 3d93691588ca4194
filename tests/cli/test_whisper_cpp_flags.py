"""whisper.cpp's command-line habits: how `stenod transcribe` reads -osrt, -tr, -ml, -of, -ot, -d, -f."""

from __future__ import annotations

import pytest

from stenod.cli.compat import rewrite_transcribe_args, translate_whisper_cpp_args
from stenod.errors import UnsupportedParameterError


def test_output_flags_become_one_format_list() -> None:
    t = translate_whisper_cpp_args(["-m", "tiny.en", "-osrt", "-ovtt", "-otxt", "-oj", "x.wav"])
    assert t.args == ["-m", "tiny.en", "x.wav", "--format", "srt,vtt,txt,verbose_json"]
    assert "-osrt -> --format srt" in t.read_as


def test_flags_that_click_would_misread_are_rewritten() -> None:
    t = translate_whisper_cpp_args(["-tr", "-ml", "1", "-of", "out/talk", "-f", "a.wav", "-l", "de", "-t", "2"])
    assert t.args == ["--task", "translate", "--max-len", "1", "--output-file", "out/talk", "a.wav",
                      "-l", "de", "-t", "2"]


def test_milliseconds_become_seconds() -> None:
    t = translate_whisper_cpp_args(["-ot", "1500", "-d", "30000", "x.wav"])
    assert t.args == ["--offset", "1.5", "--duration", "30", "x.wav"]


def test_stenod_short_format_flag_is_kept() -> None:
    assert translate_whisper_cpp_args(["-f", "srt,vtt", "x.wav"]).args == ["-f", "srt,vtt", "x.wav"]
    assert translate_whisper_cpp_args(["-f", "srt.wav"]).args == ["srt.wav"]


def test_no_equivalent_says_what_to_use() -> None:
    with pytest.raises(UnsupportedParameterError, match=r"-ocsv .* did you mean --format tsv\?"):
        translate_whisper_cpp_args(["-ocsv", "x.wav"])


def test_ignored_flags_and_other_commands() -> None:
    notes: list[str] = []
    args = rewrite_transcribe_args(["transcribe", "-np", "-sow", "x.wav"], notes.append)
    assert args == ["transcribe", "x.wav"]
    assert notes and notes[0].startswith("ignored whisper.cpp flags: -np")
    assert rewrite_transcribe_args(["batch", "in", "-o", "out"], notes.append) == ["batch", "in", "-o", "out"]
    assert translate_whisper_cpp_args(["--", "-osrt"]).args == ["--", "-osrt"]  # after --: file names
