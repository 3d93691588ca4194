"""Segment guards and window cutting, on synthetic segments (no model)."""

from __future__ import annotations

import itertools

import pytest

from stenod.decoding.coverage import (
    EDGE_SLACK_S,
    LEAD_S,
    LEAD_SHARE,
    MAX_NEW_TOKENS,
    TAIL_S,
    _guard,
    _Judge,
    _onto_speech,
    _token_budget,
    _uncovered,
    _Window,
    _windows,
)
from stenod.decoding.guards import (
    Limits,
    drop_doubled_phrases,
    drop_loops,
    in_silence,
    is_thin,
    is_too_dense,
    is_unreliable,
    repair_times,
    thin_floor,
    trim_leading_duplicate,
)
from stenod.decoding.speech import SpeechStretch
from stenod.engines import TranscriptionOptions
from stenod.transcript import Segment, Word


def seg(start: float, end: float, text: str, *, words: tuple[Word, ...] | None = None, **kw: float) -> Segment:
    return Segment(id=0, seek=0, start=start, end=end, text=text, words=words, **kw)  # type: ignore[arg-type]


LOOP = " The hospital has followed protocol for infection control."


def test_every_copy_of_a_loop_is_dropped_and_other_text_kept() -> None:
    segments = [seg(0, 8, " However, due to slow channels."), seg(8, 18, LOOP), seg(18, 28, LOOP), seg(28, 38, LOOP.upper()),
                seg(38, 40, " Yes."), seg(40, 41, " Yes.")]
    kept, dropped = drop_loops(segments)
    assert [s.text for s in kept] == [" However, due to slow channels.", " Yes.", " Yes."]
    assert len(dropped) == 3


def test_degenerate_window_is_dropped() -> None:
    kept, _ = drop_loops([seg(0, 5, " the the the the the the the the", compression_ratio=3.1)])
    assert kept == []


def test_text_over_silence_and_impossible_density() -> None:
    speech = [SpeechStretch(10.0, 20.0)]
    assert in_silence(seg(30, 35, " Thank you."), speech)
    assert not in_silence(seg(19.8, 22, " end of it."), speech)
    assert is_too_dense(seg(54.4, 54.9, " The hospital has followed protocol for infection of others. The hospital"))
    assert not is_too_dense(seg(0, 4, " Printing, in the only sense with which we are"))


def test_thin_segment_left_speech_out() -> None:
    speech = [SpeechStretch(0.0, 20.0)]
    assert is_thin(seg(0, 20, " Hello there."), speech, "en")
    assert not is_thin(seg(0, 6, " Printing, in the only sense with which we are at present concerned"), speech, "en")
    assert not is_thin(seg(0, 12, " 印刷术在我们目前所关心的唯一意义上不同于大多数艺术和手工艺以及展览中所代表的"), speech, "zh")


def test_duplicate_words_at_a_window_border_are_removed() -> None:
    before = seg(0, 5, " styles in the west could lag behind")
    after = seg(5, 9, " lag behind by 25 to 30 years.", words=(
        Word(5.0, 5.2, " lag", 0.9), Word(5.2, 5.5, " behind", 0.9), Word(5.6, 5.8, " by", 0.9), Word(5.8, 9.0, " years.", 0.9)))
    trimmed = trim_leading_duplicate(before, after)
    assert trimmed is not None
    assert trimmed.text == " by 25 to 30 years."
    assert trimmed.start == 5.6
    assert trim_leading_duplicate(before, seg(5, 6, " lag behind")) is None
    # one short shared word is not a duplicate: "the" may end one phrase and start the next
    assert trim_leading_duplicate(seg(0, 1, " over the"), seg(1, 2, " the end")) == seg(1, 2, " the end")
    # a number is not a function word: a year decoded again at the border is a duplicate
    assert trim_leading_duplicate(seg(0, 1, " Eurowitz 2002"), seg(1, 2, " 2002")) is None
    assert trim_leading_duplicate(seg(0, 1, " printed in 1465."), seg(1, 3, " 1465. In Rome")) == seg(1, 3, " In Rome")


