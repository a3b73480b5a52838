"""`alignd.evals.results`: a run's figures from its items, computed by hand."""

from alignd.contract.eval_items import GraderResult, OutputItem, Sample, SampleError, SampleUsage
from alignd.evals.results import item_status, per_criterion, per_model_usage, result_counts, summarize
from alignd.evals.status import OutputItemStatus


def result(name: str, passed: bool, error: str | None = None) -> GraderResult:
    return GraderResult(name=name, type="string_check", passed=passed, score=float(passed), error=error)


def item(index: int, *results: GraderResult, failed_sample: bool = False, model: str = "m") -> OutputItem:
    error = SampleError(code="boom", message="no reply") if failed_sample else SampleError()
    usage = SampleUsage(prompt_tokens=10, completion_tokens=index, total_tokens=10 + index, cached_tokens=1)
    return OutputItem(
        datasource_item_id=index,
        datasource_item={},
        results=list(results),
        sample=Sample(model=model, usage=usage, error=error),
    )


def test_an_item_passes_only_if_every_criterion_passes() -> None:
    assert item_status(Sample(), [result("a", True), result("b", True)]) is OutputItemStatus.passed
    assert item_status(Sample(), [result("a", True), result("b", False)]) is OutputItemStatus.failed
    assert (
        item_status(Sample(), [result("a", True), result("b", False, error="judge down")])
        is OutputItemStatus.errored
    )
    failed_sample = Sample(error=SampleError(message="timeout"))
    assert item_status(failed_sample, [result("a", True)]) is OutputItemStatus.errored
    assert item_status(Sample(), []) is OutputItemStatus.passed


def test_result_counts() -> None:
    statuses = [
        OutputItemStatus.passed,
        OutputItemStatus.failed,
        OutputItemStatus.passed,
        OutputItemStatus.errored,
    ]
    assert result_counts(statuses).model_dump() == {"total": 4, "passed": 2, "failed": 1, "errored": 1}
    assert result_counts([]).model_dump() == {"total": 0, "passed": 0, "failed": 0, "errored": 0}


def test_per_criterion_keeps_the_eval_order_and_skips_errored_results() -> None:
    rows = [
        [result("b", True), result("a", False)],
        [result("a", True), result("b", False, error="no score")],
        [result("a", True)],  # b never reported for this item
    ]
    assert [c.model_dump() for c in per_criterion(["a", "b"], rows)] == [
        {"testing_criteria": "a", "passed": 2, "failed": 1},
        {"testing_criteria": "b", "passed": 1, "failed": 0},
    ]


def test_usage_is_summed_per_model_and_samples_without_a_model_are_left_out() -> None:
    samples = [item(1).sample, item(2).sample, item(3, model="other").sample, Sample()]
    usage = [u.model_dump() for u in per_model_usage(samples)]
    assert usage == [
        {
            "model_name": "m",
            "invocation_count": 2,
            "prompt_tokens": 20,
            "completion_tokens": 3,
            "total_tokens": 23,
            "cached_tokens": 2,
        },
        {
            "model_name": "other",
            "invocation_count": 1,
            "prompt_tokens": 10,
            "completion_tokens": 3,
            "total_tokens": 13,
            "cached_tokens": 1,
        },
    ]


def test_summarize_leaves_results_of_failed_samples_out_of_the_criteria() -> None:
    items = [
        item(0, result("a", True)),
        item(1, result("a", False)),
        item(2, result("a", True), failed_sample=True),
    ]
    counts, criteria, usage = summarize(["a"], items)
    assert counts.model_dump() == {"total": 3, "passed": 1, "failed": 1, "errored": 1}
    assert [c.model_dump() for c in criteria] == [{"testing_criteria": "a", "passed": 1, "failed": 1}]
    assert usage[0].invocation_count == 3
