"""Hallucination and repetition guards, border de-duplication and timestamp repair for segments.

Pure functions over :class:`~stenod.transcript.Segment` lists (times in seconds from the start of
the audio), used by :mod:`stenod.decoding.coverage` on the first decoding pass and on every
re-decoded window. Whisper's failure modes they catch:

- **Loops**: the decoder repeats a sentence it already produced (often the previous window's
  text, through ``condition_on_previous_text``), each copy with plausible but invented
  timestamps, so the speech it sits on is never decoded. Every copy of the repeated text is
  dropped, the first one included, because the first copy is usually misplaced too; the coverage
  check then decodes that time again.
- **Doubled phrases**: a clause said twice back to back, typically at the end of a window or of
  the audio; the second copy is removed (:func:`drop_doubled_phrases`).
- **Degenerate windows**: a compression ratio above the request's limit (Whisper's 2.4 by
  default; :class:`Limits`) that survived the temperature fallback ("the the the ...").
- **Text in silence**: segments that lie outside every VAD speech stretch.
- **Thin segments**: a segment whose text is far too short for the speech under it (the decoder
  skipped sentences inside its span), judged against the language and the file's own speaking
  rate; its time counts as not covered.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, replace

from stenod.decoding.speech import SpeechStretch, overlap_s
from stenod.engines.base import TranscriptionOptions
from stenod.transcript import Segment, Word

MAX_COMPRESSION_RATIO = 2.4
"""Whisper's own threshold for a failed (repetitive) window."""
MIN_AVG_LOGPROB = -1.0
"""Whisper's own log-probability threshold for a failed window."""
UNRELIABLE_TEMPERATURE = 0.5
"""Greedy decoding and the first fallback step (0.2, 0.4) failed for this window."""
REPEAT_MIN_CHARS = 12
"""Shorter texts ("Yes.", "Thank you.") legitimately recur; only longer ones count as a loop."""
REPEAT_HORIZON_S = 120.0
"""Two copies of one sentence further apart than this are taken as the speaker repeating it."""
SILENCE_MARGIN_S = 0.5
"""Whisper's segment times can be off by this much; text this close to speech is not 'in silence'."""
MIN_SPEECH_UNDER_TEXT_S = 0.2
THIN_MIN_SPEECH_S = 3.0
"""The text-density check only judges segments over at least this much speech."""
MIN_CHARS_PER_SPEECH_S = 7.0
"""Read and conversational speech runs at 10-15 letters a second (spaces and punctuation not
counted) in spaced scripts; a segment with under 7 per second of the speech under it most likely
left a sentence out (seen: a window's segment stretched over two FLEURS clips it never decoded).
A false alarm costs one re-decoded window, whose text is taken only if it covers more."""
MIN_CHARS_PER_SPEECH_S_UNSPACED = 2.5
"""The same for Chinese and Japanese (4-8 characters a second of speech)."""
THIN_FRACTION_OF_TYPICAL = 0.6
"""Slow speakers: the floor is at most this share of the file's own typical rate (the median over
its first-pass segments). A spontaneous earnings call runs at 6-9 letters a second of speech, and
the fixed 7 sent half of it to be decoded again for nothing."""
UNSPACED_LANGUAGES = frozenset({"ja", "zh", "yue", "th", "lo", "km", "my"})
MAX_CHARS_PER_S = 30.0
"""Nobody speaks faster than this (fast speech is about 20 characters a second): more text than
that for a segment's span is invented, typically in a window of a fraction of a second."""
DOUBLED_MIN_WORDS = 6
"""A run of this many words or more said twice back to back is the decoder repeating itself
(the end of a window or of the audio: "... and in a moment he was glowing. He took the dose forth
with, and in a moment he was glowing."); speakers repeat a word or two, not a clause."""
DOUBLED_MAX_WORDS = 30
BORDER_MAX_WORDS = 12
"""How many words at a window border are compared for duplicates."""

_WORD_CHARS = re.compile(r"[^\w']+", re.UNICODE)


def norm_word(token: str) -> str:
    """Lower case without punctuation: how border and repeat checks compare words."""
    return _WORD_CHARS.sub("", token.lower()).strip("'")


def norm_text(text: str) -> str:
    return " ".join(w for w in (norm_word(t) for t in text.split()) if w)


@dataclass(frozen=True, slots=True)
class Limits:
    """Whisper's failure thresholds as the request set them; ``None`` turns that check off here
    as it does in the engine's temperature fallback.

    ``no_speech`` is applied by the engines (a window over it with a log-probability under
    ``log_prob`` is dropped as silence before the guards see it); it is kept here so the one
    object carries the request's three thresholds."""

    compression_ratio: float | None = MAX_COMPRESSION_RATIO
    log_prob: float | None = MIN_AVG_LOGPROB
    no_speech: float | None = 0.6

    @classmethod
    def of(cls, options: TranscriptionOptions) -> Limits:
        return cls(options.compression_ratio_threshold, options.log_prob_threshold, options.no_speech_threshold)


