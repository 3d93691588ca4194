"""The trimmed-encoder guard and window grouping: pure logic, no weights."""

from __future__ import annotations

import numpy as np
import pytest

from stenod.engines.faster_whisper import _TrimmedEncoder
from stenod.engines.window_guard import (
    DEFAULT_TRIM_POLICY,
    FULL_WINDOW_FRAMES,
    TrimPolicy,
    clamped_to_audio,
    has_repetition_loop,
    trimmed_decode_problem,
)
from stenod.engines.windows import Span, group_spans, group_speech
from stenod.transcript import Segment, Word


def _seg(text: str, *, start: float = 0.0, end: float = 4.0, **fields: float) -> Segment:
    return Segment(id=0, seek=0, start=start, end=end, text=text, **fields)  # type: ignore[arg-type]


def test_encoder_frames_pad_floor_cap_and_even() -> None:
    policy = TrimPolicy(pad_frames=100, min_frames=1000)
    assert policy.encoder_frames(300) == 2000  # 3 s clip: a short clip's 20 s floor
    assert policy.encoder_frames(699) == 2000
    assert policy.encoder_frames(700) == 1000  # 7 s: the 10 s floor
    assert policy.encoder_frames(850) == 1000
    assert policy.encoder_frames(1200) == 1300  # 12 s clip: content + 1 s
    assert policy.encoder_frames(1201) == 1302  # always even for the stride-2 convolution
    assert policy.encoder_frames(2950) == FULL_WINDOW_FRAMES  # never more than a window
    assert policy.pays(1200) and not policy.pays(2950)


def test_clean_decode_passes() -> None:
    segments = [_seg(" He could wait no longer.", avg_logprob=-0.2, compression_ratio=1.1)]
    assert trimmed_decode_problem(segments, duration_s=4.0) is None


@pytest.mark.parametrize(
    ("segment", "reason"),
    [
        (_seg(" a", compression_ratio=2.9), "compression ratio"),
        (_seg(" a", avg_logprob=-1.4), "log-probability"),
        (_seg(" a", start=3.0, end=6.2), "after the audio"),
        (_seg(" He could wait no longer. He could wait no longer. He could wait no longer."), "repetition loop"),
    ],
)
def test_each_failure_signal_is_caught(segment: Segment, reason: str) -> None:
    problem = trimmed_decode_problem([segment], duration_s=4.0)
    assert problem is not None and reason in problem.reason
    # A loop or text past the end of the audio is worth a retry with more padding; an unsure
    # decode is not.
    assert problem.runaway == (reason != "log-probability")


def test_an_end_in_the_padding_is_moved_back_not_rejected() -> None:
    # The encoder saw 1 s of padding after the audio; the last timestamp often lands there.
    words = (Word(start=3.0, end=3.5, word=" no", probability=0.9), Word(start=3.6, end=4.9, word=" longer.", probability=0.9))
    late = _seg(" He could wait no longer.", start=0.5, end=5.2, words=words)  # type: ignore[arg-type]
    assert trimmed_decode_problem([late], duration_s=4.0) is None
    (clamped,) = clamped_to_audio([late], 4.0)
    assert (clamped.start, clamped.end) == (0.5, 4.0) and clamped.text == late.text
    assert clamped.words is not None and [(w.start, w.end) for w in clamped.words] == [(3.0, 3.5), (3.6, 4.0)]
    # A segment that starts after the audio is made up, however close.
    problem = trimmed_decode_problem([_seg(" Thank you.", start=4.1, end=4.6)], duration_s=4.0)
    assert problem is not None and "after the audio" in problem.reason


def test_token_budget_grows_with_the_clip_and_stops_loops() -> None:
    policy = TrimPolicy(tokens_per_s=8.0, min_tokens=24)
    assert policy.token_budget(1.0) == 32 and policy.token_budget(10.0) == 104
    assert policy.token_budget(28.0) == 220  # a prompt of previous text needs the rest of 448
    # A decode that used the whole budget was cut off mid-loop: never kept, whatever its text.
    cut = _seg(" one two three four five six", end=1.0, tokens=tuple(range(32)))  # type: ignore[arg-type]
    problem = trimmed_decode_problem([cut], duration_s=1.0, policy=policy)
    assert problem is not None and "token budget" in problem.reason and problem.runaway
    assert trimmed_decode_problem([_seg(" one two", end=1.0, tokens=tuple(range(31)))], duration_s=1.0, policy=policy) is None  # type: ignore[arg-type]


def test_empty_result_goes_back_to_the_full_window() -> None:
    problem = trimmed_decode_problem([], duration_s=4.0)
    assert problem is not None and problem.reason == "no segments" and not problem.runaway


def test_low_log_probability_on_silence_is_not_a_failure() -> None:
    # Whisper's rule: a window it believes silent may be unsure of its text.
    assert trimmed_decode_problem([_seg(" you", avg_logprob=-1.5, no_speech_prob=0.9)], duration_s=4.0) is None


def test_repetition_loop_needs_a_phrase_three_times_in_a_row() -> None:
    assert has_repetition_loop("thank you, thank you. Thank you!")
    assert not has_repetition_loop("no no no, I said no")  # single words repeat in real speech
    assert not has_repetition_loop("we went home and then we went home early")  # twice is speech
    assert not has_repetition_loop("")


def test_group_speech_cuts_at_pauses_within_the_window_limit() -> None:
    speech = [Span(0.5, 10.0), Span(10.8, 20.0), Span(20.5, 27.0), Span(27.4, 35.0), Span(40.0, 45.0)]
    windows = group_speech(speech, max_window_s=28.0, max_gap_s=3.0)
    assert windows == [Span(0.5, 27.0), Span(27.4, 35.0), Span(40.0, 45.0)]
    assert all(w.duration <= 28.0 for w in windows)
    # every speech span lies inside exactly one window: nothing is dropped
    for span in speech:
        assert sum(w.start <= span.start and span.end <= w.end for w in windows) == 1


