"""Word timestamps: openai/whisper's cross-attention alignment (timing.py). The decoder is run once
more over each window's text; the cross-attention of the alignment heads, normalized and median
filtered, is aligned to the audio frames by dynamic time warping, and every word gets the time of
its first and last token's jump."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from stenod.engines.torch_whisper.audio import FRAMES_PER_SECOND, N_FRAMES, window_mel
from stenod.transcript import Segment, Word

if TYPE_CHECKING:
    from stenod.engines.base import TranscriptionOptions
    from stenod.engines.torch_whisper.engine import TorchWhisperEngine, _Device

_TimedWord = tuple[str, float, float, float, int]
"""(word, start s, end s, probability, token count)."""
TOKENS_PER_SECOND = 50
MEDIAN_FILTER_WIDTH = 7
PREPEND_PUNCTUATION = "\"'“¿([{-"
APPEND_PUNCTUATION = "\"'.。,，!！?？:：”)]}、"


def median_filter(x: torch.Tensor, width: int) -> torch.Tensor:
    """Median over the last axis in windows of ``width`` with reflect padding (as openai-whisper)."""
    pad = width // 2
    if x.shape[-1] <= pad:
        return x
    shape = x.shape
    y = F.pad(x.reshape(-1, 1, shape[-1]), (pad, pad), mode="reflect")
    return y.unfold(-1, width, 1).median(dim=-1).values.reshape(shape)


def dtw(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Monotonic alignment path through ``cost`` (tokens x frames): (token indices, frame indices)."""
    n, m = cost.shape
    acc = np.full((n + 1, m + 1), np.inf, dtype=np.float64)
    trace = np.zeros((n + 1, m + 1), dtype=np.int8)
    acc[0, 0] = 0.0
    for i in range(1, n + 1):
        row_prev = acc[i - 1]
        row = acc[i]
        ci = cost[i - 1]
        for j in range(1, m + 1):
            c0, c1, c2 = row_prev[j - 1], row_prev[j], row[j - 1]
            if c0 <= c1 and c0 <= c2:
                row[j], trace[i, j] = ci[j - 1] + c0, 0
            elif c1 <= c2:
                row[j], trace[i, j] = ci[j - 1] + c1, 1
            else:
                row[j], trace[i, j] = ci[j - 1] + c2, 2
    trace[0, :] = 2
    trace[:, 0] = 1
    i, j = n, m
    path: list[tuple[int, int]] = []
    while i > 0 or j > 0:
        path.append((i - 1, j - 1))
        t = trace[i, j]
        if t == 0:
            i, j = i - 1, j - 1
        elif t == 1:
            i -= 1
        else:
            j -= 1
    path.reverse()
    arr = np.array(path)
    return arr[:, 0], arr[:, 1]