DEFAULT_LIMITS = Limits()


def is_unreliable(segment: Segment, limits: Limits = DEFAULT_LIMITS) -> bool:
    """Decoded only after the temperature fallback went to sampling, or with a log-probability
    below the request's limit: the text is likely wrong and is decoded again in a shorter window,
    which usually succeeds greedily."""
    if segment.temperature >= UNRELIABLE_TEMPERATURE:
        return True
    return limits.log_prob is not None and segment.avg_logprob < limits.log_prob


def is_degenerate(segment: Segment, limits: Limits = DEFAULT_LIMITS) -> bool:
    return limits.compression_ratio is not None and segment.compression_ratio > limits.compression_ratio


def drop_loops(segments: list[Segment], limits: Limits = DEFAULT_LIMITS) -> tuple[list[Segment], list[Segment]]:
    """Remove every copy of a text that occurs twice or more within :data:`REPEAT_HORIZON_S`,
    and degenerate windows. Returns (kept, dropped)."""
    drop: set[int] = set()
    keys = [norm_text(s.text) for s in segments]
    for i, key in enumerate(keys):
        if is_degenerate(segments[i], limits):
            drop.add(i)
        if len(key) < REPEAT_MIN_CHARS:
            continue
        for j in range(i + 1, len(segments)):
            if segments[j].start - segments[i].end > REPEAT_HORIZON_S:
                break
            if keys[j] == key or (len(keys[j]) >= REPEAT_MIN_CHARS and (key in keys[j] or keys[j] in key)):
                drop.update((i, j))
    kept = [s for i, s in enumerate(segments) if i not in drop]
    dropped = [s for i, s in enumerate(segments) if i in drop]
    return kept, dropped


