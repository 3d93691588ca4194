"""``stenod.bench.wer``: the scoring other accuracy tests import."""

from __future__ import annotations

import pytest

from stenod.bench.wer import grouped_wer, normalize_text, paired_difference, uses_character_error_rate, wer


def test_wer_ignores_case_and_punctuation() -> None:
    ref = "And so, my fellow Americans, ask not what your country can do for you."
    hyp = "and so my fellow americans ask not what your country can do for you"
    assert wer([ref], [hyp]) == 0.0


def test_wer_normalizes_numbers_and_spelling() -> None:
    assert wer(["He paid twenty dollars"], ["He paid $20"]) == 0.0
    assert normalize_text("Mr. Smith") == "mister smith"


def test_wer_counts_edits_over_reference_words_across_the_corpus() -> None:
    refs = ["the cat sat down", "good night"]
    hyps = ["the cat sat", "good knight"]
    # 1 deletion + 1 substitution over 6 reference words: pooled, not a mean of per-file rates.
    assert wer(refs, hyps) == pytest.approx(2 / 6)


def test_empty_hypothesis_is_all_deletions() -> None:
    assert wer(["hello world"], [""]) == 1.0


def test_references_that_normalize_to_nothing_are_skipped() -> None:
    assert wer(["♪ ♪", "hello"], ["anything", "hello"]) == 0.0
    assert wer([], []) == 0.0


def test_japanese_and_chinese_use_character_error_rate() -> None:
    assert uses_character_error_rate("ja") and uses_character_error_rate("zh")
    assert not uses_character_error_rate("en")
    assert wer(["今日は良い天気です"], ["今日は良い天気"], language="ja") == pytest.approx(2 / 9)
    # spaces inside CJK text do not count as errors
    assert wer(["我们去公园"], ["我们 去 公园"], language="zh") == 0.0


def test_grouped_wer_scores_each_language_in_its_own_unit() -> None:
    rate = grouped_wer(["hello world", "今日は"], ["hello", "今日は"], ["en", "ja"])
    assert rate == pytest.approx(1 / (2 + 3))


def test_mismatched_lengths_raise() -> None:
    with pytest.raises(ValueError, match="2 references but 1 hypotheses"):
        wer(["a", "b"], ["a"])


def test_paired_difference_of_one_word_on_a_small_set_is_not_resolved() -> None:
    # Ten clips of 16 words; B makes one more error on one clip: +0.63 points, but resampling the
    # clips puts the change anywhere from no difference to more than a point.
    d = paired_difference([1] * 10, [1] * 9 + [2], [16] * 10)
    assert (d.units, d.edits_a, d.edits_b) == (160, 10, 11)
    assert d.difference == pytest.approx(0.62, abs=0.01)
    assert d.low == 0.0 and d.high > 1.0


def test_paired_difference_of_a_consistent_change_excludes_zero() -> None:
    # Fifty clips, B one error better on every one: the interval stays below zero.
    d = paired_difference([3] * 50, [2] * 50, [30] * 50)
    assert d.difference == pytest.approx(-3.33, abs=0.01)
    assert d.high < 0 and d.low == d.high


def test_paired_difference_needs_one_entry_per_item() -> None:
    with pytest.raises(ValueError):
        paired_difference([1, 2], [1], [5, 5])
