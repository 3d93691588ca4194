"""Greedy decoding on fixed buffers, with each run of decoder steps replayed as one CUDA graph.

Why: with few windows per batch a decoder step of ``base`` costs its ~250 kernel launches and a
host round trip (about 3 ms on an H200, docs/BENCHMARKS.md), not arithmetic. Here everything a step
touches has a fixed address and shape: rows are padded up to a bucket size, the self-attention
cache is preallocated for the longest sequence, the write position lives on the device, and the
timestamp rules, the argmax and the bookkeeping (finished rows, last tokens) are tensor operations.
So :data:`STEPS_PER_READ` steps are recorded once per (row bucket, key bucket) as a CUDA graph and
replayed with one launch, and the host reads the chosen tokens once per :data:`STEPS_PER_READ`
steps instead of after every step. A row that emits end-of-text keeps emitting it (its later tokens
are ignored); rows that finished leave the batch when the live ones fit a smaller bucket.

The same code runs eagerly on the CPU (no graphs), which is how the tests check it decodes exactly
what :class:`~stenod.engines.torch_whisper.decoding.WindowDecoder`'s general loop decodes.
Only greedy batches (temperature 0, one row per window) come here; sampling and beam search use
the general loop.
"""

from __future__ import annotations

import logging
import math
import time
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from stenod.engines.torch_whisper.model import DecoderState, Whisper

if TYPE_CHECKING:
    from stenod.engines.torch_whisper.decoding import WindowDecoder, WindowResult, WindowTask, _Row

logger = logging.getLogger(__name__)

STEPS_PER_READ = 8
"""Decoder steps per graph replay and per host read: fewer reads, at most 7 wasted steps a batch."""
ROW_BUCKETS = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256)
"""Batch sizes a graph is recorded for (a batch runs in the smallest bucket that holds it)."""
KEY_BUCKETS = (64, 128, 256)
"""Self-attention lengths a graph is recorded for (plus the full cache): a step attends to the
smallest that covers the sequence so far, so short windows do not read the whole cache."""


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


