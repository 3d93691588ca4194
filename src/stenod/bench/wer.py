"""Word and character error rates after Whisper's text normalization.

Corpus references come in different styles (upper case without punctuation, lower case, digits
and punctuation), so both sides are normalized before scoring, the way the Whisper paper scores:
English text with Whisper's ``EnglishTextNormalizer`` (spelling, numbers, contractions), other
languages with its ``BasicTextNormalizer``. Japanese and Chinese are written without spaces, so
they are scored by character error rate (spaces removed) instead of word error rate.

The error rate is corpus-level: total edits over total reference words, not a mean of per-file
rates, so a one-word file does not weigh as much as a paragraph.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import jiwer
import numpy as np

CHARACTER_LANGUAGES = frozenset({"ja", "zh", "yue", "th", "lo", "km", "my"})
"""Languages written without spaces between words: scored by character error rate."""


@functools.cache
def _english_normalizer() -> Callable[[str], str]:
    from whisper_normalizer.english import EnglishTextNormalizer

    return EnglishTextNormalizer()


@functools.cache
def _basic_normalizer() -> Callable[[str], str]:
    from whisper_normalizer.basic import BasicTextNormalizer

    return BasicTextNormalizer()


def uses_character_error_rate(language: str | None) -> bool:
    """Whether :func:`wer` scores ``language`` by characters (ja, zh and other unspaced scripts)."""
    return (language or "en").split("-")[0].lower() in CHARACTER_LANGUAGES


def normalize_text(text: str, language: str | None = "en") -> str:
    """Normalize ``text`` for scoring: Whisper's English normalizer for ``en`` (and ``None``),
    its basic normalizer otherwise; unspaced scripts also lose their spaces."""
    lang = (language or "en").split("-")[0].lower()
    normalized = _english_normalizer()(text) if lang == "en" else _basic_normalizer()(text)
    if lang in CHARACTER_LANGUAGES:
        return "".join(normalized.split())
    return " ".join(normalized.split())


def wer(references: Sequence[str], hypotheses: Sequence[str], language: str | None = "en") -> float:
    """Corpus error rate of ``hypotheses`` against ``references`` after normalization.

    Word error rate, or character error rate for ja/zh (see :data:`CHARACTER_LANGUAGES`).
    Pairs whose normalized reference is empty are skipped (there is nothing to score against).

    Args:
        references: reference transcripts, any casing or punctuation style.
        hypotheses: model output, in the same order.
        language: ISO-639-1 code of all pairs; ``None`` is treated as English.

    Returns:
        Edits / reference units, e.g. 0.05 for 5 %. 0.0 when nothing could be scored.

    Raises:
        ValueError: the two sequences differ in length.
    """
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    refs: list[str] = []
    hyps: list[str] = []
    for ref, hyp in zip(references, hypotheses, strict=True):
        r = normalize_text(ref, language)
        if not r:
            continue
        refs.append(r)
        hyps.append(normalize_text(hyp, language))
    if not refs:
        return 0.0
    if uses_character_error_rate(language):
        return float(jiwer.cer(refs, hyps))
    # jiwer refuses an empty hypothesis string; an empty output is all deletions.
    out = jiwer.process_words(refs, [h if h else "" for h in hyps])
    return float(out.wer)


def error_counts(references: Sequence[str], hypotheses: Sequence[str], language: str | None = "en") -> tuple[int, int]:
    """``(edits, reference units)`` behind :func:`wer`, so rates of several groups can be pooled."""
    refs = [normalize_text(r, language) for r in references]
    pairs = [(r, normalize_text(h, language)) for r, h in zip(refs, hypotheses, strict=True) if r]
    if not pairs:
        return 0, 0
    if uses_character_error_rate(language):
        chars = jiwer.process_characters([p[0] for p in pairs], [p[1] for p in pairs])
        return chars.substitutions + chars.deletions + chars.insertions, sum(len(p[0]) for p in pairs)
    words = jiwer.process_words([p[0] for p in pairs], [p[1] for p in pairs])
    return words.substitutions + words.deletions + words.insertions, sum(len(p[0].split()) for p in pairs)


def grouped_wer(
    references: Sequence[str], hypotheses: Sequence[str], languages: Sequence[str | None]
) -> float:
    """Pooled error rate over pairs of mixed languages: each pair is normalized and scored in its
    own language (words or characters), and edits and units are summed across all pairs."""
    edits = units = 0
    by_lang: dict[str | None, tuple[list[str], list[str]]] = {}
    for ref, hyp, lang in zip(references, hypotheses, languages, strict=True):
        by_lang.setdefault(lang, ([], []))
        by_lang[lang][0].append(ref)
        by_lang[lang][1].append(hyp)
    for lang, (refs, hyps) in by_lang.items():
        e, u = error_counts(refs, hyps, lang)
        edits += e
        units += u
    return edits / units if units else 0.0


@dataclass(frozen=True, slots=True)
class PairedDifference:
    """Error rate of system B minus system A on the same items, with a bootstrap interval."""

    units: int
    """Reference words (or characters) of all items."""
    edits_a: int
    edits_b: int
    difference: float
    """(edits_b - edits_a) / units, in points (x 100)."""
    low: float
    high: float
    """The central 95 % of the difference over resamplings of the items, in points."""


def paired_difference(
    edits_a: Sequence[int], edits_b: Sequence[int], units: Sequence[int], *, resamples: int = 2000, seed: int = 0
) -> PairedDifference:
    """How much B's error rate differs from A's on the same items, and how sure that is.

    A paired bootstrap over items (clips): both systems are scored on the same resampled clips,
    so the interval shows what a set this small can resolve. A set of 10 clips whose difference
    is one word has an interval far wider than a 0.3-point contract.

    Args:
        edits_a, edits_b: edits per item of each system (:func:`error_counts` of one pair).
        units: reference words (characters for ja/zh) per item.
    """
    if not (len(edits_a) == len(edits_b) == len(units)):
        raise ValueError("edits_a, edits_b and units need one entry per item")
    a, b, n = (np.asarray(x, dtype=np.int64) for x in (edits_a, edits_b, units))
    total = int(n.sum())
    if total == 0:
        return PairedDifference(0, int(a.sum()), int(b.sum()), 0.0, 0.0, 0.0)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(n), size=(resamples, len(n)))
    diffs = 100.0 * ((b[picks] - a[picks]).sum(axis=1) / np.maximum(n[picks].sum(axis=1), 1))
    low, high = np.percentile(diffs, [2.5, 97.5])
    return PairedDifference(total, int(a.sum()), int(b.sum()), round(100.0 * (int(b.sum()) - int(a.sum())) / total, 2),
                            round(float(low), 2), round(float(high), 2))
