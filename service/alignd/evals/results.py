"""A run's figures from its graded items: pure functions, so the counts users read are computed one way
from what is stored, whichever attempt reported the items.

- An item is `error` when its sample failed or any grader could not grade it, else `pass` when every
  criterion passed, else `fail` (OpenAI's rule: an item passes only if all its criteria do).
- `result_counts`: items by status (`total` = all items).
- `per_testing_criteria_results`: per criterion, in the eval's order, the items it passed and failed;
  a result whose grader errored, or any result of an item whose sample failed, counts in neither.
- `per_model_usage`: the samples' token usage summed per model.
"""

from collections.abc import Iterable, Sequence

from alignd.contract.eval_items import GraderResult, OutputItem, Sample
from alignd.evals.schemas import CriterionResult, ModelUsage, ResultCounts
from alignd.evals.status import OutputItemStatus


def item_status(sample: Sample, results: Sequence[GraderResult]) -> OutputItemStatus:
    if sample.failed or any(result.error for result in results):
        return OutputItemStatus.errored
    if all(result.passed for result in results):
        return OutputItemStatus.passed
    return OutputItemStatus.failed


def result_counts(statuses: Iterable[OutputItemStatus]) -> ResultCounts:
    counts = ResultCounts()
    for status in statuses:
        counts.total += 1
        if status is OutputItemStatus.passed:
            counts.passed += 1
        elif status is OutputItemStatus.failed:
            counts.failed += 1
        else:
            counts.errored += 1
    return counts


def per_criterion(criteria: Sequence[str], items: Iterable[Sequence[GraderResult]]) -> list[CriterionResult]:
    """`criteria`: the eval's criterion names, in order; `items`: each item's results."""
    passed = dict.fromkeys(criteria, 0)
    failed = dict.fromkeys(criteria, 0)
    for results in items:
        for result in results:
            if result.error or result.name not in passed:
                continue
            if result.passed:
                passed[result.name] += 1
            else:
                failed[result.name] += 1
    return [
        CriterionResult(testing_criteria=name, passed=passed[name], failed=failed[name]) for name in criteria
    ]


def per_model_usage(samples: Iterable[Sample]) -> list[ModelUsage]:
    """One entry per model that generated samples (samples of runs that do not generate have none)."""
    usage: dict[str, ModelUsage] = {}
    for sample in samples:
        if not sample.model:
            continue
        entry = usage.setdefault(
            sample.model,
            ModelUsage(
                model_name=sample.model,
                invocation_count=0,
                prompt_tokens=0,
                completion_tokens=0,
                total_tokens=0,
                cached_tokens=0,
            ),
        )
        entry.invocation_count += 1
        entry.prompt_tokens += sample.usage.prompt_tokens
        entry.completion_tokens += sample.usage.completion_tokens
        entry.total_tokens += sample.usage.total_tokens
        entry.cached_tokens += sample.usage.cached_tokens
    return list(usage.values())


def summarize(
    criteria: Sequence[str], items: Sequence[OutputItem]
) -> tuple[ResultCounts, list[CriterionResult], list[ModelUsage]]:
    """All three figures of a run from its items."""
    return (
        result_counts(item_status(item.sample, item.results) for item in items),
        per_criterion(criteria, (item.results for item in items if not item.sample.failed)),
        per_model_usage(item.sample for item in items),
    )
