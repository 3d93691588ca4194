"""Renderer golden tests on hand-built transcripts, and the OpenAI contract of json/verbose_json
(checked with openai-python's own response types)."""

from __future__ import annotations

import json
import random
import re

import pytest
from openai.types.audio import Transcription, TranscriptionVerbose

from stenod.formats import format_timestamp, render
from stenod.transcript import Segment, Transcript, Word


def _seg(i: int, start: float, end: float, text: str, *, speaker: str | None = None, words=None) -> Segment:  # type: ignore[no-untyped-def]
    return Segment(
        id=i, seek=i * 3000, start=start, end=end, text=text, tokens=(50364 + i, 400 + i),
        temperature=0.0, avg_logprob=-0.25, compression_ratio=1.25, no_speech_prob=0.01,
        words=words, speaker=speaker,
    )


HELLO_WORDS = (Word(0.0, 1.0, " Hello", 0.91), Word(1.0, 2.5, " there.", 0.82))

# Second segment starts 20 ms before the first ends (Whisper does this); the third is blank and
# must not become a cue; the fourth lies wholly inside the second; the last is past one hour.
TRANSCRIPT = Transcript.from_segments(
    [
        _seg(0, 0.0, 2.5, " Hello there.", words=HELLO_WORDS),
        _seg(1, 2.48, 5.0, " General Kenobi."),
        _seg(2, 5.0, 5.5, "   "),
        _seg(3, 4.0, 4.5, " You are a bold one."),
        _seg(4, 3599.9996, 3725.25, " Back away!"),
    ],
    language="en",
    duration=3726.0,
)

DIARIZED = Transcript.from_segments(
    [
        _seg(0, 0.0, 1.5, " Good morning.", speaker="SPEAKER 1"),
        _seg(1, 1.5, 3.0, " How can I help?", speaker="SPEAKER 1"),
        _seg(2, 3.2, 5.0, " My card was declined.", speaker="SPEAKER 2"),
    ],
    language="en",
    duration=5.0,
)

EMPTY = Transcript.from_segments([], language="en", duration=60.0)


def test_text_joins_segments_like_whisper() -> None:
    assert TRANSCRIPT.text == "Hello there. General Kenobi.    You are a bold one. Back away!"


def test_srt_golden() -> None:
    assert render(TRANSCRIPT, "srt") == (
        "1\n00:00:00,000 --> 00:00:02,500\nHello there.\n"
        "\n"
        "2\n00:00:02,500 --> 00:00:05,000\nGeneral Kenobi.\n"
        "\n"
        "3\n00:00:05,000 --> 00:00:05,000\nYou are a bold one.\n"
        "\n"
        "4\n01:00:00,000 --> 01:02:05,250\nBack away!\n"
    )


def test_vtt_golden() -> None:
    assert render(TRANSCRIPT, "vtt") == (
        "WEBVTT\n\n"
        "00:00:00.000 --> 00:00:02.500\nHello there.\n"
        "\n"
        "00:00:02.500 --> 00:00:05.000\nGeneral Kenobi.\n"
        "\n"
        "00:00:05.000 --> 00:00:05.000\nYou are a bold one.\n"
        "\n"
        "01:00:00.000 --> 01:02:05.250\nBack away!\n"
    )


def test_tsv_golden() -> None:
    assert render(TRANSCRIPT, "tsv") == (
        "start\tend\ttext\n"
        "0\t2500\tHello there.\n"
        "2500\t5000\tGeneral Kenobi.\n"
        "5000\t5000\tYou are a bold one.\n"
        "3600000\t3725250\tBack away!\n"
    )


def test_text_golden() -> None:
    assert render(TRANSCRIPT, "text") == TRANSCRIPT.text + "\n"


def test_json_golden() -> None:
    body = render(TRANSCRIPT, "json")
    assert json.loads(body) == {"text": TRANSCRIPT.text}
    assert Transcription.model_validate_json(body).text == TRANSCRIPT.text


def test_verbose_json_golden() -> None:
    data = json.loads(render(TRANSCRIPT, "verbose_json"))
    assert list(data) == ["task", "language", "duration", "text", "segments"]
    assert data["task"] == "transcribe"
    assert data["language"] == "english"  # OpenAI reports the language name, not the code
    assert data["duration"] == 3726.0
    assert data["segments"][1] == {
        "id": 1, "seek": 3000, "start": 2.48, "end": 5.0, "text": " General Kenobi.",
        "tokens": [50365, 401], "temperature": 0.0, "avg_logprob": -0.25,
        "compression_ratio": 1.25, "no_speech_prob": 0.01,
    }


def test_verbose_json_validates_against_openai_types() -> None:
    body = render(TRANSCRIPT, "verbose_json", granularities=("segment", "word"))
    parsed = TranscriptionVerbose.model_validate_json(body)
    assert parsed.text == TRANSCRIPT.text
    assert parsed.language == "english"
    assert parsed.duration == pytest.approx(3726.0)
    assert parsed.segments is not None and len(parsed.segments) == len(TRANSCRIPT.segments)
    for got, want in zip(parsed.segments, TRANSCRIPT.segments, strict=True):
        assert (got.id, got.seek, got.start, got.end, got.text) == (want.id, want.seek, want.start, want.end, want.text)
        assert got.tokens == list(want.tokens)
        assert (got.avg_logprob, got.compression_ratio, got.no_speech_prob, got.temperature) == (
            want.avg_logprob, want.compression_ratio, want.no_speech_prob, want.temperature,
        )
    assert parsed.words is not None
    assert [(w.word, w.start, w.end) for w in parsed.words] == [("Hello", 0.0, 1.0), ("there.", 1.0, 2.5)]