def test_times_made_monotonic_with_words_inside() -> None:
    repaired = repair_times([
        seg(5, 9, " b", words=(Word(4.0, 6.0, " b", 1.0), Word(8.0, 9.5, " c", 1.0))),
        seg(0, 6, " a"),
    ])
    assert [s.id for s in repaired] == [0, 1]
    assert [(s.start, s.end) for s in repaired] == [(0, 6), (6, 9)]
    words = repaired[1].words or ()
    assert all(6 <= w.start <= w.end <= 9 for w in words)
    assert words[0].end <= words[1].start


def test_windows_are_cut_at_pauses_and_bounded() -> None:
    stretches = [SpeechStretch(float(i * 5), float(i * 5 + 4)) for i in range(12)]  # 4 s of speech, 1 s pauses
    windows = _windows(stretches, 20.0)
    assert all(w.end - w.start <= 20.0 for w in windows)
    assert [s for w in windows for s in w.stretches] == stretches  # every stretch once, in order, none split
    assert len(_windows(stretches, 0.0)) == len(stretches)
    # a long silence starts a new window even when the window has room
    assert len(_windows([SpeechStretch(0, 2), SpeechStretch(10, 12)], 28.0, join_pause_s=3.0)) == 2


def test_windows_reach_into_the_pauses_but_not_into_other_speech() -> None:
    # VAD misses soft onsets: a window starts up to LEAD_S early and ends up to TAIL_S late, in
    # the pause only, and two windows never share a stretch of the pause between them.
    speech = [SpeechStretch(1.0, 9.0), SpeechStretch(14.0, 20.0), SpeechStretch(20.3, 26.0), SpeechStretch(40.0, 44.0)]
    windows = _windows(speech, 10.0, join_pause_s=3.0, speech=speech, duration=45.0)
    expected = [(0.0, 9.0 + TAIL_S), (14.0 - LEAD_S, 20.0 + (1 - LEAD_SHARE) * 0.3), (20.3 - LEAD_SHARE * 0.3, 26.0 + TAIL_S),
                (40.0 - LEAD_S, 45.0)]
    assert [(w.start, w.end) for w in windows] == [pytest.approx(e, abs=1e-3) for e in expected]
    assert all(a.end <= b.start for a, b in itertools.pairwise(windows))
    # re-decoding a subset: bounded by the neighbouring speech the window does not hold
    (only,) = _windows([speech[2]], 10.0, speech=speech, duration=45.0)
    assert speech[1].end <= only.start < speech[2].start and speech[2].end < only.end <= speech[3].start
    # without the speech list: the stretches' own span, as before
    first = _windows(speech, 10.0, join_pause_s=3.0)[0]
    assert (first.start, first.end) == (1.0, 9.0)


def test_first_pass_times_stay_near_the_speech_and_invented_lines_go() -> None:
    window = _Window(12.0, 21.0, (SpeechStretch(14.0, 20.0),))
    moved = _onto_speech(seg(12.0, 17.0, " To the north and within easy reach"), window)
    assert (moved.start, moved.end) == (14.0 - EDGE_SLACK_S, 17.0)
    assert _onto_speech(seg(18.0, 21.0, " is the town."), window).end == 20.0 + EDGE_SLACK_S
    # a sentence of the prompt repeated in the last 0.06 s of a window
    speech = [SpeechStretch(0.0, 10.0)]
    kept = _guard([seg(0.0, 9.9, " I told him what Snap and I had learned."),
                   seg(9.9, 9.96, " I also told him what snap and I had learned.")], speech, Limits(), drop_silent=True)
    assert [s.start for s in kept] == [0.0]


def test_uncovered_speech_is_found() -> None:
    speech = [SpeechStretch(0, 5), SpeechStretch(5.5, 10), SpeechStretch(10.5, 11.0)]
    segments = [seg(0, 5.2, " Printing, in the only sense with which we are at present concerned")]
    assert _uncovered(segments, speech, _Judge(Limits(), thin_floor("en"))) == [SpeechStretch(5.5, 10), SpeechStretch(10.5, 11.0)]


