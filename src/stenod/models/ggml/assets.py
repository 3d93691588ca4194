"""Non-tensor parts of a ggml file: mel filters, vocabulary bytes, and the fixed positional embedding."""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

import numpy as np

from stenod.models.ggml.format import (
    _WHISPER_EOT_EN,
    _WHISPER_MULTILINGUAL_MIN_VOCAB,
    WHISPER_N_FFT,
    WHISPER_SAMPLE_RATE,
    GgmlConversionError,
)

# --------------------------------------------------------------------------------------------------
# Mel filters and vocabulary
# --------------------------------------------------------------------------------------------------


def _hz_to_mel_slaney(hz: float) -> float:
    f_sp = 200.0 / 3
    min_log_hz, min_log_mel, logstep = 1000.0, 1000.0 / f_sp, np.log(6.4) / 27.0
    return hz / f_sp if hz < min_log_hz else min_log_mel + float(np.log(hz / min_log_hz)) / logstep


def _mel_to_hz_slaney(mels: np.ndarray) -> np.ndarray:
    f_sp = 200.0 / 3
    min_log_hz, min_log_mel, logstep = 1000.0, 1000.0 / f_sp, np.log(6.4) / 27.0
    freqs = f_sp * mels
    log_t = mels >= min_log_mel
    freqs[log_t] = min_log_hz * np.exp(logstep * (mels[log_t] - min_log_mel))
    return freqs


def mel_filters(n_mels: int, *, sr: int = WHISPER_SAMPLE_RATE, n_fft: int = WHISPER_N_FFT) -> np.ndarray:
    """``librosa.filters.mel(sr, n_fft, n_mels)`` (Slaney scale + norm), i.e. whisper's mel_filters.npz.

    Mirrors librosa's float32 accumulation so values match the npz that convert-pt-to-ggml.py copies.
    Shape (n_mels, n_fft // 2 + 1), float32.
    """
    fftfreqs = np.fft.rfftfreq(n=n_fft, d=1.0 / sr)
    mel_f = _mel_to_hz_slaney(np.linspace(_hz_to_mel_slaney(0.0), _hz_to_mel_slaney(sr / 2.0), n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, fftfreqs)
    weights = np.zeros((n_mels, n_fft // 2 + 1), dtype=np.float32)
    for i in range(n_mels):
        lower = -ramps[i] / fdiff[i]
        upper = ramps[i + 2] / fdiff[i + 1]
        weights[i] = np.maximum(0, np.minimum(lower, upper))
    enorm = 2.0 / (mel_f[2 : n_mels + 2] - mel_f[:n_mels])
    weights *= enorm[:, np.newaxis]
    return weights


@functools.cache
def gpt2_byte_decoder() -> dict[str, int]:
    """Inverse of GPT-2's ``bytes_to_unicode`` (byte-level BPE maps every byte to a printable char)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs, strict=True)}


def _read_token_strings(src_dir: Path) -> tuple[list[str], Path]:
    """Tokens in id order from vocabulary.json / vocabulary.txt (CTranslate2) or tokenizer.json (HF)."""
    json_vocab, txt_vocab, tok_json = (src_dir / n for n in ("vocabulary.json", "vocabulary.txt", "tokenizer.json"))
    try:
        if json_vocab.is_file():
            tokens = json.loads(json_vocab.read_text(encoding="utf-8"))
            if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
                raise GgmlConversionError(f"{json_vocab}: expected a JSON list of strings")
            return tokens, json_vocab
        if txt_vocab.is_file():
            text = txt_vocab.read_text(encoding="utf-8")
            if text.endswith("\n"):
                text = text[:-1]
            return text.split("\n"), txt_vocab  # not splitlines(): it also splits on U+0085 etc.
        if tok_json.is_file():
            return _tokens_from_tokenizer_json(tok_json), tok_json
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise GgmlConversionError(f"{src_dir}: cannot read the vocabulary: {exc}") from exc
    raise GgmlConversionError(f"{src_dir}: no vocabulary.json, vocabulary.txt or tokenizer.json found")


def _tokens_from_tokenizer_json(path: Path) -> list[str]:
    data = json.loads(path.read_text(encoding="utf-8"))
    try:
        by_id: dict[int, str] = {int(i): t for t, i in data["model"]["vocab"].items()}
        by_id.update({int(t["id"]): t["content"] for t in data.get("added_tokens", [])})
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise GgmlConversionError(f"{path}: not a BPE tokenizer.json ({exc!r})") from exc
    size = max(by_id) + 1 if by_id else 0
    return [by_id.get(i, "") for i in range(size)]


def load_vocabulary_bytes(src_dir: str | os.PathLike[str], n_vocab: int) -> list[bytes]:
    """The regular (non-special) tokens as raw bytes, in id order, exactly as convert-pt-to-ggml.py writes.

    whisper.cpp reads these and synthesizes the special tokens itself from hardcoded ids
    (eot = 50256, +1 for multilingual vocabularies), so the token list must stop right before
    ``<|endoftext|>`` and that token must sit where whisper.cpp expects it.
    """
    src_dir = Path(src_dir)
    tokens, source = _read_token_strings(src_dir)
    eot = _WHISPER_EOT_EN + (1 if n_vocab >= _WHISPER_MULTILINGUAL_MIN_VOCAB else 0)
    if len(tokens) <= eot or tokens[eot] != "<|endoftext|>":
        found = tokens.index("<|endoftext|>") if "<|endoftext|>" in tokens else None
        raise GgmlConversionError(
            f"{source}: <|endoftext|> is at id {found}, but whisper.cpp expects id {eot} for n_vocab={n_vocab}"
        )
    decoder = gpt2_byte_decoder()
    out: list[bytes] = []
    for i, token in enumerate(tokens[:eot]):
        try:
            out.append(bytes(decoder[c] for c in token))
        except KeyError as exc:
            raise GgmlConversionError(f"{source}: token {i} {token!r} is not GPT-2 byte-level ({exc})") from None
    return out


def sinusoids(length: int, channels: int, max_timescale: float = 10000.0) -> np.ndarray:
    """openai/whisper's ``sinusoids()``: the fixed encoder positional embedding, for folders lacking it."""
    if channels % 2:
        raise GgmlConversionError(f"sinusoids need an even channel count, got {channels}")
    log_increment = np.log(max_timescale) / (channels // 2 - 1)
    inv_timescales = np.exp(-log_increment * np.arange(channels // 2, dtype=np.float32)).astype(np.float32)
    scaled = np.arange(length, dtype=np.float32)[:, None] * inv_timescales[None, :]
    return np.concatenate([np.sin(scaled), np.cos(scaled)], axis=1).astype(np.float32)
