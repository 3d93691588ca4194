"""Subtitle controls: line width, lines per cue, cue length (whisper.cpp -ml), word cues."""

from __future__ import annotations

import itertools
import re

import pytest

from stenod.formats import SubtitleOptions, render, subtitle_cues
from stenod.transcript import Segment, Transcript, Word

WORDS = (
    Word(0.0, 0.4, " And", 0.9), Word(0.4, 0.9, " so", 0.9), Word(0.9, 1.3, " my", 0.9),
    Word(1.3, 2.0, " fellow", 0.9), Word(2.0, 3.1, " Americans,", 0.9), Word(3.5, 3.8, " ask", 0.9),
    Word(3.8, 4.2, " not", 0.9), Word(4.2, 4.6, " what", 0.9), Word(4.6, 4.9, " your", 0.9),
    Word(4.9, 5.6, " country", 0.9),
)
TEXT = "".join(w.word for w in WORDS)
TRANSCRIPT = Transcript.from_segments(
    [Segment(id=0, seek=0, start=0.0, end=5.6, text=TEXT, words=WORDS)], language="en", duration=6.0)
NO_WORDS = Transcript.from_segments(
    [Segment(id=0, seek=0, start=10.0, end=15.6, text=TEXT)], language="en", duration=16.0)


def _srt_cues(body: str) -> list[tuple[str, str, str]]:
    blocks = [b for b in body.strip().split("\n\n") if b]
    out = []
    for block in blocks:
        lines = block.split("\n")
        start, end = lines[1].split(" --> ")
        out.append((start, end, "\n".join(lines[2:])))
    return out


def test_default_is_one_cue_per_segment() -> None:
    assert subtitle_cues(TRANSCRIPT.segments) == [(0.0, 5.6, TEXT.strip())]


def test_line_width_wraps_at_word_boundaries_without_splitting_the_cue() -> None:
    cues = _srt_cues(render(TRANSCRIPT, "srt", subtitles=SubtitleOptions(max_line_width=20)))
    assert len(cues) == 1
    lines = cues[0][2].split("\n")
    assert all(len(line) <= 20 for line in lines)
    assert " ".join(lines) == TEXT.strip()


def test_line_count_splits_long_cues_timed_by_words() -> None:
    opts = SubtitleOptions(max_line_width=16, max_line_count=1)
    cues = subtitle_cues(TRANSCRIPT.segments, opts)
    assert len(cues) > 1
    assert all(len(text.split("\n")) == 1 and len(text) <= 16 for _, _, text in cues)
    assert " ".join(text for _, _, text in cues) == TEXT.strip()
    # Each cue starts at its first word's start: "ask" begins at 3.5 s after a pause.
    starts = {text.split()[0]: start for start, _, text in cues}
    assert starts.get("ask", 3.5) == 3.5
    assert cues[0][0] == 0.0 and cues[-1][1] == 5.6


def test_max_cue_chars_like_whisper_cpp_ml() -> None:
    cues = subtitle_cues(TRANSCRIPT.segments, SubtitleOptions(max_cue_chars=12))
    assert all(len(text) <= 12 for _, _, text in cues)
    assert " ".join(text for _, _, text in cues) == TEXT.strip()


@pytest.mark.parametrize("opts", [SubtitleOptions(word_cues=True), SubtitleOptions(max_cue_chars=1)])
def test_word_level_cues(opts: SubtitleOptions) -> None:
    cues = subtitle_cues(TRANSCRIPT.segments, opts)
    assert [text for _, _, text in cues] == [w.word.strip() for w in WORDS]
    assert [(s, e) for s, e, _ in cues] == [(w.start, w.end) for w in WORDS]


def test_without_word_times_the_span_is_shared_and_stays_inside_the_segment() -> None:
    cues = subtitle_cues(NO_WORDS.segments, SubtitleOptions(word_cues=True))
    assert len(cues) == len(WORDS)
    assert cues[0][0] == 10.0 and cues[-1][1] == pytest.approx(15.6, abs=0.002)
    assert all(s <= e for s, e, _ in cues)
    assert all(a[1] <= b[0] + 1e-9 for a, b in itertools.pairwise(cues))


def test_vtt_and_tsv_honour_the_same_cues() -> None:
    opts = SubtitleOptions(max_line_width=16, max_line_count=1)
    vtt = render(TRANSCRIPT, "vtt", subtitles=opts)
    assert len(re.findall(r" --> ", vtt)) == len(subtitle_cues(TRANSCRIPT.segments, opts))
    tsv = render(TRANSCRIPT, "tsv", subtitles=SubtitleOptions(max_line_width=10, max_cue_chars=30))
    rows = tsv.strip().split("\n")[1:]
    assert all("\n" not in r and len(r.split("\t")) == 3 for r in rows)
    assert all(len(r.split("\t")[2]) <= 30 for r in rows)


def test_speaker_prefix_kept_on_every_split_cue() -> None:
    t = Transcript.from_segments(
        [Segment(id=0, seek=0, start=0.0, end=5.6, text=TEXT, words=WORDS, speaker="SPEAKER 1")],
        language="en", duration=6.0)
    cues = subtitle_cues(t.segments, SubtitleOptions(max_cue_chars=30))
    assert len(cues) > 1 and all(text.startswith("[SPEAKER 1] ") for _, _, text in cues)


@pytest.mark.parametrize("kwargs", [{"max_line_width": 0}, {"max_cue_chars": -1}, {"max_line_count": 2}])
def test_bad_options_are_refused(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        SubtitleOptions(**kwargs)
