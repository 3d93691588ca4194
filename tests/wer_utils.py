"""Scoring helpers for tests: the benchmark suite's normalizer and corpus-level WER
(:mod:`stenod.bench.wer`), so tests and benchmarks score the same way."""

from __future__ import annotations

from stenod.bench.wer import normalize_text, wer


def normalize(text: str) -> str:
    """Whisper's English normalization, whitespace collapsed."""
    return normalize_text(text, "en")


__all__ = ["normalize", "wer"]