def drop_doubled_phrases(segments: list[Segment]) -> list[Segment]:
    """Remove the second copy of every run of :data:`DOUBLED_MIN_WORDS` or more words that is
    repeated right after itself, within a segment or across the border of two consecutive ones
    (case and punctuation ignored). Segments left without words are dropped; a segment's word
    timestamps lose the same words."""
    tokens: list[tuple[int, int, str]] = []  # (segment index, token index in its text, norm word)
    split = [seg.text.split() for seg in segments]
    for i, toks in enumerate(split):
        tokens.extend((i, k, w) for k, t in enumerate(toks) if (w := norm_word(t)))
    words = [w for _, _, w in tokens]
    drop: set[int] = set()
    i = 0
    while i < len(words):
        for n in range(min(DOUBLED_MAX_WORDS, (len(words) - i) // 2), DOUBLED_MIN_WORDS - 1, -1):
            if words[i] == words[i + n] and words[i:i + n] == words[i + n:i + 2 * n]:
                drop.update(range(i + n, i + 2 * n))
                i += 2 * n - 1
                break
        i += 1
    if not drop:
        return segments
    gone: dict[int, set[int]] = {}
    for t in drop:
        seg_index, token_index, _ = tokens[t]
        gone.setdefault(seg_index, set()).add(token_index)
    out: list[Segment] = []
    for i, seg in enumerate(segments):
        if i not in gone:
            out.append(seg)
            continue
        kept = [t for k, t in enumerate(split[i]) if k not in gone[i]]
        if not any(norm_word(t) for t in kept):
            continue
        words_kept = seg.words
        if seg.words is not None:
            # word timestamps follow the text's words one for one (as in trim_leading_duplicate)
            normed = [k for k, t in enumerate(split[i]) if norm_word(t)]
            lost = {normed.index(k) for k in gone[i]}
            timed = [w for w in seg.words if norm_word(w.word)]
            words_kept = tuple(w for j, w in enumerate(timed) if j not in lost)
        out.append(replace(seg, text=" " + " ".join(kept), words=words_kept))
    return out


def repeats_neighbour(segment: Segment, neighbours: list[Segment]) -> bool:
    """Whether a re-decoded segment only repeats text already kept nearby (the prompt echoed)."""
    key = norm_text(segment.text)
    if len(key) < REPEAT_MIN_CHARS:
        return False
    for other in neighbours:
        if abs(other.start - segment.start) > REPEAT_HORIZON_S:
            continue
        other_key = norm_text(other.text)
        if len(other_key) >= REPEAT_MIN_CHARS and (key in other_key or other_key in key):
            return True
    return False


def in_silence(segment: Segment, speech: list[SpeechStretch]) -> bool:
    """Whether ``segment`` has (next to) no VAD speech under it."""
    padded = [SpeechStretch(s.start - SILENCE_MARGIN_S, s.end + SILENCE_MARGIN_S) for s in speech]
    under = overlap_s(segment.start, max(segment.end, segment.start + 0.01), padded)
    return under < min(MIN_SPEECH_UNDER_TEXT_S, 0.5 * max(segment.end - segment.start, 0.01))


def letters(segment: Segment) -> int:
    """Letters of the text (normalized, no spaces): the measure of how much was said."""
    return len(norm_text(segment.text).replace(" ", ""))


def thin_floor(language: str | None, segments: Sequence[Segment] = (), speech: Sequence[SpeechStretch] = ()) -> float:
    """Letters per second of speech under which a segment counts as thin: the language's floor,
    lowered to :data:`THIN_FRACTION_OF_TYPICAL` of the median rate of ``segments`` (those over at
    least :data:`THIN_MIN_SPEECH_S` of ``speech``) when the speaker is slow."""
    lang = (language or "en").split("-")[0].lower()
    floor = MIN_CHARS_PER_SPEECH_S_UNSPACED if lang in UNSPACED_LANGUAGES else MIN_CHARS_PER_SPEECH_S
    typical = typical_rate(segments, speech)
    return floor if typical is None else min(floor, THIN_FRACTION_OF_TYPICAL * typical)


def typical_rate(segments: Sequence[Segment], speech: Sequence[SpeechStretch]) -> float | None:
    """Median letters per second of speech of ``segments`` (those over at least
    :data:`THIN_MIN_SPEECH_S` of ``speech``): this speaker's rate in this language; ``None``
    without such segments."""
    stretches = list(speech)
    rates = [
        letters(seg) / under
        for seg in segments
        if (under := overlap_s(seg.start, seg.end, stretches)) >= THIN_MIN_SPEECH_S
    ]
    return statistics.median(rates) if rates else None


def is_thin(segment: Segment, speech: list[SpeechStretch], language: str | None, *, floor: float | None = None) -> bool:
    """Whether the text is far too short for the speech under the segment's span (under ``floor``
    letters a second; default: the language's :func:`thin_floor`)."""
    under = overlap_s(segment.start, segment.end, speech)
    if under < THIN_MIN_SPEECH_S:
        return False
    return letters(segment) < (thin_floor(language) if floor is None else floor) * under


def is_too_dense(segment: Segment) -> bool:
    """Whether the segment holds more text than anyone can say in its span (at least 1 s)."""
    return letters(segment) > MAX_CHARS_PER_S * max(segment.end - segment.start, 1.0)


def trim_leading_duplicate(previous: Segment, segment: Segment) -> Segment | None:
    """Drop words at the start of ``segment`` that repeat the end of ``previous`` (a window border
    decoded twice). Returns the trimmed segment, or ``None`` when nothing of it is left."""
    prev_words = [w for w in (norm_word(t) for t in previous.text.split()) if w][-BORDER_MAX_WORDS:]
    tokens = [t for t in segment.text.split() if norm_word(t)]
    words = [norm_word(t) for t in tokens]
    k = _overlap(prev_words, words)
    if k == 0:
        return segment
    if k >= len(tokens):
        return None
    text = " " + " ".join(tokens[k:])
    seg_words = segment.words
    start = segment.start
    if seg_words:
        kept = [w for w in seg_words if norm_word(w.word)][k:]
        seg_words = tuple(kept)
        if kept:
            start = max(start, kept[0].start)
    return replace(segment, text=text, words=seg_words, start=start)


def _overlap(tail: list[str], head: list[str]) -> int:
    """Longest k with ``tail[-k:] == head[:k]``; a single shared word counts only when it is not
    a short function word ("the", "and"), which legitimately ends one phrase and starts another.
    A number is never a function word: "2002" after "... Oravec 2002" is the border decoded twice
    (FLEURS de, a citation read once and transcribed "2002 2002 2002")."""
    for k in range(min(len(tail), len(head)), 0, -1):
        if tail[-k:] == head[:k] and (k >= 2 or len(head[0]) >= 5 or any(c.isdigit() for c in head[0])):
            return k
    return 0


def repair_times(segments: list[Segment]) -> list[Segment]:
    """Time order, no overlaps, words inside their segment and in order; ids renumbered."""
    ordered = sorted(segments, key=lambda s: (s.start, s.end))
    repaired: list[Segment] = []
    previous_end = 0.0
    for index, seg in enumerate(ordered):
        start = round(max(seg.start, previous_end), 3)
        end = round(max(seg.end, start), 3)
        words = _clamp_words(seg.words, start, end) if seg.words is not None else None
        repaired.append(replace(seg, id=index, start=start, end=end, words=words))
        previous_end = end
    return repaired


def _clamp_words(words: tuple[Word, ...], start: float, end: float) -> tuple[Word, ...]:
    out: list[Word] = []
    previous = start
    for w in words:
        w_start = round(min(max(w.start, previous), end), 3)
        w_end = round(min(max(w.end, w_start), end), 3)
        out.append(replace(w, start=w_start, end=w_end))
        previous = w_end
    return tuple(out)
