"""string_check and text_similarity against hand-computed values."""

import math

import pytest

from alignd_trainer.graders.text import bleu, fuzzy_match, gleu, rouge_l, rouge_n, similarity, string_check


@pytest.mark.parametrize(
    ("operation", "value", "reference", "expected"),
    [
        ("eq", "Paris", "Paris", True),
        ("eq", "Paris", "paris", False),
        ("ne", "Paris", "Rome", True),
        ("like", "Ahoy! The capital is Paris.", "Ahoy", True),
        ("like", "ahoy there", "Ahoy", False),
        ("ilike", "ahoy there", "AHOY", True),
        ("ilike", "hello", "ahoy", False),
    ],
)
def test_string_check_operations(operation: str, value: str, reference: str, expected: bool) -> None:
    assert string_check(operation, value, reference) is expected


def test_fuzzy_match_is_the_matched_share_of_both_strings() -> None:
    """ "abcd" vs "abce": 3 matched characters, 2·3/(4+4) = 0.75."""
    assert fuzzy_match("abcd", "abce") == pytest.approx(0.75)
    assert fuzzy_match("same", "same") == 1.0


def test_bleu_of_an_identical_sentence_is_one_and_of_a_short_one_has_the_brevity_penalty() -> None:
    """Hypothesis "the cat" vs reference "the cat sat on the mat" (6 tokens): 1- and 2-gram precision 1,
    3- and 4-grams absent (smoothed to 0.1 each); BP = exp(1 - 6/2).
    BLEU = exp(-2) · (1·1·0.1·0.1)^(1/4) = exp(-2) · 0.1**0.5."""
    assert bleu("the cat sat on the mat", "the cat sat on the mat") == pytest.approx(1.0)
    assert bleu("the cat", "the cat sat on the mat") == pytest.approx(math.exp(-2) * 0.1**0.5)


def test_gleu_is_the_smaller_of_ngram_precision_and_recall() -> None:
    """ "a b" vs "a b c": hypothesis n-grams a, b, ab (3); reference a, b, c, ab, bc, abc (6); matched 3.
    min(3/3, 3/6) = 0.5."""
    assert gleu("a b", "a b c") == pytest.approx(0.5)


def test_rouge_scores_are_f1_of_overlap() -> None:
    """rouge_1 of "a b c d" vs "a b e": matched 2, P = 2/4, R = 2/3, F1 = 2·(1/2·2/3)/(1/2+2/3) = 4/7.
    rouge_l of "a x b y c" vs "a b c": LCS 3, P = 3/5, R = 1, F1 = 0.75."""
    assert rouge_n("a b c d", "a b e", 1) == pytest.approx(4 / 7)
    assert rouge_n("a b c d", "a b e", 2) == pytest.approx(2 * (1 / 3 * 1 / 2) / (1 / 3 + 1 / 2))
    assert rouge_l("a x b y c", "a b c") == pytest.approx(0.75)
    assert similarity("rouge_l", "a x b y c", "a b c") == pytest.approx(0.75)


def test_punctuation_is_its_own_token() -> None:
    assert similarity("rouge_1", "Paris.", "Paris") == pytest.approx(2 * (1 / 2) / (1 / 2 + 1))
