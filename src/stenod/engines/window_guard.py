"""Encoder trimming and the guard that decides when a trimmed decode cannot be trusted.

Whisper's encoder always sees a 30 s window (3000 mel frames); audio shorter than that is padded.
On CPU that fixed encoder pass is most of the cost of a short clip (issue 10: a 10 s clip pays
for 30 s). CTranslate2's Whisper accepts fewer than 3000 frames (whisper.cpp calls the same idea
``audio_ctx``), so the encoder can run on the audio that exists plus a little padding: 1.67x
faster at equal WER on 5-20 s LibriSpeech clips.

The model was trained on full windows, though, and on some inputs (mostly clips under 5 s) a
trimmed decode loops ("He could wait no longer. He could wait no longer. ...") or runs its
timestamps past the end of the audio. So every trimmed decode goes through
:func:`trimmed_decode_problem`; a result it flags is thrown away and the window decoded again the
ordinary way (full 30 s window, the caller's whole temperature schedule). The checks are
Whisper's own failure signals (compression ratio, average log-probability) plus two that catch
loops and runaway timestamps earlier than those do.

A decode that ran away (a loop, text past the end of the audio) is first tried once more with
5 s of padding instead of 1 s (:attr:`TrimPolicy.retry_pad_frames`): with the end of the speech
well inside its input the model stops there. Of 188 clips of the five corpus sets, all four
runaway decodes of real speech passed that way, at the full window's accuracy or within one
word of it, for 0.2-0.6 CPU s each instead of 0.9-1.4 s for the full window
(``benchmarks/guard_retry.py``); an unsure or empty decode (hard voice qualities, silence) is
mostly not helped by padding and goes straight to the full window.

Engine-agnostic: it reads :class:`~stenod.transcript.Segment` fields only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from stenod.transcript import Segment

FULL_WINDOW_FRAMES = 3000
"""Mel frames in Whisper's 30 s window (10 ms each)."""
FRAMES_PER_S = 100
TOKENS_BASE = 24
TOKENS_PER_S = 12.0
"""Token budget of a decode: :data:`TOKENS_BASE` plus this many per second of its audio. Speech
runs at 3-6 text tokens a second plus a timestamp pair per segment (more for Chinese and
Japanese); a decode that reaches the budget is looping. Shared by the trimmed path's guard and the
long-form coverage check's windows (``stenod.decoding.coverage``)."""
MAX_NEW_TOKENS = 220
"""Whisper's decoder context is 448 tokens and a prompt of previous text takes up to 227 of them."""


@dataclass(frozen=True, slots=True)
class TrimPolicy:
    """How many encoder frames a clip gets, and the limits a trimmed decode must stay within."""

    pad_frames: int = 100
    """Padding after the last audio frame (1 s): the model sees the speech end, as in training."""
    min_frames: int = 1000
    """Shortest encoder input (10 s). Very short encoder inputs are where trimmed decodes loop."""
    short_clip_frames: int = 700
    short_clip_min_frames: int = 2000
    """A clip under ``short_clip_frames`` (7 s) gets at least this much encoder input (20 s).
    With 10 s, two LJ Speech clips of 4.5 and 5.3 s came out as "the letter U's" and "natural
    there for" in every padding tried, against the full window's "used" and "therefore". Over
    the five corpus sets (through the coverage check, whose re-decoded windows are often short)
    this changed the text of 28 clips, 7 for the better and 3 for the worse; no set lost: LJ
    Speech and the voice-quality set 2 errors fewer each, FLEURS en 1, LibriSpeech even. The
    cost is 10 s more encoder input on clips that are short anyway (docs/BENCHMARKS.md)."""
    compression_ratio_threshold: float = 2.4
    """Whisper's own limit for "too repetitive" (gzip ratio of the text)."""
    log_prob_threshold: float = -1.0
    """Whisper's own limit for "too unsure" (average token log-probability)."""
    no_speech_threshold: float = 0.6
    """A window above this no-speech probability with a low log-probability is silence, not a failure."""
    max_repeats: int = 3
    """An n-gram of 2-10 words repeated back to back this many times is a loop."""
    end_slack_s: float = 1.5
    """A segment may end at most this far past the end of the audio; its end is then moved back to
    the end of the audio (:func:`clamped_to_audio`). The encoder input runs ``pad_frames`` past the
    audio, and the model's last timestamp often lands in that padding: of 50 LibriSpeech clips, 6
    were sent back to the full window for ending 0.5-1.2 s late, with the right text. Further out,
    or a segment that starts after the audio, is a runaway decode."""
    tokens_per_s: float = TOKENS_PER_S
    """Token budget of a trimmed decode per second of audio (plus ``min_tokens``): stopping a loop
    there instead of at Whisper's 224 tokens makes it cheaper before the guard sends it back."""
    min_tokens: int = TOKENS_BASE
    min_resume_frames: int = 100
    """A decode whose segments are all closed (it ended on a timestamp pair, so no unfinished
    text was dropped) and that stopped less than this before the end of its audio (1 s) is not
    continued. Whisper's loop continues from the last timestamp whatever is left, and the rest is
    mostly the pause or padding after the speech: of the 11 first-pass windows of the 237 s
    LJ Speech file, 10 were continued on a tail of 0.06-0.46 s and found nothing, each for an
    encoder pass of at least ``min_frames`` (a quarter of the file's CPU time); the one tail
    of 2.6 s held a sentence."""

    retry_pad_frames: int = 500
    """Padding of the one retry of a runaway decode (:attr:`TrimProblem.runaway`), before the
    full window. Of the four runaways of real speech in the corpus sets, 3 s fixed two, 5 s all
    four (base, docs/BENCHMARKS.md)."""

    def encoder_frames(self, content_frames: int) -> int:
        """Frames to feed the encoder for ``content_frames`` of audio: content plus padding, at
        least ``min_frames`` (``short_clip_min_frames`` for a clip under ``short_clip_frames``),
        at most a full window, and even (the encoder's stride-2 convolution)."""
        floor = self.short_clip_min_frames if content_frames < self.short_clip_frames else self.min_frames
        frames = max(content_frames + self.pad_frames, floor)
        frames = min(frames, FULL_WINDOW_FRAMES)
        return frames + (frames % 2)

    def token_budget(self, duration_s: float, limit: int | None = None) -> int:
        """Most tokens (text and timestamps) a trimmed decode of ``duration_s`` seconds may
        produce; at most ``limit`` (the caller's ``max_new_tokens``) when set."""
        budget = min(self.min_tokens + int(self.tokens_per_s * duration_s), MAX_NEW_TOKENS)
        return budget if limit is None else min(budget, limit)

    def resumes(self, tokens: Sequence[int], *, timestamp_begin: int, rest_frames: int) -> bool:
        """Whether a decode that stopped ``rest_frames`` before the end of its audio is continued
        from its last timestamp (``tokens``: its text and timestamp tokens, no end token)."""
        if rest_frames <= 0:
            return False
        closed = len(tokens) >= 2 and tokens[-1] >= timestamp_begin and tokens[-2] >= timestamp_begin
        return not closed or rest_frames >= self.min_resume_frames

    def pays(self, content_frames: int) -> bool:
        """Trimming saves encoder work only when the clip is shorter than the window."""
        return self.encoder_frames(content_frames) < FULL_WINDOW_FRAMES

    def for_retry(self, content_frames: int) -> TrimPolicy | None:
        """The policy of the retry of a runaway decode (more padding), or ``None`` where its
        encoder input would be a full window anyway (the full-window fallback is then next)."""
        padded = replace(self, pad_frames=max(self.pad_frames, self.retry_pad_frames))
        return padded if padded.pad_frames > self.pad_frames and padded.pays(content_frames) else None


