"""The coverage check's re-decoded windows do not repeat the words at their borders.

A scripted engine stands in for Whisper so that the case is exact: the first pass leaves a
stretch without text, and the re-decode of that stretch starts with the last word of the text
before it, as base did on a FLEURS clip that ends with a citation ("... Oravec 2002" came out as
"Eurowitz 2002 2002 2002").
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from stenod.decoding import transcribe_with_coverage
from stenod.decoding.speech import SpeechStretch
from stenod.engines import TranscriptionOptions
from stenod.engines.base import EngineInfo
from stenod.transcript import Segment, Transcript, Word

RATE = 16_000


def _seg(start: float, end: float, text: str) -> Segment:
    words = text.split()
    step = (end - start) / len(words)
    timed = tuple(Word(start + i * step, start + (i + 1) * step, " " + w, 0.9) for i, w in enumerate(words))
    return Segment(id=0, seek=0, start=start, end=end, text=" " + text, words=timed, avg_logprob=-0.2)


class ScriptedEngine:
    """Answers each ``transcribe`` call with the segments ``script`` gives for the call's audio
    (times relative to it), as an engine would."""

    def __init__(self, script: Callable[[float], list[Segment]]) -> None:
        self.script = script
        self.calls: list[float] = []

    def transcribe(self, audio: np.ndarray, options: TranscriptionOptions, **_: object) -> Transcript:
        seconds = len(audio) / RATE
        self.calls.append(seconds)
        return Transcript.from_segments(self.script(seconds), language="en", duration=seconds, language_probability=1.0)

    def info(self) -> EngineInfo:
        return EngineInfo("scripted", "scripted", "", "cpu", "int8", 1, 1, False)


FIRST = "in the only sense with which we are at present concerned it was printed in 2002"
SPEECH = [SpeechStretch(1.0, 8.0), SpeechStretch(9.0, 11.5)]


def _run(redecoded: list[Segment]) -> str:
    def script(seconds: float) -> list[Segment]:
        if seconds > 12:  # the first pass, over the whole 14 s: the second stretch has no text
            return [_seg(1.0, 8.0, FIRST)]
        return redecoded

    engine = ScriptedEngine(script)
    out = transcribe_with_coverage(engine, np.zeros(14 * RATE, dtype=np.float32), TranscriptionOptions(language="en"),
                                   speech=SPEECH)
    assert len(engine.calls) >= 2, "the second stretch was re-decoded"
    return out.text


def test_a_number_repeated_at_the_border_with_the_text_before_is_dropped() -> None:
    # Before: a single shared word counted only with five letters or more, so "2002" stayed.
    text = _run([_seg(0.1, 0.5, "2002"), _seg(0.6, 2.4, "and the presses ran day and night")])
    assert text.count("2002") == 1
    assert text.endswith("2002 and the presses ran day and night")


def test_a_re_decoded_window_does_not_repeat_its_own_segments() -> None:
    text = _run([_seg(0.1, 1.2, "the presses ran day and night"), _seg(1.2, 1.6, "night"),
                 _seg(1.6, 2.4, "in Mainz")])
    assert "night night" not in text
    assert text.endswith("the presses ran day and night in Mainz")


def test_a_re_decoded_window_that_repeats_nothing_is_kept_whole() -> None:
    # "... printed in 2002" then "in Mainz ...": no border word is shared, nothing is trimmed.
    # (A short function word shared at a border is kept too: test_guards.py.)
    text = _run([_seg(0.1, 2.4, "in Mainz the presses ran day and night")])
    assert text.endswith("2002 in Mainz the presses ran day and night")