class StaticGreedy:
    """Fixed decoding buffers for up to ``max_rows`` windows on one model, and their graphs.

    Args:
        decoder: the :class:`WindowDecoder` whose model, tokenizer and token filters are used.
        max_rows: most windows in one greedy batch.
        graphs: record CUDA graphs (CUDA only); otherwise the steps run eagerly (CPU, tests).
    """

    def __init__(self, decoder: WindowDecoder, *, max_rows: int, graphs: bool) -> None:
        self.decoder = decoder
        model: Whisper = decoder.model
        self.model = model
        dims = model.dims
        device = decoder.device
        self.device = device
        self.dtype = next(model.parameters()).dtype
        self.max_rows = max_rows
        self.row_buckets = sorted({b for b in ROW_BUCKETS if b < max_rows} | {max_rows})
        # Longest sequence: a prefix of at most n_ctx/2 + 4 tokens, n_ctx/2 sampled, one read's
        # overshoot; positions never exceed n_ctx - 1 for a live row.
        self.capacity = _round_up(dims.n_text_ctx + dims.n_text_ctx // 2 + STEPS_PER_READ + 8, 16)
        self.key_buckets = sorted({k for k in KEY_BUCKETS if k < self.capacity} | {self.capacity})
        heads = dims.n_text_head
        head_dim = dims.n_text_state // heads
        s = decoder.tokenizer.special
        self.eot, self.tb = s.eot, s.timestamp_begin
        with torch.inference_mode():
            kv = (max_rows, heads, self.capacity, head_dim)
            cross = (max_rows, heads, dims.n_audio_ctx, head_dim)
            dt = self.dtype
            self.self_kv = [(torch.zeros(kv, dtype=dt, device=device), torch.zeros(kv, dtype=dt, device=device)) for _ in range(dims.n_text_layer)]
            self.cross_kv = [
                (torch.zeros(cross, dtype=dt, device=device), torch.zeros(cross, dtype=dt, device=device)) for _ in range(dims.n_text_layer)
            ]
            self.slot = torch.zeros(1, dtype=torch.long, device=device)
            self.pad = torch.zeros(max_rows, dtype=torch.long, device=device)
            self.tok = torch.full((max_rows,), self.eot, dtype=torch.long, device=device)
            self.last = torch.full((max_rows,), self.eot, dtype=torch.long, device=device)
            self.pen = torch.full((max_rows,), self.tb, dtype=torch.long, device=device)
            self.max_ts = torch.full((max_rows,), -1, dtype=torch.long, device=device)
            self.done = torch.ones(max_rows, dtype=torch.bool, device=device)
            self.no_ts = torch.zeros(max_rows, dtype=torch.bool, device=device)
            self.out = torch.zeros(STEPS_PER_READ, 2, max_rows, dtype=torch.float32, device=device)
            self.key_slots = torch.arange(self.capacity, device=device)
            vocab = torch.arange(dims.n_vocab, device=device)
            self.ts_cols = vocab >= self.tb
            self.text_cols = ~self.ts_cols
            self.below_eot = vocab < self.eot
            self.ts_index = vocab - self.tb
        self.graphs: dict[tuple[int, int], torch.cuda.CUDAGraph] = {}
        self.use_graphs = graphs and device.type == "cuda"
        if self.use_graphs:
            self._record_graphs()

    # ------------------------------------------------------------------------------------------
    def _record_graphs(self) -> None:
        """One graph per (row bucket, key bucket), sharing one memory pool (no graph's
        temporaries outlive its replay, and replays never overlap)."""
        started = time.perf_counter()
        pool = torch.cuda.graph_pool_handle()
        with torch.inference_mode(), torch.cuda.device(self.device):
            side = torch.cuda.Stream()  # type: ignore[no-untyped-call]
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):  # warm-up (cuBLAS handles, workspaces) off the capture
                for rows in self.row_buckets:
                    self._reset_rows(0, rows)
                    self.slot.fill_(0)
                    self._steps(rows, self.key_buckets[0])
            torch.cuda.current_stream().wait_stream(side)
            for rows in self.row_buckets:
                for keys in self.key_buckets:
                    self._reset_rows(0, rows)
                    self.slot.fill_(0)
                    graph = torch.cuda.CUDAGraph()
                    with torch.cuda.graph(graph, pool=pool, capture_error_mode="thread_local"):
                        self._steps(rows, keys)
                    self.graphs[(rows, keys)] = graph
            torch.cuda.synchronize(self.device)
        logger.info("recorded %d decoder graphs in %.2fs", len(self.graphs), time.perf_counter() - started)

    def _reset_rows(self, start: int, end: int) -> None:
        """Rows ``start:end`` become fillers: finished, fed end-of-text, no padding."""
        if end > start:
            self.done[start:end] = True
            self.tok[start:end] = self.eot
            self.last[start:end] = self.eot
            self.pen[start:end] = self.tb
            self.max_ts[start:end] = -1
            self.pad[start:end] = 0
            self.no_ts[start:end] = False

    # ------------------------------------------------------------------------------------------
    def _step_logits(self, rows: int, keys: int) -> Tensor:
        """One decoder step for rows ``:rows`` at the device-side position ``slot``: writes the
        keys and values there and returns the next-token logits (rows, n_vocab) in float32."""
        dec = self.model.decoder
        slot = self.slot
        pad = self.pad[:rows]
        positions = (slot - pad).clamp(0, self.model.dims.n_text_ctx - 1)
        x = dec.token_embedding(self.tok[:rows]) + dec.positional_embedding[positions].to(self.dtype)
        x = x[:, None, :]
        key_slots = self.key_slots[:keys]
        valid = (key_slots[None, :] >= pad[:, None]) & (key_slots[None, :] <= slot)
        mask = torch.zeros(valid.shape, dtype=self.dtype, device=self.device).masked_fill(~valid, -math.inf)
        mask = mask[:, None, None, :]
        for block, (ck, cv), (sk, sv) in zip(dec.blocks, self.cross_kv, self.self_kv, strict=False):
            a = block.attn
            h = block.attn_ln(x)
            k_rows, v_rows = sk[:rows], sv[:rows]
            k_rows.index_copy_(2, slot, a.split(a.key(h)))
            v_rows.index_copy_(2, slot, a.split(a.value(h)))
            x = x + a.out(a.attend(a.split(a.query(h)), k_rows[:, :, :keys], v_rows[:, :, :keys], mask))
            ca = block.cross_attn
            assert ca is not None and block.cross_attn_ln is not None
            x = x + ca.out(ca.attend(ca.split(ca.query(block.cross_attn_ln(x))), ck[:rows], cv[:rows]))
            x = x + block.mlp(block.mlp_ln(x))
        x = dec.ln(x)[:, 0]
        return (x @ dec.token_embedding.weight.T).float()

    def _filter(self, logits: Tensor, rows: int) -> Tensor:
        """WindowDecoder._filter after the first step, with masks instead of indexing (no
        data-dependent shapes or branches, so it can be recorded)."""
        last, pen, max_t, no_ts = self.last[:rows], self.pen[:rows], self.max_ts[:rows], self.no_ts[:rows]
        logits = logits.masked_fill(self.decoder._suppress, -math.inf)
        last_ts = last >= self.tb
        pen_ts = pen >= self.tb
        only_text = last_ts & pen_ts  # a timestamp pair just closed: text (or end) next
        only_ts = last_ts & ~pen_ts  # a lone timestamp: another timestamp (or end) next
        floor = torch.where(only_ts, max_t, max_t + 1)  # timestamps never go back
        forbid = (
            (only_text[:, None] & self.ts_cols)
            | (only_ts[:, None] & self.below_eot)
            | (self.ts_cols & (self.ts_index[None, :] < floor[:, None]) & (max_t >= 0)[:, None])
            | (no_ts[:, None] & self.ts_cols)
        )
        logits = logits.masked_fill(forbid, -math.inf)
        logprobs = torch.log_softmax(logits, dim=-1)
        ts_logprob = logprobs[:, self.tb :].logsumexp(dim=-1)
        text_max = logprobs[:, : self.tb].max(dim=-1).values
        force_ts = (ts_logprob > text_max) & ~no_ts  # timestamps together outweigh any text token
        return logits.masked_fill(force_ts[:, None] & self.text_cols, -math.inf)

    def _steps(self, rows: int, keys: int) -> None:
        """:data:`STEPS_PER_READ` greedy steps; chosen tokens and their log-probabilities go to
        ``out[step, 0|1, row]``."""
        for k in range(STEPS_PER_READ):
            logits = self._filter(self._step_logits(rows, keys), rows)
            logprobs = torch.log_softmax(logits, dim=-1)
            best = logits.argmax(dim=-1)
            done = self.done[:rows]
            chosen = torch.where(done, self.eot, best)
            self.out[k, 0, :rows] = chosen.float()
            self.out[k, 1, :rows] = logprobs.gather(1, chosen[:, None])[:, 0]
            done |= chosen == self.eot
            self.pen[:rows] = self.last[:rows]
            self.last[:rows] = chosen
            self.max_ts[:rows] = torch.where(chosen >= self.tb, chosen - self.tb, self.max_ts[:rows])
            self.tok[:rows] = chosen
            self.slot += 1

    def _run_steps(self, rows: int, keys: int) -> None:
        graph = self.graphs.get((rows, keys))
        if graph is not None:
            graph.replay()
        else:
            self._steps(rows, keys)

    # ------------------------------------------------------------------------------------------
    def _gather(self, keep: list[int], rows: int) -> None:
        """Move rows ``keep`` to the front (their caches and step state), fillers after them up
        to ``rows``."""
        index = torch.tensor(keep, device=self.device)
        n = len(keep)
        for k, v in [*self.self_kv, *self.cross_kv]:
            k[:n] = k.index_select(0, index)
            v[:n] = v.index_select(0, index)
        for t in (self.pad, self.tok, self.last, self.pen, self.max_ts, self.done, self.no_ts):
            t[:n] = t.index_select(0, index)
        self._reset_rows(n, rows)

    def _bucket(self, n: int) -> int:
        return next(b for b in self.row_buckets if b >= n)

    def decode(self, tasks: list[WindowTask], features: Tensor) -> list[WindowResult]:
        """Greedy decoding of ``tasks`` (temperature 0, one row each, at most ``max_rows``) on
        their encoder output ``features``."""
        from stenod.engines.torch_whisper.decoding import _Row

        d = self.decoder
        n = len(tasks)
        rows = self._bucket(n)
        prefix_len = max(len(t.prefix) for t in tasks)
        prefix = torch.full((n, prefix_len), self.eot, dtype=torch.long)
        for r, t in enumerate(tasks):
            prefix[r, prefix_len - len(t.prefix) :] = torch.tensor(t.prefix)
        pads = [prefix_len - len(t.prefix) for t in tasks]
        self.pad[:n] = torch.tensor(pads).to(self.device)
        self.no_ts[:n] = torch.tensor([t.without_timestamps for t in tasks]).to(self.device)
        state = DecoderState.in_buffers(
            self.model.decoder,
            features,
            self.pad[:n],
            [(k[:n], v[:n]) for k, v in self.self_kv],
            [(k[:n], v[:n]) for k, v in self.cross_kv],
        )
        logits_all = self.model.decode(prefix.to(self.device), state)
        sot_slots = torch.tensor([p + t.sot_index for p, t in zip(pads, tasks, strict=False)], device=self.device)
        no_speech = logits_all[torch.arange(n, device=self.device), sot_slots].softmax(dim=-1)[:, d.tokenizer.special.no_speech]
        no_ts = self.no_ts[:n]
        logits = d._filter(logits_all[:, -1], None, 0, no_ts, bool(all(t.without_timestamps for t in tasks)))
        del logits_all
        first = logits.argmax(dim=-1)
        first_lp = torch.log_softmax(logits, dim=-1).gather(1, first[:, None])[:, 0]
        self.tok[:n] = first
        self.last[:n] = first
        self.pen[:n] = self.tb
        self.max_ts[:n] = torch.where(first >= self.tb, first - self.tb, -1)
        self.done[:n] = first == self.eot
        self._reset_rows(n, rows)
        self.slot.fill_(prefix_len)
        head = torch.stack([first.float(), first_lp.float(), no_speech.float()])

        batch: list[_Row | None] = [_Row(task=i) for i in range(n)]
        batch += [None] * (rows - n)
        finished: dict[int, _Row] = {}
        slot = prefix_len  # host copy of the device's write position
        no_speech_values: list[float] = []
        first_read = True
        while True:
            keys = next((k for k in self.key_buckets if k >= slot + STEPS_PER_READ), None)
            if keys is None:
                break  # out of room (not reached: budgets end rows first)
            self._run_steps(rows, keys)
            slot += STEPS_PER_READ
            steps = self.out[:, :, :rows]
            if first_read:  # one device-to-host copy per read
                values = torch.cat([head.flatten(), steps.flatten()]).tolist()
                head_values, values = values[: 3 * n], values[3 * n :]
                no_speech_values = head_values[2 * n :]
                self._take(batch, [int(x) for x in head_values[:n]], head_values[n : 2 * n], tasks, finished)
                first_read = False
            else:
                values = steps.flatten().tolist()
            for k in range(STEPS_PER_READ):
                base = k * 2 * rows
                self._take(batch, [int(x) for x in values[base : base + rows]], values[base + rows : base + 2 * rows], tasks, finished)
            alive = [p for p, row in enumerate(batch) if row is not None and not row.done]
            if not alive:
                break
            smaller = self._bucket(len(alive))
            if smaller < rows:
                self._gather(alive, smaller)
                batch = [batch[p] for p in alive] + [None] * (smaller - len(alive))
                rows = smaller
        for row in batch:  # out of room: unfinished rows still compete
            if row is not None and not row.done:
                finished[row.task] = row
        return [d._result(t, [finished[i]], no_speech_values[i]) for i, t in enumerate(tasks)]

    def _take(
        self, batch: list[_Row | None], tokens: list[int], logprobs: list[float], tasks: list[WindowTask], finished: dict[int, _Row]
    ) -> None:
        """One step's tokens into the rows (the host side of WindowDecoder._sample_step)."""
        for row, tok, lp in zip(batch, tokens, logprobs, strict=False):
            if row is None or row.done:
                continue
            row.sum_logprob += lp
            if tok == self.eot:
                row.done = True
                finished[row.task] = row
                continue
            row.tokens.append(tok)
            row.logprobs.append(lp)
            if tok >= self.tb:
                row.max_ts = tok - self.tb
            if len(row.tokens) >= tasks[row.task].sample_len:
                row.done = True  # this window's token budget is spent (a long prompt)
                finished[row.task] = row