def test_a_segment_that_runs_on_over_a_long_pause_covers_only_what_its_text_can_hold() -> None:
    # Clip A (12 s of speech), a 2.5 s pause, clip B (4 s). The segment's 160 letters fit clip A
    # at this speaker's 13 letters a second: its end in clip B is a stretched timestamp, and
    # clip B is speech to decode again.
    speech = [SpeechStretch(0.0, 12.0), SpeechStretch(14.5, 18.5)]
    judge = _Judge(Limits(), thin_floor("en"), typical_rate=13.0)
    text = " " + " ".join(["abcdefghij"] * 16)  # 160 letters
    stretched = seg(0.0, 18.5, text)
    assert _uncovered([stretched], speech, judge) == [SpeechStretch(14.5, 18.5)]
    # With 260 letters the text needs clip B too (21.7 letters a second over clip A alone).
    full = seg(0.0, 18.5, " " + " ".join(["abcdefghij"] * 26))
    assert _uncovered([full], speech, judge) == []
    # A short pause, less than 1 s of speech after it, or no rate for this file: the whole span.
    assert _uncovered([stretched], [SpeechStretch(0.0, 12.0), SpeechStretch(13.5, 18.5)], judge) == []
    assert _uncovered([seg(0.0, 15.2, text)], [SpeechStretch(0.0, 12.0), SpeechStretch(14.5, 15.2)], judge) == []
    assert _uncovered([stretched], speech, _Judge(Limits(), thin_floor("en"))) == []


def test_guards_use_the_request_thresholds() -> None:
    shaky = seg(0, 4, " Printing, in the only sense", avg_logprob=-1.3)
    assert is_unreliable(shaky)
    assert not is_unreliable(shaky, Limits(log_prob=-1.5))
    assert not is_unreliable(shaky, Limits(log_prob=None))  # the check turned off, as in the engine
    assert is_unreliable(seg(0, 4, " Printing", temperature=0.6), Limits(log_prob=None))  # sampled text never counts
    repetitive = [seg(0, 5, " the the the the the the the the", compression_ratio=3.1)]
    assert drop_loops(repetitive, Limits(compression_ratio=3.5))[0] == repetitive
    assert drop_loops(repetitive, Limits(compression_ratio=None))[0] == repetitive
    assert drop_loops(repetitive, Limits(compression_ratio=2.0))[0] == []


def test_thin_floor_follows_a_slow_speaker() -> None:
    speech = [SpeechStretch(0.0, 40.0)]
    slow = [seg(i * 10.0, i * 10.0 + 10.0, " we are gathered here to review the results of the year") for i in range(4)]  # 4.5 letters/s
    floor = thin_floor("en", slow, speech)
    assert floor < thin_floor("en")
    assert not any(is_thin(s, speech, "en", floor=floor) for s in slow)
    assert is_thin(seg(0, 10, " we are here"), speech, "en", floor=floor)  # well below the speaker's own rate
    assert thin_floor("en", [seg(0, 10, " " + "printing in the only sense " * 8)], speech) == thin_floor("en")  # fast: never raised


def test_token_budget_follows_the_window_length() -> None:
    options = TranscriptionOptions()
    short, full = _token_budget(_Window(0.0, 1.3, ()), options), _token_budget(_Window(0.0, 24.0, ()), options)
    assert short is not None and full is not None
    assert 20 < short < 60  # room for a short sentence, not for a 448-token loop
    assert full == MAX_NEW_TOKENS
    assert _token_budget(_Window(0.0, 1.3, ()), TranscriptionOptions(hotwords="Zoom")) is None  # hotwords take prompt room


def test_a_clause_said_twice_back_to_back_loses_its_second_copy() -> None:
    a = seg(169.4, 174.7, " Looked up and discovered a dark young man. He took the dose")
    b = seg(174.7, 177.1, " forth with, and in a moment he was glowing. He took the dose forth with, and in a moment he was glowing.",
            words=tuple(Word(174.7 + i * 0.1, 174.75 + i * 0.1, w, 0.9) for i, w in enumerate(
                " forth with, and in a moment he was glowing. He took the dose forth with, and in a moment he was glowing.".split())))
    out = drop_doubled_phrases([a, b])
    assert [s.text for s in out] == [a.text, " forth with, and in a moment he was glowing."]
    assert [w.word for w in out[1].words or ()] == "forth with, and in a moment he was glowing.".split()
    # a copy that makes up a whole segment goes with it; short repeats ("no, no") stay
    c = seg(177.1, 180.0, " He took the dose forth with, and in a moment he was glowing.")
    assert drop_doubled_phrases([seg(160, 169, " He took the dose forth with, and in a moment he was glowing."), c])[1:] == []
    plain = [seg(0, 3, " No, no, no, I said it was the one, the one.")]
    assert drop_doubled_phrases(plain) == plain
