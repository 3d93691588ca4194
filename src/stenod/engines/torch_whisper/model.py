"""A compact Whisper in PyTorch: OpenAI's architecture and state-dict names, SDPA attention, and a
decoder KV cache laid out for batched decoding.

Why our own module instead of transformers' ``WhisperForConditionalGeneration``: the engine needs
rows of one batch to carry different prompts (left-padded prefixes with per-row positions), a
preallocated self-attention cache that beam search can reorder in place, and cross-attention keys
and values computed once per window; and the CPU install then needs torch alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def disable_cudnn_attention() -> None:
    """Keep SDPA off cuDNN's kernels (torch's default on Hopper): cuDNN builds a plan for every new
    shape, and a decoder step has a new key length every time (2.7 ms per call measured on an
    H200, most of a step); flash and memory-efficient attention have no such cost. Process-wide,
    set once when a CUDA engine loads."""
    torch.backends.cuda.enable_cudnn_sdp(False)


@dataclass(frozen=True, slots=True)
class ModelDimensions:
    """Whisper's hyper-parameters, read off the tensor shapes of any weight format."""

    n_mels: int
    n_audio_ctx: int
    n_audio_state: int
    n_audio_head: int
    n_audio_layer: int
    n_vocab: int
    n_text_ctx: int
    n_text_state: int
    n_text_head: int
    n_text_layer: int


class LayerNorm(nn.LayerNorm):
    """LayerNorm in float32 arithmetic: the CUDA kernel accumulates half inputs in float32 by
    itself (one kernel instead of five per norm, which matters at a decoder step's size); on the
    CPU half inputs are upcast explicitly."""

    def forward(self, x: Tensor) -> Tensor:
        if x.is_cuda or x.dtype == torch.float32:
            return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return F.layer_norm(
            x.float(), self.normalized_shape, self.weight.float(), self.bias.float(), self.eps
        ).type(x.dtype)


class MultiHeadAttention(nn.Module):
    def __init__(self, n_state: int, n_head: int) -> None:
        super().__init__()
        self.n_head = n_head
        self.query = nn.Linear(n_state, n_state)
        self.key = nn.Linear(n_state, n_state, bias=False)
        self.value = nn.Linear(n_state, n_state)
        self.out = nn.Linear(n_state, n_state)

    def split(self, x: Tensor) -> Tensor:
        b, t, _ = x.shape
        return x.view(b, t, self.n_head, -1).transpose(1, 2)

    def merge(self, x: Tensor) -> Tensor:
        b, _, t, _ = x.shape
        return x.transpose(1, 2).reshape(b, t, -1)

    def attend(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None, causal: bool = False) -> Tensor:
        return self.merge(F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal))


class ResidualAttentionBlock(nn.Module):
    def __init__(self, n_state: int, n_head: int, cross_attention: bool = False) -> None:
        super().__init__()
        self.attn = MultiHeadAttention(n_state, n_head)
        self.attn_ln = LayerNorm(n_state)
        self.cross_attn = MultiHeadAttention(n_state, n_head) if cross_attention else None
        self.cross_attn_ln = LayerNorm(n_state) if cross_attention else None
        n_mlp = n_state * 4
        self.mlp = nn.Sequential(nn.Linear(n_state, n_mlp), nn.GELU(), nn.Linear(n_mlp, n_state))
        self.mlp_ln = LayerNorm(n_state)


