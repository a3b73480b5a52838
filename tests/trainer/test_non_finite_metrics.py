"""A diverging run (NaN or infinite loss) keeps reporting: JSON has no NaN, and the control plane
rejects null metric values, so such values are left out and named once in a warning event."""

import io
import json
import math

from alignd.contract import MetricPoint, ReportBatch, TrainerEvent
from alignd_trainer.distributed import DistInfo
from alignd_trainer.loop import DPORecipe
from alignd_trainer.report import StdoutReporter


def recipe_reporting_to(stream: io.StringIO) -> DPORecipe:
    """Only the reporting half of a recipe: no model is needed to check what it sends."""
    recipe = DPORecipe.__new__(DPORecipe)
    recipe.reporter, recipe.dist, recipe.step = StdoutReporter(stream), DistInfo(), 7
    recipe._non_finite_warned = set()
    return recipe


def test_non_finite_values_are_left_out_and_warned_about_once() -> None:
    stream = io.StringIO()
    recipe = recipe_reporting_to(stream)
    recipe._report_metrics("train", 0.5, {"loss": math.nan, "rewards/margins": math.inf, "grad_norm": 1.5})
    recipe.step = 8
    recipe._report_metrics("train", 0.6, {"loss": math.nan, "grad_norm": 1.2})

    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    points = [MetricPoint.model_validate(line) for line in lines if line["kind"] == "metrics"]
    warnings = [TrainerEvent.model_validate(line) for line in lines if line["kind"] == "event"]
    assert [p.values for p in points] == [{"grad_norm": 1.5}, {"grad_norm": 1.2}]
    assert [w.data["metric"] for w in warnings] == ["loss", "rewards/margins"]
    assert "loss is nan at step 7" in warnings[0].message
    ReportBatch.model_validate({"metrics": [p.model_dump() for p in points]})
