"""Batched decoding of 30 s windows: one encoder pass for every window in the batch, then greedy,
sampled or beam-search decoding of all rows together on a shared KV cache.

The rules are openai/whisper's (decoding.py), vectorized over rows: suppressed tokens, a blank
first token suppressed, timestamp rules (pairs, never decreasing, the first at most 1 s in, a
timestamp forced when timestamps together outweigh any text token), ``avg_logprob`` over the
sampled tokens plus end-of-text, ``no_speech_prob`` read at the start-of-transcript position,
and beam candidates ranked by length-normalized log-probability. Rows whose window is done are
dropped from the batch as it goes, so a long tail does not pay for finished rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from stenod.engines.torch_whisper.model import Whisper
from stenod.engines.torch_whisper.static_greedy import StaticGreedy
from stenod.engines.torch_whisper.tokens import WhisperTokenizer

COMPACT_FRACTION = 0.75
"""Finished rows stay in the batch (fed end-of-text) until the live ones are this fraction or less."""
MAX_INITIAL_TIMESTAMP_INDEX = 50
"""The first timestamp is at most 1.0 s into the window (openai-whisper's default)."""


@dataclass(slots=True)
class WindowTask:
    """One window to decode: its mel, the prefix (previous-text prompt and start-of-transcript
    sequence) and how to search."""

    mel: Tensor
    """(n_mels, 3000) on the engine's device."""
    prefix: list[int]
    sot_index: int
    """Position of ``<|startoftranscript|>`` in ``prefix`` (where ``no_speech_prob`` is read)."""
    temperature: float = 0.0
    beam_size: int = 1
    best_of: int = 1
    without_timestamps: bool = False
    sample_len: int = 224

    @property
    def mode(self) -> tuple[str, int]:
        """Tasks of one mode share a batch: beam search of one width, or sampling/greedy."""
        if self.temperature == 0.0 and self.beam_size > 1:
            return ("beam", self.beam_size)
        return ("sample", 0)

    @property
    def rows(self) -> int:
        if self.temperature == 0.0:
            return max(1, self.beam_size)
        return max(1, self.best_of)


@dataclass(slots=True)
class WindowResult:
    tokens: list[int]
    """Sampled tokens without the final end-of-text."""
    token_logprobs: list[float]
    sum_logprob: float
    avg_logprob: float
    no_speech_prob: float
    temperature: float


def _normalized(row: _Row) -> float:
    """Log-probability per token: how candidates of different lengths are ranked."""
    return row.sum_logprob / max(1, len(row.tokens))


@dataclass(slots=True)
class _Row:
    task: int
    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    sum_logprob: float = 0.0
    done: bool = False
    max_ts: int = -1
    """Index (from ``<|0.00|>``) of the latest timestamp token, -1 before the first."""


class WindowDecoder:
    """Decodes batches of :class:`WindowTask` on one model (one device)."""

    def __init__(
        self,
        model: Whisper,
        tokenizer: WhisperTokenizer,
        *,
        suppress_tokens: list[int],
        static_rows: int = 0,
        graphs: bool = False,
    ) -> None:
        """``static_rows``: greedy batches of up to this many windows decode on fixed buffers
        (:mod:`static_greedy`), recorded as CUDA graphs when ``graphs`` and on CUDA; 0 keeps
        every batch on the general loop."""
        self.model = model
        self.tokenizer = tokenizer
        s = tokenizer.special
        self.n_vocab = model.dims.n_vocab
        device = next(model.parameters()).device
        self.device = device
        suppress = set(suppress_tokens)
        if -1 in suppress:
            suppress.discard(-1)
            suppress.update(tokenizer.non_speech_tokens())
        suppress.update({s.sot, s.sot_prev, s.sot_lm, s.transcribe, s.translate, s.no_speech, s.no_timestamps})
        suppress = {t for t in suppress if 0 <= t < self.n_vocab}
        self._suppress = torch.zeros(self.n_vocab, dtype=torch.bool, device=device)
        self._suppress[list(suppress)] = True
        blank = set(tokenizer.encode(" ")) | {s.eot}
        self._blank = torch.zeros(self.n_vocab, dtype=torch.bool, device=device)
        self._blank[list(blank)] = True
        self._ts_index = torch.arange(self.n_vocab - s.timestamp_begin, device=device)
        self.static: StaticGreedy | None = None
        if static_rows > 0:
            self.static = StaticGreedy(self, max_rows=static_rows, graphs=graphs)

    # ------------------------------------------------------------------------------------------
    def encode(self, mels: Tensor) -> Tensor:
        dtype = next(self.model.parameters()).dtype
        features: Tensor = self.model.encoder(mels.to(dtype))
        return features

    @torch.inference_mode()
    def detect_language(self, mels: Tensor) -> Tensor:
        """Language probabilities (batch, n_languages) in the tokenizer's language order."""
        s = self.tokenizer.special
        features = self.encode(mels)
        pad = torch.zeros(features.shape[0], dtype=torch.long, device=self.device)
        state = self.model.new_state(features, pad, capacity=1)
        tokens = torch.full((features.shape[0], 1), s.sot, dtype=torch.long, device=self.device)
        logits = self.model.decode(tokens, state)[:, 0]
        ids = torch.tensor(list(s.languages.values()), device=self.device)
        return logits[:, ids].softmax(dim=-1)

    # ------------------------------------------------------------------------------------------
    @torch.inference_mode()
    def decode(self, tasks: list[WindowTask]) -> list[WindowResult]:
        """Decode ``tasks`` (all of one :attr:`WindowTask.mode`) together."""
        if not tasks:
            return []
        s = self.tokenizer.special
        features = self.encode(torch.stack([t.mel for t in tasks]))
        static = self.static
        if static is not None and len(tasks) <= static.max_rows and all(t.temperature == 0.0 and t.rows == 1 for t in tasks):
            return static.decode(tasks, features)
        row_task = [i for i, t in enumerate(tasks) for _ in range(t.rows)]
        n_rows = len(row_task)
        prefix_len = max(len(t.prefix) for t in tasks)
        sample_len = max(t.sample_len for t in tasks)
        pad = torch.tensor([prefix_len - len(tasks[i].prefix) for i in row_task], device=self.device)
        prefix = torch.full((n_rows, prefix_len), s.eot, dtype=torch.long)
        for r, i in enumerate(row_task):
            p = tasks[i].prefix
            prefix[r, prefix_len - len(p) :] = torch.tensor(p)
        prefix = prefix.to(self.device)
        rows_index = torch.tensor(row_task, device=self.device)
        state = self.model.new_state(features.index_select(0, rows_index), pad, capacity=prefix_len + sample_len)
        logits_all = self.model.decode(prefix, state)
        sot_slots = torch.tensor([prefix_len - len(tasks[i].prefix) + tasks[i].sot_index for i in row_task], device=self.device)
        no_speech = logits_all[torch.arange(n_rows, device=self.device), sot_slots].softmax(dim=-1)[:, s.no_speech]
        no_speech_by_task = {i: float(p) for i, p in zip(row_task, no_speech.tolist(), strict=False)}
        logits = logits_all[:, -1]
        del logits_all

        batch_rows = [_Row(task=i) for i in row_task]  # aligned with the state's rows
        temps = torch.tensor([tasks[i].temperature for i in row_task], device=self.device)
        no_ts = torch.tensor([tasks[i].without_timestamps for i in row_task], device=self.device)
        beam = tasks[0].mode[0] == "beam"
        finished: dict[int, list[_Row]] = {i: [] for i in range(len(tasks))}

        sampling = any(t.temperature > 0 for t in tasks)
        step_state: Tensor | None = None  # (3, rows): last token, penultimate token, last timestamp index
        for step in range(sample_len):
            all_no_ts = all(tasks[r.task].without_timestamps for r in batch_rows)
            logits = self._filter(logits, step_state, step, no_ts, all_no_ts)
            logprobs = torch.log_softmax(logits, dim=-1)
            old_tasks = [r.task for r in batch_rows]
            if beam:
                new_rows, sources, next_tokens = self._beam_step(logprobs, batch_rows, tasks, finished)
            else:
                new_rows, sources, next_tokens = self._sample_step(logits, logprobs, temps, batch_rows, finished, sampling)
            batch_rows = new_rows
            for row in batch_rows:
                if not row.done and len(row.tokens) >= tasks[row.task].sample_len:
                    row.done = True  # this window's token budget is spent (a long prompt)
                    finished[row.task].append(row)
            if not any(not r.done for r in batch_rows) or state.length >= state.capacity:
                break
            if sources != list(range(len(sources))) or len(sources) != state.pad.shape[0]:
                index = torch.tensor(sources, device=self.device)
                same_windows = [r.task for r in new_rows] == [old_tasks[k] for k in range(len(new_rows))] if len(new_rows) == len(old_tasks) else False
                state.reorder(index, cross=not same_windows)
                temps = temps.index_select(0, index)
                no_ts = no_ts.index_select(0, index)
            # One host-to-device copy per step (each copy waits for the queued kernels).
            tb = s.timestamp_begin
            pen = [r.tokens[-2] if len(r.tokens) >= 2 else tb for r in batch_rows]
            step_state = torch.tensor([next_tokens, pen, [r.max_ts for r in batch_rows]]).to(self.device)
            logits = self.model.decode(step_state[0][:, None], state)[:, 0]

        for row in batch_rows:  # out of room: unfinished rows still compete
            if not row.done:
                finished[row.task].append(row)
        return [self._result(t, finished[i], no_speech_by_task[i]) for i, t in enumerate(tasks)]

    # ------------------------------------------------------------------------------------------
    def _filter(self, logits: Tensor, step_state: Tensor | None, step: int, no_ts: Tensor, all_no_ts: bool) -> Tensor:
        s = self.tokenizer.special
        tb, eot = s.timestamp_begin, s.eot
        neg = -math.inf
        logits = logits.masked_fill(self._suppress, neg)
        if step == 0:
            logits = logits.masked_fill(self._blank, neg)
        if all_no_ts:
            logits[:, tb:] = neg
            return logits
        if step == 0:
            text_mask = ~no_ts
            logits[text_mask, :tb] = neg
            logits[text_mask, tb + MAX_INITIAL_TIMESTAMP_INDEX + 1 :] = neg
        else:
            assert step_state is not None
            last_t, pen_t, max_t = step_state[0], step_state[1], step_state[2]
            last_ts = last_t >= tb
            pen_ts = pen_t >= tb
            only_text = last_ts & pen_ts
            only_ts = last_ts & ~pen_ts
            logits[:, tb:] = logits[:, tb:].masked_fill(only_text[:, None], neg)
            logits[:, :eot] = logits[:, :eot].masked_fill(only_ts[:, None], neg)
            floor = torch.where(only_ts, max_t, max_t + 1)
            forbid = (self._ts_index[None, :] < floor[:, None]) & (max_t >= 0)[:, None]
            logits[:, tb:] = logits[:, tb:].masked_fill(forbid, neg)
        logprobs = torch.log_softmax(logits, dim=-1)
        ts_logprob = logprobs[:, tb:].logsumexp(dim=-1)
        text_max = logprobs[:, :tb].max(dim=-1).values
        force_ts = (ts_logprob > text_max) & ~no_ts
        logits[:, :tb] = logits[:, :tb].masked_fill(force_ts[:, None], neg)
        logits[no_ts, tb:] = neg
        return logits

    def _sample_step(
        self,
        logits: Tensor,
        logprobs: Tensor,
        temps: Tensor,
        batch_rows: list[_Row],
        finished: dict[int, list[_Row]],
        sampling: bool,
    ) -> tuple[list[_Row], list[int], list[int]]:
        eot, tb = self.tokenizer.special.eot, self.tokenizer.special.timestamp_begin
        greedy = logits.argmax(dim=-1)
        if sampling:
            scaled = logits / temps.clamp(min=1e-6)[:, None]
            sampled = torch.multinomial(scaled.softmax(dim=-1), 1)[:, 0]
            next_tokens = torch.where(temps > 0, sampled, greedy)
        else:
            next_tokens = greedy
        chosen_lp = logprobs.gather(1, next_tokens[:, None])[:, 0]
        both = torch.stack([next_tokens.double(), chosen_lp.double()]).tolist()  # one device sync
        toks, lps = [int(t) for t in both[0]], both[1]
        for row, tok, lp in zip(batch_rows, toks, lps, strict=False):
            if row.done:
                continue
            row.sum_logprob += lp
            if tok == eot:
                row.done = True
                finished[row.task].append(row)
            else:
                row.tokens.append(tok)
                row.logprobs.append(lp)
                if tok >= tb:
                    row.max_ts = tok - tb
        alive = [k for k, r in enumerate(batch_rows) if not r.done]
        if len(alive) <= COMPACT_FRACTION * len(batch_rows):
            # Enough rows are done that dropping them (one copy of the caches) beats computing them.
            kept = [batch_rows[k] for k in alive]
            return kept, alive, [r.tokens[-1] for r in kept]
        return batch_rows, list(range(len(batch_rows))), [eot if r.done else r.tokens[-1] for r in batch_rows]

    def _beam_step(
        self, logprobs: Tensor, batch_rows: list[_Row], tasks: list[WindowTask], finished: dict[int, list[_Row]]
    ) -> tuple[list[_Row], list[int], list[int]]:
        """openai/whisper's BeamSearchDecoder.update for every live task: keep the best
        ``beam_size`` unfinished continuations; collect finished ones until there are
        ``beam_size``, which ends that task."""
        eot, tb = self.tokenizer.special.eot, self.tokenizer.special.timestamp_begin
        width = max(t.beam_size for t in tasks)
        top_lp, top_tok = logprobs.topk(width + 1, dim=-1)
        top_lp_l, top_tok_l = top_lp.tolist(), top_tok.tolist()
        by_task: dict[int, list[int]] = {}
        for k, row in enumerate(batch_rows):
            by_task.setdefault(row.task, []).append(k)
        new_rows: list[_Row] = []
        sources: list[int] = []
        for task_index, ks in by_task.items():
            beam_size = tasks[task_index].beam_size
            scores: dict[tuple[int, ...], tuple[float, int, float]] = {}
            for k in ks:
                row = batch_rows[k]
                for lp, tok in zip(top_lp_l[k][: beam_size + 1], top_tok_l[k][: beam_size + 1], strict=False):
                    seq = (*row.tokens, tok)
                    score = row.sum_logprob + lp
                    if seq not in scores or scores[seq][0] < score:
                        scores[seq] = (score, k, lp)
            survivors: list[tuple[_Row, int]] = []
            done = finished[task_index]
            for seq in sorted(scores, key=lambda q: scores[q][0], reverse=True):
                score, k, lp = scores[seq]
                parent = batch_rows[k]
                if seq[-1] == eot:
                    done.append(_Row(task_index, list(seq[:-1]), list(parent.logprobs), score, True))
                elif len(survivors) < beam_size:
                    row = _Row(task_index, list(seq), [*parent.logprobs, lp], score)
                    row.max_ts = seq[-1] - tb if seq[-1] >= tb else parent.max_ts
                    survivors.append((row, k))
            done.sort(key=_normalized, reverse=True)
            del done[beam_size:]
            # Done when beam_size candidates are finished and none still running scores better per
            # token: a short early ending ("CHAPTER II" and end-of-text) must not win just by being
            # first to finish while the full sentence is still being decoded.
            if not survivors or (
                len(done) >= beam_size and _normalized(done[0]) >= max(_normalized(r) for r, _ in survivors)
            ):
                continue
            for row, k in survivors:
                new_rows.append(row)
                sources.append(k)
        return new_rows, sources, [r.tokens[-1] for r in new_rows]

    def _result(self, task: WindowTask, candidates: list[_Row], no_speech_prob: float) -> WindowResult:
        # Rank by log-probability over length (openai-whisper's default, no length penalty).
        best = max(candidates, key=_normalized)
        return WindowResult(
            tokens=list(best.tokens),
            token_logprobs=list(best.logprobs),
            sum_logprob=best.sum_logprob,
            avg_logprob=best.sum_logprob / (len(best.tokens) + 1),
            no_speech_prob=no_speech_prob,
            temperature=task.temperature,
        )