@dataclass(frozen=True, slots=True)
class TrimProblem:
    """Why a trimmed decode is not kept."""

    reason: str
    runaway: bool
    """The decode did not stop where the speech does (a loop, text past the end of the audio,
    the token budget spent): more padding after the audio may fix it. Otherwise (no text, an
    unsure decode) only the full window decides."""

    def __str__(self) -> str:
        return self.reason


DEFAULT_TRIM_POLICY = TrimPolicy()


def trimmed_decode_problem(
    segments: Sequence[Segment], *, duration_s: float, policy: TrimPolicy = DEFAULT_TRIM_POLICY
) -> TrimProblem | None:
    """Why a trimmed decode of ``duration_s`` seconds of audio should be redone, or ``None``.

    An empty result is a problem too: the full window decides whether the clip is silent, so
    silence gets exactly today's answer (and today's no-speech probabilities).
    """
    if not segments:
        return TrimProblem("no segments", runaway=False)
    budget = policy.token_budget(duration_s)
    if sum(len(seg.tokens) for seg in segments) >= budget:
        return TrimProblem(f"reached the token budget ({budget})", runaway=True)
    for seg in segments:
        silent = seg.no_speech_prob > policy.no_speech_threshold
        if seg.compression_ratio > policy.compression_ratio_threshold:
            return TrimProblem(f"compression ratio {seg.compression_ratio:.2f}", runaway=True)
        if seg.avg_logprob < policy.log_prob_threshold and not silent:
            return TrimProblem(f"average log-probability {seg.avg_logprob:.2f}", runaway=False)
        if seg.end > duration_s + policy.end_slack_s or seg.start >= duration_s:
            return TrimProblem(f"segment ends at {seg.end:.2f} s, after the audio ({duration_s:.2f} s)", runaway=True)
    text = "".join(seg.text for seg in segments)
    if has_repetition_loop(text, max_repeats=policy.max_repeats):
        return TrimProblem("repetition loop", runaway=True)
    return None


def clamped_to_audio(segments: Sequence[Segment], duration_s: float) -> list[Segment]:
    """``segments`` with every end (and word time) past ``duration_s`` moved back to it: what a
    trimmed decode that passed :func:`trimmed_decode_problem` may still overshoot by."""
    out: list[Segment] = []
    for seg in segments:
        if seg.end <= duration_s:
            out.append(seg)
            continue
        words = seg.words
        if words is not None:
            words = tuple(
                replace(w, start=min(w.start, duration_s), end=min(w.end, duration_s)) for w in words
            )
        out.append(replace(seg, end=round(duration_s, 3), words=words))
    return out


def has_repetition_loop(text: str, *, max_repeats: int = 3, min_n: int = 2, max_n: int = 10) -> bool:
    """True when some run of ``min_n``..``max_n`` words appears ``max_repeats`` times back to back
    (case and punctuation ignored). Ordinary speech repeats single words ("no, no, no") but rarely
    a whole phrase three times in a row; a looping decoder does exactly that."""
    words = ["".join(ch for ch in w.lower() if ch.isalnum()) for w in text.split()]
    words = [w for w in words if w]
    for n in range(min_n, max_n + 1):
        span = n * max_repeats
        for start in range(len(words) - span + 1):
            first = words[start : start + n]
            if all(words[start + k * n : start + (k + 1) * n] == first for k in range(1, max_repeats)):
                return True
    return False
