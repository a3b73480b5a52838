"""Graders that compare two strings, with no model and no service: `string_check` and `text_similarity`.

The operations follow OpenAI's graders: `like` and `ilike` test containment (case-sensitive and not),
not SQL patterns. Metrics are computed on word tokens (runs of letters and digits, and single
punctuation marks), so "Paris." and "Paris" share a token:
- fuzzy_match: the character-level similarity ratio 2·M / (|a| + |b|), M the matched characters
  (difflib's Ratcliff/Obershelp matching, which is rapidfuzz's `ratio` on most inputs);
- bleu: sentence BLEU-4 (Papineni et al., 2002), uniform weights, brevity penalty, and zero n-gram
  counts smoothed to 0.1 (Chen and Cherry, 2014, method 1) so one missing 4-gram is not a score of 0;
- gleu: Google-BLEU (Wu et al., 2016): min(precision, recall) over all 1- to 4-grams;
- rouge_n: F1 of n-gram overlap; rouge_l: F1 of the longest common subsequence (Lin, 2004).
"""

import difflib
import math
import re
from collections import Counter
from collections.abc import Sequence

from alignd.contract.evals import StringCheckGrader, TextMetric

TOKEN = re.compile(r"\w+|[^\w\s]")
SMOOTHING_EPSILON = 0.1


def string_check(operation: str, value: str, reference: str) -> bool:
    match operation:
        case "eq":
            return value == reference
        case "ne":
            return value != reference
        case "like":
            return reference in value
        case "ilike":
            return reference.casefold() in value.casefold()
        case _:
            raise ValueError(f"unknown string_check operation {operation!r}")


def check(grader: StringCheckGrader, value: str, reference: str) -> float:
    return 1.0 if string_check(grader.operation, value, reference) else 0.0


def tokens(text: str) -> list[str]:
    return TOKEN.findall(text)


def ngrams(words: Sequence[str], n: int) -> Counter[tuple[str, ...]]:
    return Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))


def fuzzy_match(value: str, reference: str) -> float:
    if not value and not reference:
        return 1.0
    return difflib.SequenceMatcher(None, value, reference, autojunk=False).ratio()


def bleu(value: str, reference: str, max_n: int = 4) -> float:
    hypothesis, ref = tokens(value), tokens(reference)
    if not hypothesis or not ref:
        return float(hypothesis == ref)
    log_precision = 0.0
    for n in range(1, max_n + 1):
        hyp_ngrams, ref_ngrams = ngrams(hypothesis, n), ngrams(ref, n)
        total = sum(hyp_ngrams.values())
        matched = sum((hyp_ngrams & ref_ngrams).values())
        # A hypothesis shorter than n words has no n-grams: its precision is smoothed like a zero count.
        precision = (matched or SMOOTHING_EPSILON) / total if total else SMOOTHING_EPSILON
        log_precision += math.log(precision) / max_n
    brevity = 1.0 if len(hypothesis) > len(ref) else math.exp(1 - len(ref) / len(hypothesis))
    return brevity * math.exp(log_precision)


def gleu(value: str, reference: str, max_n: int = 4) -> float:
    hypothesis, ref = tokens(value), tokens(reference)
    hyp_total = ref_total = matched = 0
    for n in range(1, max_n + 1):
        hyp_ngrams, ref_ngrams = ngrams(hypothesis, n), ngrams(ref, n)
        hyp_total += sum(hyp_ngrams.values())
        ref_total += sum(ref_ngrams.values())
        matched += sum((hyp_ngrams & ref_ngrams).values())
    if hyp_total == 0 or ref_total == 0:
        return float(hyp_total == ref_total)
    return min(matched / hyp_total, matched / ref_total)


def _f1(matched: int, hyp_total: int, ref_total: int) -> float:
    if matched == 0:
        return float(hyp_total == ref_total == 0)
    precision, recall = matched / hyp_total, matched / ref_total
    return 2 * precision * recall / (precision + recall)


def rouge_n(value: str, reference: str, n: int) -> float:
    hyp_ngrams, ref_ngrams = ngrams(tokens(value), n), ngrams(tokens(reference), n)
    matched = sum((hyp_ngrams & ref_ngrams).values())
    return _f1(matched, sum(hyp_ngrams.values()), sum(ref_ngrams.values()))


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b):
            current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def rouge_l(value: str, reference: str) -> float:
    hypothesis, ref = tokens(value), tokens(reference)
    return _f1(lcs_length(hypothesis, ref), len(hypothesis), len(ref))


def similarity(metric: TextMetric, value: str, reference: str) -> float:
    """The metric's score of `value` against `reference`, in [0, 1]."""
    match metric:
        case "fuzzy_match":
            return fuzzy_match(value, reference)
        case "bleu":
            return bleu(value, reference)
        case "gleu":
            return gleu(value, reference)
        case "rouge_l":
            return rouge_l(value, reference)
        case "rouge_1" | "rouge_2" | "rouge_3" | "rouge_4" | "rouge_5":
            return rouge_n(value, reference, int(metric[-1]))
        case _:
            raise ValueError(f"unknown text_similarity metric {metric!r}")