def _align(
    engine: TorchWhisperEngine, device: _Device, mel: torch.Tensor, sot_sequence: list[int], text_tokens: list[int], n_frames: int, language: str
) -> list[tuple[str, float, float, float]]:
    """(word, start, end, probability) relative to the window start."""
    tok = engine._tokenizer
    s = tok.special
    if not text_tokens:
        return []
    tokens = [*sot_sequence, s.no_timestamps, *text_tokens, s.eot]
    model = device.model
    dtype = next(model.parameters()).dtype
    with torch.inference_mode():
        features = model.encoder(mel[None].to(dtype))
        t = torch.tensor([tokens], device=features.device)
        pad = torch.zeros(1, dtype=torch.long, device=features.device)
        state = model.new_state(features, pad, capacity=len(tokens))
        logits = model.decode(t, state)[0]
        probs = logits[len(sot_sequence) : len(sot_sequence) + len(text_tokens), : s.eot].softmax(dim=-1)
        text_probs = probs[torch.arange(len(text_tokens)), torch.tensor(text_tokens, device=probs.device)].tolist()
        scores = model.cross_attention_weights(t, features, engine.alignment_heads)[0]  # (heads, tokens, frames)
        weights = scores[:, :, : max(1, n_frames // 2)].softmax(dim=-1)
        std, mean = torch.std_mean(weights, dim=-2, keepdim=True, unbiased=False)
        weights = (weights - mean) / (std + 1e-8)
        weights = median_filter(weights, MEDIAN_FILTER_WIDTH)
        matrix = weights.mean(dim=0)[len(sot_sequence) : -1].cpu().double().numpy()
    text_idx, time_idx = dtw(-matrix)
    words, word_tokens = tok.split_to_word_tokens([*text_tokens, s.eot], language=language)
    if len(word_tokens) <= 1:
        return []
    boundaries = np.pad(np.cumsum([len(w) for w in word_tokens[:-1]]), (1, 0))
    jumps = np.pad(np.diff(text_idx), (1, 0), constant_values=1).astype(bool)
    jump_times = time_idx[jumps] / TOKENS_PER_SECOND
    starts = jump_times[np.clip(boundaries[:-1], 0, len(jump_times) - 1)]
    ends = jump_times[np.clip(boundaries[1:], 0, len(jump_times) - 1)]
    out = []
    for k, word in enumerate(words[:-1]):
        a, b = boundaries[k], boundaries[k + 1]
        out.append((word, float(starts[k]), float(ends[k]), float(np.mean(text_probs[a:b])) if b > a else 0.0))
    return out


def _merge_punctuation(words: list[_TimedWord]) -> list[_TimedWord]:
    """Attach leading punctuation to the next word and trailing punctuation to the previous one."""
    merged: list[_TimedWord] = []
    carry: _TimedWord | None = None
    for w in words:
        if carry is not None:
            w = (carry[0] + w[0], w[1], w[2], w[3], carry[4] + w[4])
            carry = None
        if w[0].strip() and w[0].strip() in PREPEND_PUNCTUATION and w[0].startswith(" "):
            carry = w
            continue
        if merged and w[0] and not w[0].startswith(" ") and w[0].strip() and all(c in APPEND_PUNCTUATION for c in w[0].strip()):
            merged[-1] = (merged[-1][0] + w[0], merged[-1][1], merged[-1][2], merged[-1][3], merged[-1][4] + w[4])
            continue
        merged.append(w)
    if carry is not None:
        merged.append(carry)
    return merged


def add_word_timestamps(
    engine: TorchWhisperEngine,
    device: _Device,
    mel: torch.Tensor,
    segments: list[Segment],
    *,
    language: str,
    options: TranscriptionOptions,
) -> list[Segment]:
    """Segments with ``words`` filled in; each segment's start and end move to its words'."""
    tok = engine._tokenizer
    sot = tok.sot_sequence(language=language if tok.multilingual else None, task=options.task)
    by_window: dict[int, list[int]] = {}
    for i, seg in enumerate(segments):
        by_window.setdefault(seg.seek, []).append(i)
    out = list(segments)
    for seek, indices in by_window.items():
        seg_tokens = [[t for t in segments[i].tokens if t < tok.special.eot] for i in indices]
        text_tokens = [t for ts in seg_tokens for t in ts]
        window_end = max(segments[i].end for i in indices)
        n_frames = min(N_FRAMES, max(1, int(round((window_end - seek / FRAMES_PER_SECOND) * FRAMES_PER_SECOND))))
        timings = _align(engine, device, window_mel(mel, seek, N_FRAMES), sot, text_tokens, n_frames, language)
        if not timings:
            continue
        offset = seek / FRAMES_PER_SECOND
        # Count tokens per timing word so words can be dealt back to their segments.
        words_tokens = tok.split_to_word_tokens([*text_tokens, tok.special.eot], language=language)[1][:-1]
        rows: list[_TimedWord] = [(w, st, en, p, len(wt)) for (w, st, en, p), wt in zip(timings, words_tokens, strict=False)]
        rows = _merge_punctuation(rows)
        pos = 0
        cursor = 0
        for i, toks in zip(indices, seg_tokens, strict=False):
            seg = segments[i]
            limit = pos + len(toks)
            words: list[Word] = []
            while cursor < len(rows) and pos < limit:
                w, st, en, p, n = rows[cursor]
                start = round(offset + st, 3)
                end = round(max(offset + en, offset + st), 3)
                words.append(Word(start=start, end=end, word=w, probability=round(p, 4)))
                pos += n
                cursor += 1
            if words:
                out[i] = replace(seg, words=tuple(words), start=min(seg.start, words[0].start) if seg.start > words[0].start + 1 else words[0].start, end=max(words[-1].end, words[0].start))
            else:
                out[i] = replace(seg, words=())
    return out