def test_words_only_when_requested() -> None:
    assert "words" not in json.loads(render(TRANSCRIPT, "verbose_json"))
    words_only = json.loads(render(TRANSCRIPT, "verbose_json", granularities=("word",)))
    assert "segments" not in words_only and len(words_only["words"]) == 2


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [("text", ""), ("srt", ""), ("vtt", "WEBVTT\n\n"), ("tsv", "start\tend\ttext\n"), ("json", '{"text": ""}')],
)
def test_no_speech_renders_empty_output(fmt: str, expected: str) -> None:
    assert render(EMPTY, fmt) == expected  # type: ignore[arg-type]


def test_no_speech_verbose_json_is_valid() -> None:
    parsed = TranscriptionVerbose.model_validate_json(render(EMPTY, "verbose_json"))
    assert parsed.text == "" and parsed.segments == [] and parsed.duration == 60.0


# --- speakers -------------------------------------------------------------------------------


def test_diarized_text_is_one_line_per_turn() -> None:
    assert render(DIARIZED, "text") == (
        "[SPEAKER 1] Good morning. How can I help?\n[SPEAKER 2] My card was declined.\n"
    )


def test_diarized_srt_and_vtt_prefix_speakers() -> None:
    assert render(DIARIZED, "srt") == (
        "1\n00:00:00,000 --> 00:00:01,500\n[SPEAKER 1] Good morning.\n\n"
        "2\n00:00:01,500 --> 00:00:03,000\n[SPEAKER 1] How can I help?\n\n"
        "3\n00:00:03,200 --> 00:00:05,000\n[SPEAKER 2] My card was declined.\n"
    )
    vtt = render(DIARIZED, "vtt")
    assert "00:00:03.200 --> 00:00:05.000\n[SPEAKER 2] My card was declined.\n" in vtt


def test_diarized_json_formats_carry_speaker() -> None:
    data = json.loads(render(DIARIZED, "json"))
    assert data["text"] == DIARIZED.text
    assert [s["speaker"] for s in data["segments"]] == ["SPEAKER 1", "SPEAKER 1", "SPEAKER 2"]
    verbose = TranscriptionVerbose.model_validate_json(render(DIARIZED, "verbose_json"))
    assert [s.model_extra["speaker"] for s in verbose.segments or []] == ["SPEAKER 1", "SPEAKER 1", "SPEAKER 2"]  # type: ignore[index]


# --- timestamp validity ---------------------------------------------------------------------

_SRT_TIME = r"(\d{2,}):([0-5]\d):([0-5]\d),(\d{3})"
_VTT_TIME = r"(\d{2,}):([0-5]\d):([0-5]\d)\.(\d{3})"


def _ms(h: str, m: str, s: str, ms: str) -> int:
    return ((int(h) * 60 + int(m)) * 60 + int(s)) * 1000 + int(ms)


def _cue_times(body: str, pattern: str) -> list[tuple[int, int]]:
    arrow = re.compile(rf"^{pattern} --> {pattern}$", re.M)
    return [(_ms(*m.groups()[:4]), _ms(*m.groups()[4:])) for m in arrow.finditer(body)]


def _random_transcript(seed: int) -> Transcript:
    rng = random.Random(seed)
    segments, t = [], 0.0
    for i in range(40):
        start = max(0.0, t + rng.uniform(-1.5, 1.0))  # often before the previous end
        end = start + rng.uniform(0.0, 4.0)
        segments.append(_seg(i, round(start, 3), round(end, 3), f" words {i}"))
        t = end
    return Transcript.from_segments(segments, language="en", duration=t)


@pytest.mark.parametrize("seed", range(5))
def test_subtitle_cues_are_valid_monotonic_and_never_overlap(seed: int) -> None:
    transcript = _random_transcript(seed)
    srt = render(transcript, "srt")
    vtt = render(transcript, "vtt")
    assert srt.count(" --> ") == vtt.count(" --> ") == 40
    for body, pattern in ((srt, _SRT_TIME), (vtt, _VTT_TIME)):
        cues = _cue_times(body, pattern)
        assert len(cues) == 40  # every arrow line is well-formed
        previous_end = 0
        for start, end in cues:
            assert previous_end <= start <= end
            previous_end = end
    numbers = [int(line) for line in srt.split("\n") if line.isdigit()]
    assert numbers == list(range(1, 41))
    tsv_rows = [tuple(map(int, row.split("\t")[:2])) for row in render(transcript, "tsv").splitlines()[1:]]
    assert tsv_rows == _cue_times(srt, _SRT_TIME)


@pytest.mark.parametrize(
    ("seconds", "srt", "vtt"),
    [
        (0.0, "00:00:00,000", "00:00:00.000"),
        (0.0004, "00:00:00,000", "00:00:00.000"),
        (59.9996, "00:01:00,000", "00:01:00.000"),
        (3725.25, "01:02:05,250", "01:02:05.250"),
        (-0.5, "00:00:00,000", "00:00:00.000"),
        (360000.0, "100:00:00,000", "100:00:00.000"),
    ],
)
def test_format_timestamp(seconds: float, srt: str, vtt: str) -> None:
    assert format_timestamp(seconds, decimal=",") == srt
    assert format_timestamp(seconds) == vtt
