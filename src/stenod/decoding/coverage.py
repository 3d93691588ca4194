"""Decode with a coverage check: no VAD speech stretch is left without text, no text sits in silence.

Whisper's sequential long-form decoding jumps over speech (a window's last timestamp moves the
seek past sentences that were never decoded), ends windows early, and loops on text it already
produced (issue 11: ten FLEURS clips with half-second pauses lost half their words, and which
files fail is chaotic). So:

1. First pass. Audio on which VAD is on (``options.vad_enabled``: over 30 s by default) is
   decoded in windows of up to :data:`FIRST_WINDOW_MAX_S` made of whole speech stretches
   (:func:`stenod.decoding.speech.find_speech`, cut at pauses of 0.3 s, never mid-word; a window
   reaches :data:`LEAD_S` / :data:`TAIL_S` into the pauses around it, for onsets VAD missed), each
   with the tail of the text so far as its prompt (when ``condition_on_previous_text``) and the
   language of the first window; a failure in one window cannot push the next one off course.
   Windows run in waves of as many as the engine has workers (the text before a wave prompts
   each of its windows), so one long request keeps every CTranslate2 worker busy.
   Each window is one ``engine.transcribe`` call on a short array, which faster-whisper decodes
   with its encoder trimmed to the window, and with a token budget (:data:`TOKENS_PER_S`) so a
   loop stops early. Shorter audio, and faster-whisper's batched pipeline (``batch_size`` > 1), take one
   ``engine.transcribe`` call on the whole array as before.
2. Guards (:mod:`stenod.decoding.guards`): drop loops and degenerate windows; drop text in
   silence when VAD is on; segments decoded only by sampling (temperature fallback), with a
   log-probability below Whisper's limit, or far too short for the speech under them do not
   count as covering it.
3. Every speech stretch left mostly uncovered is decoded again, in windows of up to
   :data:`WINDOW_MAX_S` made of neighbouring uncovered stretches, with the preceding text as the
   prompt and word timestamps (so that a segment cannot claim speech it skipped), greedily and
   with the token budget. A window's result replaces the segments under it only when it covers
   more speech; stretches still uncovered are then tried once more one by one. Windows with
   under :data:`MIN_REDECODE_S` of speech are not tried (Whisper invents text for them).
4. Words repeated across a window border are removed, segments are put in time order without
   overlaps and words are clamped inside their segments.

docs/ENGINES.md "Long-form coverage" has the measurements (accuracy per file, speed).
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import numpy as np

from stenod.decoding.guards import (
    Limits,
    drop_doubled_phrases,
    drop_loops,
    in_silence,
    is_degenerate,
    is_thin,
    is_too_dense,
    is_unreliable,
    letters,
    repair_times,
    repeats_neighbour,
    thin_floor,
    trim_leading_duplicate,
    typical_rate,
)
from stenod.decoding.speech import SAMPLE_RATE, SpeechStretch, find_speech, overlap_s
from stenod.engines.base import (
    CancelledError,
    Engine,
    ProgressCallback,
    SegmentCallback,
    TranscriptionOptions,
    WindowGroup,
)
from stenod.engines.window_guard import TOKENS_BASE, TOKENS_PER_S
from stenod.engines.windows import group_spans
from stenod.transcript import Segment, Transcript, Word

logger = logging.getLogger(__name__)

WINDOW_MAX_S = 20.0
"""Longest re-decoding window: room for the context of neighbouring stretches, short enough that
Whisper does not stop early inside it."""
WINDOW_JOIN_PAUSE_S = 2.0
"""Uncovered stretches closer than this share a window."""
MIN_UNCOVERED_S = 0.4
UNCOVERED_FRACTION = 0.5
"""A stretch is re-decoded when at least half of it (or :data:`UNCOVERED_ABS_S`) has no text."""
UNCOVERED_ABS_S = 1.0
CLAIM_PAUSE_S = 2.0
"""A pause this long inside a segment without word times may end what it covers (:func:`_claim_end`)."""
CLAIM_RATE_SLACK = 1.35
"""How much faster than the file's own rate a segment's text may be for the speech before its
long pause to hold it all (:func:`_claim_end`)."""
MIN_GAIN_S = 0.3
"""A re-decoded window replaces the old text only when it covers this much more speech."""
PROMPT_MAX_CHARS = 200
"""Tail of the preceding text passed as the prompt of a re-decoded window."""
_PROGRESS_CAP = 0.99
REDECODE_TEMPERATURE_STEPS = 1
MIN_REDECODE_S = 1.0
"""A re-decoded window needs at least this much speech: less holds a word or two at most, Whisper
mostly invents text for it, and each try costs an encoder pass of at least 10 s, plus a full
30 s one each time the engine's guard sends the result back (measured: a 0.5 s stretch, 2.7 and
7.2 CPU s, nothing recovered either time)."""
WINDOWED_FIRST_PASS = True
"""First pass in VAD windows cut at pauses (True) or one ``engine.transcribe`` call on the whole
array followed by the check (False); compared in docs/ENGINES.md "Long-form coverage"."""
FIRST_WINDOW_MAX_S = 24.0
"""First-pass windows: neighbouring speech stretches joined up to this length. Each window's
encoder input is trimmed to its audio (faster-whisper, :mod:`stenod.engines.window_guard`), so a
shorter window costs about as much encoder time per second as a full one, and Whisper skips less
speech in it than in a full window (FLEURS en, base: 29 s windows left five stretches to decode
again, 2.8x the old path's CPU time; 24 s: two, 1.2x; 15 s: none, 0.6x, but more cuts inside
sentences cost words on spontaneous speech: earnings call 3.3 % WER against 0 % with 24 s)."""
MAX_WAVE = 8
"""Most first-pass windows of one request decoded at once."""
WINDOWS_PER_BATCH = 3
"""First-pass windows per worker in a wave where the engine batches (``EngineInfo.max_batch``):
the windows of a wave share one encoder and one decoder call per worker. Measured on 2 cores
(base, int8, 1 thread per worker, 21 s windows): the decoder's cost per token and window falls
from 12.8 ms alone to 9.3 ms in batches of 2, 7.1 in 4 and 5.7 in 8, while the encoder's stays
at 0.9 s a window; 3 gets most of that gain, and each window of a wave is prompted with the text
before the wave, which grows staler with its size."""
_GROUP_IDS = itertools.count()
"""Ids of window groups (unique in the process, so two requests' waves never share one)."""
FIRST_JOIN_PAUSE_S = 3.0
"""A longer pause starts a new first-pass window: silence is never decoded on its own."""
LEAD_S = 2.0
"""A window starts up to this much before its first VAD stretch, into the pause before it (at
most :data:`LEAD_SHARE` of that pause, so it never reaches the speech before). Silero misses soft
onsets: on FLEURS it put the start of a sentence 0.8-2.5 s after the speaker began ("To the
north", "A parte central da meditação"), and a window cut at the VAD start lost those words,
which the coverage check cannot see either (VAD found no speech there)."""
LEAD_SHARE = 0.75
"""Share of the pause between two windows that goes to the later window's lead (the rest to the
earlier one's tail): onsets are what VAD misses. Over the 20 files of the benchmark and its
sweep, half the pause gave four files over 1.2x clipwise WER against one (docs/ENGINES.md)."""
TAIL_S = 1.0
"""A window also ends up to this much after its last stretch (at most the rest of the pause
after the next window's lead), for soft sentence ends."""
EDGE_SLACK_S = 0.5
"""Segments of a first-pass window start at most this long before its first VAD stretch and end
at most this long after its last one (the speech VAD cut off is this close to it)."""
# The token budget of a window: TOKENS_BASE plus TOKENS_PER_S per second of its audio
# (stenod.engines.window_guard, the same rate as the trimmed path's guard). It only stops runaway
# loops, which otherwise generate the model's 448 tokens at every fallback temperature (a 1.3 s
# re-decoded window cost 12 CPU s, a 5 s one 39 s). A window cut short by the budget is continued
# from its last timestamp by the engine, so no text is lost.
MAX_NEW_TOKENS = 200
"""Budget ceiling: with faster-whisper's longest previous-text prompt (223 tokens) and the start
tokens it stays within the model's 448."""


@dataclass(frozen=True, slots=True)
class _Window:
    start: float
    end: float
    stretches: tuple[SpeechStretch, ...]


@dataclass(frozen=True, slots=True)
class _Judge:
    """What counts as covering speech in this file: the request's thresholds and the letters per
    second of speech under which a segment is thin (:func:`~stenod.decoding.guards.thin_floor`)."""

    limits: Limits
    thin_floor: float
    typical_rate: float | None = None
    """This file's median letters per second of speech (:func:`~stenod.decoding.guards.typical_rate`)."""


def transcribe_with_coverage(
    engine: Engine,
    audio: np.ndarray,
    options: TranscriptionOptions,
    *,
    speech: list[SpeechStretch] | None = None,
    progress: ProgressCallback | None = None,
    on_segment: SegmentCallback | None = None,
    cancel: threading.Event | None = None,
) -> Transcript:
    """Transcribe ``audio`` with ``engine`` so that every VAD speech stretch is covered by text.

    The one per-array transcription path of every entry point (CLI, server, batch, jobs: they
    reach it through :func:`stenod.service.transcription.transcribe_decoded`). Engine-agnostic:
    it only calls ``engine.transcribe`` (on the whole array, then on windows of at most
    :data:`WINDOW_MAX_S`) and reads segment and word timestamps, so it works for faster-whisper
    (sequential or batched) and whisper.cpp alike.

    Contract, for callers that cut long audio into chunks or batch short clips:

    - ``audio`` is 16 kHz mono float32 of any length; a chunk of several minutes is fine.
      Chunk callers should cut at pauses and pass ``options`` with the previous chunk's
      ``language`` and the tail of its text as ``initial_prompt``; times in the result are
      seconds from the start of ``audio`` (add the chunk's offset).
    - ``speech``: VAD stretches of ``audio`` if the caller already has them (same times as
      ``audio``); ``None`` runs :func:`~stenod.decoding.speech.find_speech` here.
    - With ``options.vad`` False (``--no-vad``) or ``options.without_timestamps`` (no times to
      check) this is exactly ``engine.transcribe``.
    - Text in silence is removed only where VAD is on for this audio
      (``options.vad_enabled``); on short clips the engine's text is kept and missing speech is
      added.
    - ``on_segment``: where the first pass is one engine call (clips up to the VAD length, or
      ``batch_size`` > 1) its segments are passed on live as the engine decodes them, and segments
      the check adds follow once it is done (the returned transcript has them in time order).
      With windowed first passes (long audio) the final segments are passed in time order once
      the check is done (a re-decoded window belongs before later first-pass segments).
      ``progress`` is capped below 100 % until then.
    - Thread safety: as ``engine.transcribe``; all calls run on the caller's thread, one at a time.

    Returns:
        The transcript: segments in time order, not overlapping, words inside their segments,
        ids renumbered; ``language`` and ``language_probability`` from the first pass.

    Raises:
        Whatever ``engine.transcribe`` raises (UnsupportedParameterError, CancelledError, ...).
    """
    duration = len(audio) / SAMPLE_RATE
    if options.vad is False or options.without_timestamps or len(audio) == 0:
        return engine.transcribe(audio, options, progress=progress, on_segment=on_segment, cancel=cancel)
    stretches = find_speech(audio, threshold=options.vad_threshold) if speech is None else speech
    streamed: list[Segment] = []
    if WINDOWED_FIRST_PASS and options.vad_enabled(duration) and options.batch_size <= 1:
        first = _decode_windows(engine, audio, options, stretches, progress=_capped(progress), cancel=cancel)
    else:
        # One engine call: its segments stream to the caller as they are decoded (an SSE client
        # sees the first delta while the rest is still running); the check below can only add
        # recovered speech, sent after them, or drop a looping segment (the final text rules).
        first = engine.transcribe(
            audio, options, progress=_capped(progress), cancel=cancel,
            on_segment=None if on_segment is None else _recording(on_segment, streamed),
        )
    limits = Limits.of(options)
    segments = _guard(list(first.segments), stretches, limits, drop_silent=options.vad_enabled(duration))
    judge = _Judge(limits, thin_floor(first.language, segments, stretches), typical_rate(segments, stretches))
    # Word times of re-decoded windows make their coverage exact (a window's segment can claim
    # speech it skipped); they cost one alignment pass per window and are dropped again below
    # unless the caller asked for them.
    # Re-decoded windows are greedy only: a short window that fails greedily yields sampled text
    # that the coverage comparison mostly rejects anyway (measured: full fallback on 1-2 s
    # windows cost as much as the rest of the file, one step of it still 19 CPU s on a 5 s one).
    redo = replace(options, vad=False, language=first.language, batch_size=0, word_timestamps=True,
                   temperature=options.temperature[:REDECODE_TEMPERATURE_STEPS])
    segments = _fill_gaps(engine, audio, redo, segments, stretches, judge, cancel=cancel)
    final = repair_times(drop_doubled_phrases(segments))  # also across re-decoded windows' borders
    if not options.word_timestamps:
        final = [replace(s, words=None) for s in final]
    if on_segment is not None:
        sent = Counter(seg.text for seg in streamed)
        for seg in final:
            if sent[seg.text] > 0:
                sent[seg.text] -= 1  # already streamed live by the first pass
            else:
                on_segment(seg)
    if progress is not None:
        progress(duration, duration)
    return first.with_segments(final)


def _recording(on_segment: SegmentCallback, streamed: list[Segment]) -> SegmentCallback:
    def forward(seg: Segment) -> None:
        streamed.append(seg)
        on_segment(seg)

    return forward


def _decode_windows(
    engine: Engine,
    audio: np.ndarray,
    options: TranscriptionOptions,
    speech: list[SpeechStretch],
    *,
    progress: ProgressCallback | None,
    cancel: threading.Event | None,
) -> Transcript:
    duration = len(audio) / SAMPLE_RATE
    windows = _windows(speech, FIRST_WINDOW_MAX_S, join_pause_s=FIRST_JOIN_PAUSE_S, speech=speech, duration=duration)
    segments: list[Segment] = []
    language = options.language
    probability = 1.0 if language else 0.0

    def decode(window: _Window, prompt: str | None, language: str | None, group: WindowGroup | None) -> Transcript:
        return engine.transcribe(
            audio[int(window.start * SAMPLE_RATE): int(window.end * SAMPLE_RATE)],
            replace(options, vad=False, language=language, initial_prompt=prompt, batch_size=0,
                    max_new_tokens=_token_budget(window, options), group=group),
            cancel=cancel,
        )

    # Windows run ``wave`` at a time, so one long request keeps every CTranslate2 worker busy
    # (2 cores: 2 workers x 1 thread) instead of one. Each window of a wave gets the text before
    # the wave as its prompt: one window staler than one after another. The first window runs
    # alone when the language must be detected; the rest use its language.
    info = engine.info()
    wave = max(1, min(MAX_WAVE, info.max_concurrency * min(info.max_batch, WINDOWS_PER_BATCH)))
    with ThreadPoolExecutor(max_workers=wave, thread_name_prefix="stenod-window") as pool:
        done = 0
        while done < len(windows):
            if cancel is not None and cancel.is_set():
                raise CancelledError("transcription cancelled")
            batch = windows[done: done + (1 if language is None else _wave_size(len(windows) - done, wave))]
            prompt = _prompt(segments, options.initial_prompt) if options.condition_on_previous_text else options.initial_prompt
            group = WindowGroup(next(_GROUP_IDS), len(batch)) if len(batch) > 1 else None
            futures = [
                pool.submit(decode, window, prompt, language, None if group is None else replace(group, member=i))
                for i, window in enumerate(batch)
            ]
            try:
                results = [future.result() for future in futures]
            finally:
                for future in futures:
                    future.cancel()
            for window, result in zip(batch, results, strict=True):
                if language is None:
                    language, probability = result.language, result.language_probability
                segments.extend(_onto_speech(_shift(seg, window), window) for seg in result.segments if seg.text.strip())
                if progress is not None:
                    progress(window.end, duration)
            done += len(batch)
    return Transcript.from_segments(
        segments, language=language or "en", duration=duration, language_probability=probability, task=options.task
    )


def _wave_size(left: int, most: int) -> int:
    """Windows in the next wave: waves of equal size (11 windows with room for 8 are waves of 6
    and 5, not 8 and 3, which would leave workers idle in the last one)."""
    waves = -(-left // most)
    return -(-left // waves)


def _capped(progress: ProgressCallback | None) -> ProgressCallback | None:
    if progress is None:
        return None

    def report(done: float, total: float) -> None:
        progress(min(done, _PROGRESS_CAP * total), total)

    return report


def _token_budget(window: _Window, options: TranscriptionOptions) -> int | None:
    """``max_new_tokens`` for a window (:data:`TOKENS_PER_S`); none with hotwords, whose own
    prompt faster-whisper does not count against the model's limit."""
    if options.hotwords:
        return options.max_new_tokens
    budget = min(MAX_NEW_TOKENS, int(TOKENS_BASE + TOKENS_PER_S * (window.end - window.start)))
    return budget if options.max_new_tokens is None else min(budget, options.max_new_tokens)


def _guard(segments: list[Segment], speech: list[SpeechStretch], limits: Limits, *, drop_silent: bool) -> list[Segment]:
    kept, dropped = drop_loops(drop_doubled_phrases(segments), limits)
    if dropped and logger.isEnabledFor(logging.DEBUG):
        logger.debug("coverage: dropped %d looping segment(s): %s", len(dropped), [s.text[:40] for s in dropped])
    # A segment with more text than its span can hold is invented: typically a sentence of the
    # prompt repeated in the last 0.1 s of a window (LibriSpeech with fillers: "I also told him
    # what snap and I had learned." a second time, in 0.06 s). Its time is decoded again if it
    # was speech.
    kept = [s for s in kept if not is_too_dense(s)]
    if drop_silent:
        kept = [s for s in kept if not in_silence(s, speech)]
    return kept


def _covering(segments: list[Segment], speech: list[SpeechStretch], judge: _Judge) -> list[tuple[float, float]]:
    """Time spans that count as decoded: segment spans (word spans when there are words),
    minus unreliable and thin segments."""
    spans: list[tuple[float, float]] = []
    for seg in segments:
        if not seg.text.strip() or is_unreliable(seg, judge.limits) or is_thin(seg, speech, None, floor=judge.thin_floor):
            continue
        if seg.words:
            spans.extend((w.start - 0.15, w.end + 0.15) for w in seg.words)
        else:
            spans.append((seg.start, _claim_end(seg, speech, judge.typical_rate)))
    return spans


def _claim_end(segment: Segment, speech: list[SpeechStretch], typical: float | None) -> float:
    """How far a segment without word times counts as covering speech: its end, except where it
    runs on over a pause of :data:`CLAIM_PAUSE_S` or more into at least :data:`MIN_REDECODE_S` of
    speech while its text already fits the speech before the pause at this file's own rate
    (``typical`` letters a second, at most :data:`CLAIM_RATE_SLACK` times faster): then it
    covers up to the pause. Whisper ends a segment at a pause; one that runs on over a long one
    with no text to spare has stretched its last timestamp over a sentence it never wrote (tiny.en
    on a LibriSpeech recording: a segment of one clip ran 4 s into the next after a 2.5 s pause
    and swallowed "Chapter 3. My advent on Mars."). The speech after the pause is then decoded
    again with word times. A segment whose text needs the speech after the pause keeps its claim:
    on the 20 built files and ``longform-en`` with base, the rule changed one segment (one word of
    a French file); with a slack of 1.25 it changed three, each for the worse."""
    if typical is None:
        return segment.end
    under = [s for s in speech if s.end > segment.start and s.start < segment.end]
    for index, (before, after) in enumerate(itertools.pairwise(under)):
        if after.start - before.end < CLAIM_PAUSE_S:
            continue
        head = overlap_s(segment.start, before.end, under[: index + 1])
        tail = overlap_s(after.start, segment.end, under[index + 1:])
        fits = head > 0 and letters(segment) <= CLAIM_RATE_SLACK * typical * head
        return max(segment.start, before.end) if fits and tail >= MIN_REDECODE_S else segment.end
    return segment.end


def _covered_s(stretch: SpeechStretch, spans: list[tuple[float, float]]) -> float:
    """Seconds of ``stretch`` under the union of ``spans``."""
    clipped = sorted((max(a, stretch.start), min(b, stretch.end)) for a, b in spans if b > stretch.start and a < stretch.end)
    total, cur_a, cur_b = 0.0, None, None
    for a, b in clipped:
        if cur_b is None or a > cur_b:
            if cur_b is not None and cur_a is not None:
                total += cur_b - cur_a
            cur_a, cur_b = a, b
        else:
            cur_b = max(cur_b, b)
    if cur_a is not None and cur_b is not None:
        total += cur_b - cur_a
    return total


def _uncovered(segments: list[Segment], speech: list[SpeechStretch], judge: _Judge) -> list[SpeechStretch]:
    spans = _covering(segments, speech, judge)
    out: list[SpeechStretch] = []
    for stretch in speech:
        missing = stretch.duration - _covered_s(stretch, spans)
        if missing >= MIN_UNCOVERED_S and missing >= min(UNCOVERED_ABS_S, UNCOVERED_FRACTION * stretch.duration):
            out.append(stretch)
    return out


def _windows(
    stretches: list[SpeechStretch],
    max_s: float,
    *,
    join_pause_s: float = WINDOW_JOIN_PAUSE_S,
    speech: list[SpeechStretch] | None = None,
    duration: float | None = None,
) -> list[_Window]:
    """Neighbouring ``stretches`` grouped into windows of up to ``max_s`` (of speech stretches).

    With ``speech`` (all VAD stretches of the audio; ``stretches`` is a subset of it), each window
    is widened into the pauses around it (:data:`LEAD_S`, :data:`TAIL_S`), never reaching other
    speech, nor the part of a pause that the next window's lead takes, nor past ``duration``.
    """
    groups = group_spans(stretches, max_window_s=max_s, max_gap_s=join_pause_s)
    if speech is None:
        return [_Window(g[0].start, g[-1].end, g) for g in groups]
    ends = sorted(s.end for s in speech)
    starts = sorted(s.start for s in speech)
    out: list[_Window] = []
    for g in groups:
        first, last = g[0].start, g[-1].end
        prev_end = max((e for e in ends if e <= first + 1e-6), default=0.0)
        next_start = min((b for b in starts if b >= last - 1e-6), default=duration if duration is not None else last + TAIL_S)
        before, after = max(0.0, first - prev_end), max(0.0, next_start - last)
        lead = min(LEAD_S, before if prev_end == 0.0 else LEAD_SHARE * before)
        tail = min(TAIL_S, (1.0 - LEAD_SHARE) * after)
        if duration is not None and next_start >= duration:
            tail = min(TAIL_S, after)
        out.append(_Window(round(first - lead, 3), round(last + tail, 3), g))
    return out


def _fill_gaps(
    engine: Engine,
    audio: np.ndarray,
    options: TranscriptionOptions,
    segments: list[Segment],
    speech: list[SpeechStretch],
    judge: _Judge,
    *,
    cancel: threading.Event | None,
) -> list[Segment]:
    tried: set[tuple[float, float]] = set()
    for max_window_s in (WINDOW_MAX_S, 0.0):  # grouped windows first, then each stretch alone
        missing = _uncovered(segments, speech, judge)
        if not missing:
            break
        windows = [w for w in _windows(missing, max_window_s, speech=speech, duration=len(audio) / SAMPLE_RATE)
                   if (w.start, w.end) not in tried
                   and sum(s.duration for s in w.stretches) >= MIN_REDECODE_S]
        logger.debug("coverage: %d uncovered stretch(es), %d window(s) of <= %.0f s", len(missing), len(windows), max_window_s)
        for window in windows:
            if cancel is not None and cancel.is_set():
                raise CancelledError("transcription cancelled")
            tried.add((window.start, window.end))
            segments = _redecode(engine, audio, options, segments, speech, judge, window, cancel=cancel)
    return segments


def _redecode(
    engine: Engine,
    audio: np.ndarray,
    options: TranscriptionOptions,
    segments: list[Segment],
    speech: list[SpeechStretch],
    judge: _Judge,
    window: _Window,
    *,
    cancel: threading.Event | None,
) -> list[Segment]:
    before = [s for s in segments if _mid(s) < window.start]
    after = [s for s in segments if _mid(s) > window.end]
    inside = [s for s in segments if window.start <= _mid(s) <= window.end]
    prompt = _prompt(before, options.initial_prompt)
    result = engine.transcribe(
        audio[int(window.start * SAMPLE_RATE): int(window.end * SAMPLE_RATE)],
        replace(options, initial_prompt=prompt, max_new_tokens=_token_budget(window, options)),
        cancel=cancel,
    )
    neighbours = before[-3:] + after[:3]
    new = [
        seg for seg in (_shift(s, window) for s in result.segments)
        if seg.text.strip() and not is_degenerate(seg, judge.limits) and not is_too_dense(seg)
        and not in_silence(seg, list(window.stretches))
        and not repeats_neighbour(seg, neighbours)
    ]
    # Words the re-decoded window repeats at a border: with the text before it, and between its
    # own segments (the prompt's last words decoded once more as a segment of their own).
    deduped: list[Segment] = []
    for seg in new:
        previous = deduped[-1] if deduped else (before[-1] if before else None)
        kept = seg if previous is None else trim_leading_duplicate(previous, seg)
        if kept is not None:
            deduped.append(kept)
    new = deduped
    if after and new:
        head = trim_leading_duplicate(new[-1], after[0])
        if head is not None and head is not after[0]:
            after = [head, *after[1:]]
        elif head is None:
            after = after[1:]
    old_cov = _window_coverage(before + inside + after, window, speech, judge)
    new_cov = _window_coverage(before + new + after, window, speech, judge)
    if new_cov < old_cov + MIN_GAIN_S:
        logger.debug("coverage: window %.1f-%.1f s kept (%.1f s -> %.1f s covered)", window.start, window.end, old_cov, new_cov)
        return segments
    logger.debug("coverage: window %.1f-%.1f s re-decoded (%.1f s -> %.1f s covered)", window.start, window.end, old_cov, new_cov)
    if before and new and before[-1].end > new[0].start:
        # The segment before ran on over the speech decoded here (:func:`_claim_end`): it ends
        # where the re-decoded text, which has word times, begins.
        before = [*before[:-1], replace(before[-1], end=max(before[-1].start, new[0].start))]
    return before + new + after


def _window_coverage(segments: list[Segment], window: _Window, speech: list[SpeechStretch], judge: _Judge) -> float:
    spans = _covering(segments, speech, judge)
    return sum(_covered_s(s, spans) for s in window.stretches)


def _mid(seg: Segment) -> float:
    return (seg.start + seg.end) / 2


def _prompt(before: list[Segment], initial_prompt: str | None) -> str | None:
    text = "".join(s.text for s in before).strip()
    if not text:
        return initial_prompt
    return text[-PROMPT_MAX_CHARS:].split(" ", 1)[-1] if len(text) > PROMPT_MAX_CHARS else text


def _onto_speech(seg: Segment, window: _Window) -> Segment:
    """A first-pass segment's start and end moved to within :data:`EDGE_SLACK_S` of the window's
    speech: Whisper starts the first segment of a window at the window's start, which with the
    lead (:data:`LEAD_S`) is up to 2 s of pause or noise before the speech."""
    if not window.stretches:
        return seg
    start = max(seg.start, min(window.stretches[0].start - EDGE_SLACK_S, seg.end))
    end = min(seg.end, max(window.stretches[-1].end + EDGE_SLACK_S, start))
    if (start, end) == (seg.start, seg.end):
        return seg
    return replace(seg, start=round(start, 3), end=round(end, 3), seek=int(round(start * 100)))


def _shift(seg: Segment, window: _Window) -> Segment:
    """Times of a window's segment moved to the whole audio's clock, clamped to the window."""

    def at(t: float) -> float:
        return round(min(max(window.start + t, window.start), window.end), 3)

    words = tuple(Word(at(w.start), at(w.end), w.word, w.probability) for w in seg.words) if seg.words else seg.words
    return replace(seg, start=at(seg.start), end=at(seg.end), words=words, seek=int(round(at(seg.start) * 100)))