class AudioEncoder(nn.Module):
    def __init__(self, dims: ModelDimensions) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(dims.n_mels, dims.n_audio_state, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(dims.n_audio_state, dims.n_audio_state, kernel_size=3, stride=2, padding=1)
        self.register_buffer("positional_embedding", torch.empty(dims.n_audio_ctx, dims.n_audio_state))
        self.blocks = nn.ModuleList(
            ResidualAttentionBlock(dims.n_audio_state, dims.n_audio_head) for _ in range(dims.n_audio_layer)
        )
        self.ln_post = LayerNorm(dims.n_audio_state)

    def forward(self, mel: Tensor) -> Tensor:
        """``mel`` (batch, n_mels, 3000) -> audio features (batch, 1500, n_audio_state)."""
        x = F.gelu(self.conv1(mel))
        x = F.gelu(self.conv2(x)).transpose(1, 2)
        x = x + self.positional_embedding[: x.shape[1]].to(x.dtype)
        for block in self.blocks:
            h = block.attn_ln(x)
            a = block.attn
            x = x + a.out(a.attend(a.split(a.query(h)), a.split(a.key(h)), a.split(a.value(h))))
            x = x + block.mlp(block.mlp_ln(x))
        return self.ln_post(x)


class TextDecoder(nn.Module):
    def __init__(self, dims: ModelDimensions) -> None:
        super().__init__()
        self.token_embedding = nn.Embedding(dims.n_vocab, dims.n_text_state)
        self.positional_embedding = nn.Parameter(torch.empty(dims.n_text_ctx, dims.n_text_state))
        self.blocks = nn.ModuleList(
            ResidualAttentionBlock(dims.n_text_state, dims.n_text_head, cross_attention=True)
            for _ in range(dims.n_text_layer)
        )
        self.ln = LayerNorm(dims.n_text_state)


class DecoderState:
    """The decoder's caches for one batch of rows.

    Rows are left-padded to a common prefix length; ``pad[i]`` slots at the start of row ``i`` are
    padding, masked out of attention, and its positions count from its first real token. The
    self-attention cache is preallocated for ``capacity`` slots, so a step writes in place and beam
    search reorders rows with one ``index_select`` per tensor.
    """

    def __init__(self, decoder: TextDecoder, audio_features: Tensor, pad: Tensor, capacity: int) -> None:
        batch = audio_features.shape[0]
        self.pad = pad
        self.length = 0
        self.capacity = capacity
        self.cross_kv: list[tuple[Tensor, Tensor]] = []
        self.self_kv: list[tuple[Tensor, Tensor]] = []
        for block in decoder.blocks:
            ca = block.cross_attn
            assert ca is not None
            self.cross_kv.append((ca.split(ca.key(audio_features)), ca.split(ca.value(audio_features))))
            a = block.attn
            head_dim = audio_features.shape[-1] // a.n_head
            shape = (batch, a.n_head, capacity, head_dim)
            dtype, device = audio_features.dtype, audio_features.device
            self.self_kv.append(
                (torch.zeros(shape, dtype=dtype, device=device), torch.zeros(shape, dtype=dtype, device=device))
            )

    @classmethod
    def in_buffers(
        cls,
        decoder: TextDecoder,
        audio_features: Tensor,
        pad: Tensor,
        self_kv: list[tuple[Tensor, Tensor]],
        cross_kv: list[tuple[Tensor, Tensor]],
    ) -> DecoderState:
        """A state over caller-owned caches (views of fixed buffers, for recorded decoding): the
        cross-attention keys and values of ``audio_features`` are written into ``cross_kv``."""
        state = cls.__new__(cls)
        state.pad = pad
        state.length = 0
        state.capacity = self_kv[0][0].shape[2]
        state.self_kv = self_kv
        state.cross_kv = cross_kv
        for block, (k, v) in zip(decoder.blocks, cross_kv, strict=False):
            ca = block.cross_attn
            assert ca is not None
            k.copy_(ca.split(ca.key(audio_features)))
            v.copy_(ca.split(ca.value(audio_features)))
        return state

    def reorder(self, rows: Tensor, *, cross: bool) -> None:
        """Keep rows ``rows`` in this order (beam search, dropping finished rows). ``cross``:
        rows come from other windows than before, so the cross-attention caches move too; a
        permutation within each window's rows leaves them as they are."""
        self.pad = self.pad.index_select(0, rows)
        end = self.length
        if rows.shape[0] == self.self_kv[0][0].shape[0]:
            for k, v in self.self_kv:  # same row count: permute the filled slots in place
                k[:, :, :end] = k[:, :, :end].index_select(0, rows)
                v[:, :, :end] = v[:, :, :end].index_select(0, rows)
        else:
            self.self_kv = [(k.index_select(0, rows), v.index_select(0, rows)) for k, v in self.self_kv]
        if cross:
            self.cross_kv = [(k.index_select(0, rows), v.index_select(0, rows)) for k, v in self.cross_kv]


class Whisper(nn.Module):
    def __init__(self, dims: ModelDimensions) -> None:
        super().__init__()
        self.dims = dims
        self.encoder = AudioEncoder(dims)
        self.decoder = TextDecoder(dims)

    @property
    def is_multilingual(self) -> bool:
        return self.dims.n_vocab >= 51865

    def new_state(self, audio_features: Tensor, pad: Tensor, capacity: int) -> DecoderState:
        return DecoderState(self.decoder, audio_features, pad, capacity)

    def decode(self, tokens: Tensor, state: DecoderState) -> Tensor:
        """Run ``tokens`` (batch, t) through the decoder after what ``state`` holds; returns the
        logits (batch, t, n_vocab) in float32 and advances the cache by ``t`` slots."""
        dec = self.decoder
        start, t = state.length, tokens.shape[1]
        end = start + t
        if end > state.capacity:
            raise ValueError(f"decoder cache holds {state.capacity} slots, {end} needed")
        slots = torch.arange(start, end, device=tokens.device)
        positions = (slots[None, :] - state.pad[:, None]).clamp(min=0)
        x = dec.token_embedding(tokens) + dec.positional_embedding[positions].to(dec.token_embedding.weight.dtype)
        # Key mask: a row never attends to its padding, nor (within this call) to later slots.
        key_slots = torch.arange(end, device=tokens.device)
        # A padding slot attends to itself only, so no query row is fully masked (SDPA would
        # return NaN there, and NaN keys poison real rows even under a mask).
        mask = (key_slots[None, None, :] >= state.pad[:, None, None]) & (key_slots[None, None, :] <= slots[None, :, None])
        mask = mask | (key_slots[None, None, :] == slots[None, :, None])
        mask = mask[:, None, :, :]  # (batch, 1, t, end)
        for block, (ck, cv), (sk, sv) in zip(dec.blocks, state.cross_kv, state.self_kv, strict=False):
            a = block.attn
            h = block.attn_ln(x)
            sk[:, :, start:end] = a.split(a.key(h))
            sv[:, :, start:end] = a.split(a.value(h))
            x = x + a.out(a.attend(a.split(a.query(h)), sk[:, :, :end], sv[:, :, :end], mask))
            ca = block.cross_attn
            assert ca is not None and block.cross_attn_ln is not None
            x = x + ca.out(ca.attend(ca.split(ca.query(block.cross_attn_ln(x))), ck, cv))
            x = x + block.mlp(block.mlp_ln(x))
        state.length = end
        x = dec.ln(x)
        return (x @ dec.token_embedding.weight.to(x.dtype).T).float()

    def cross_attention_weights(self, tokens: Tensor, audio_features: Tensor, heads: list[tuple[int, int]]) -> Tensor:
        """Cross-attention scores (before softmax) of the alignment ``heads`` (layer, head) for one
        full token sequence per row, computed without SDPA because the scores themselves are
        needed (word timestamps). Returns (batch, len(heads), t, n_audio_frames) in float32."""
        dec = self.decoder
        t = tokens.shape[1]
        x = dec.token_embedding(tokens) + dec.positional_embedding[:t].to(dec.token_embedding.weight.dtype)
        causal = torch.ones(t, t, dtype=torch.bool, device=tokens.device).tril()
        wanted: dict[int, list[int]] = {}
        for layer, head in heads:
            wanted.setdefault(layer, []).append(head)
        collected: dict[tuple[int, int], Tensor] = {}
        for i, block in enumerate(dec.blocks):
            a = block.attn
            h = block.attn_ln(x)
            x = x + a.out(a.attend(a.split(a.query(h)), a.split(a.key(h)), a.split(a.value(h)), causal))
            ca = block.cross_attn
            assert ca is not None and block.cross_attn_ln is not None
            q = ca.split(ca.query(block.cross_attn_ln(x)))
            k, v = ca.split(ca.key(audio_features)), ca.split(ca.value(audio_features))
            if i in wanted:
                scores = (q.float() @ k.float().transpose(-1, -2)) * (q.shape[-1] ** -0.5)
                for head in wanted[i]:
                    collected[(i, head)] = scores[:, head]
            x = x + ca.out(ca.attend(q, k, v))
            x = x + block.mlp(block.mlp_ln(x))
            if i >= max(wanted):
                break
        return torch.stack([collected[h] for h in heads], dim=1)