def test_group_speech_splits_at_long_silence_and_skips_empty_spans() -> None:
    windows = group_speech([Span(0.0, 2.0), Span(2.0, 2.0), Span(8.0, 9.0)], max_window_s=28.0, max_gap_s=3.0)
    assert windows == [Span(0.0, 2.0), Span(8.0, 9.0)]
    assert group_speech([]) == []


def test_group_spans_keeps_each_window_s_spans() -> None:
    speech = [Span(0.0, 4.0), Span(5.0, 9.0), Span(20.0, 22.0)]
    assert group_spans(speech, max_window_s=28.0, max_gap_s=3.0) == [(Span(0.0, 4.0), Span(5.0, 9.0)), (Span(20.0, 22.0),)]
    assert len(group_spans(speech, max_window_s=0.0, max_gap_s=3.0)) == 3  # every span alone


class _Encodes:
    """Stands in for faster-whisper's WhisperModel: records the frames each encode is given."""

    sampling_rate = 16000

    def encode(self, features: np.ndarray) -> tuple[int, ...]:
        return tuple(features.shape)


def test_a_continued_window_is_encoded_trimmed() -> None:
    # generate_segments pads the rest of a clip with zeros to 3000 frames before encoding it
    encoder = _TrimmedEncoder(_Encodes(), DEFAULT_TRIM_POLICY)
    features = np.zeros((80, 3000), dtype=np.float32)
    features[:, :250] = -0.6  # 2.5 s of audio (silence is not zero in log-mel)
    assert encoder.encode(features) == (80, 2000)  # a short clip's 20 s floor
    features[:, :800] = -0.6
    assert encoder.encode(features) == (80, 1000)  # the 10 s floor
    features[:, :2500] = -0.6
    assert encoder.encode(features) == (80, 2600)  # audio + 1 s
    features[:, :] = -0.6
    assert encoder.encode(features) == (80, 3000)  # a full window stays full
    assert encoder.sampling_rate == 16000  # everything else is the model's


TS = 50364  # <|0.00|> of the multilingual vocabulary; every token from here on is a timestamp


def test_a_closed_decode_is_not_continued_on_a_short_rest() -> None:
    policy = TrimPolicy(min_resume_frames=100)
    closed = [TS, 400, 500, TS + 600, TS + 600]  # "<|0.00|> text <|12.00|><|12.00|>": nothing dropped
    unfinished = [TS, 400, 500, TS + 600, TS + 600, 700]  # text after the last timestamp was dropped
    assert not policy.resumes(closed, timestamp_begin=TS, rest_frames=40)  # 0.4 s of pause after it
    assert policy.resumes(closed, timestamp_begin=TS, rest_frames=256)  # 2.6 s: may hold a sentence
    assert policy.resumes(unfinished, timestamp_begin=TS, rest_frames=40)  # its text must be decoded again
    assert not policy.resumes(unfinished, timestamp_begin=TS, rest_frames=0)


class _Splits:
    """faster-whisper's split as ``generate_segments`` calls it, seeking to the last timestamp."""

    def _split_segments_by_timestamps(self, *, tokenizer: object, tokens: list[int], time_offset: float,
                                      segment_size: int, segment_duration: float, seek: int) -> tuple[list[dict[str, object]], int, bool]:
        last = max(t for t in tokens if t >= TS)
        return [{"tokens": tokens}], seek + 2 * (last - TS), False


class _Tokenizer:
    timestamp_begin = TS


def test_a_window_that_ends_closed_just_before_its_end_is_done() -> None:
    # The window holds 20.4 s; the decode closed its last segment at 20.28 s (seek 2028): the
    # 0.12 s left are not decoded again (an encoder pass of 10 s for nothing).
    encoder = _TrimmedEncoder(_Splits(), DEFAULT_TRIM_POLICY)
    split = encoder._split_segments_by_timestamps
    closed = [TS, 400, TS + 1014, TS + 1014]
    assert split(tokenizer=_Tokenizer(), tokens=closed, time_offset=0.0, segment_size=2040, segment_duration=20.4, seek=0)[1:] == (2040, True)
    # 2.6 s left: continued from the last timestamp, as faster-whisper does.
    closed_early = [TS, 400, TS + 989, TS + 989]
    assert split(tokenizer=_Tokenizer(), tokens=closed_early, time_offset=0.0, segment_size=2234, segment_duration=22.34, seek=0)[1:] == (1978, False)
    # Unfinished text after the last timestamp: continued however little is left.
    unfinished = [TS, 400, TS + 1014, TS + 1014, 700]
    assert split(tokenizer=_Tokenizer(), tokens=unfinished, time_offset=0.0, segment_size=2040, segment_duration=20.4, seek=0)[1:] == (2028, False)


def test_the_retry_of_a_runaway_decode_has_more_padding_and_only_where_it_pays() -> None:
    policy = TrimPolicy()
    retry = policy.for_retry(1200)  # a 12 s clip: 13 s of encoder input, 17 s for the retry
    assert retry is not None and retry.encoder_frames(1200) == policy.encoder_frames(1200) + 400
    assert retry.encoder_frames(1200) - 1200 == policy.retry_pad_frames
    # A 26 s clip would get a full window for its retry: the full-window fallback comes next.
    assert policy.pays(2600) and policy.for_retry(2600) is None
    # Already padded as much: no retry.
    assert TrimPolicy(pad_frames=500).for_retry(1200) is None
