"""A job request becomes the frozen spec the trainer receives: "auto" resolved, extensions kept."""

import pytest

from alignd.contract import LossType, TrainingMethod, TrainingType
from alignd.errors import InvalidRequest
from alignd.jobs.spec import auto_epochs, resolve_job
from alignd.schemas import JobCreate


def _resolve(body: dict[str, object], rows: int = 500) -> object:
    request = JobCreate.model_validate({"model": "tiny", "training_file": "file-1", **body})
    return resolve_job(request, job_id="ftjob-1", model_location="/models/tiny", training_rows=rows)


def test_auto_values_resolve_to_documented_defaults() -> None:
    resolved = _resolve({"method": {"type": "dpo", "dpo": {"hyperparameters": {"beta": "auto"}}}}, rows=500)
    hp = resolved.spec.hyperparameters  # type: ignore[attr-defined]
    assert (hp.beta, hp.batch_size, hp.n_epochs, hp.learning_rate) == (0.1, 8, 3, 5e-5)
    assert resolved.hyperparameters.learning_rate_multiplier == 1.0  # type: ignore[attr-defined]
    assert resolved.spec.model == "/models/tiny"  # type: ignore[attr-defined]
    assert [auto_epochs(n) for n in (10, 5_000, 50_000)] == [3, 2, 1]


def test_multiplier_scales_the_base_rate_of_the_training_type() -> None:
    resolved = _resolve({
        "method": {"type": "dpo", "dpo": {"hyperparameters": {"learning_rate_multiplier": 2.0}}},
        "alignd": {"training_type": "full"},
    })  # fmt: skip
    assert resolved.spec.training_type is TrainingType.full  # type: ignore[attr-defined]
    assert resolved.spec.hyperparameters.learning_rate == pytest.approx(2e-6)  # type: ignore[attr-defined]


def test_extensions_pass_through_to_the_spec() -> None:
    hp = {"loss_type": ["sigmoid", "sft"], "loss_weights": [1, 0.2], "max_length": 512, "eval_steps": 5}
    spec = _resolve({"method": {"type": "dpo", "dpo": {"hyperparameters": hp}}}).spec  # type: ignore[attr-defined]
    assert spec.hyperparameters.loss_type == [LossType.sigmoid, LossType.sft]
    assert (spec.hyperparameters.max_length, spec.hyperparameters.eval_steps) == (512, 5)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (
            {"method": {"type": "dpo", "dpo": {"hyperparameters": {"beta": -1}}}},
            "method.dpo.hyperparameters.beta",
        ),
        (
            {
                "method": {
                    "type": "dpo",
                    "dpo": {"hyperparameters": {"loss_type": ["ipo"], "loss_weights": [1, 2]}},
                }
            },
            "method.dpo.hyperparameters",
        ),
        ({"method": {"type": "reinforcement"}}, "method.type"),
        ({"method": {"type": "supervised", "dpo": {}}}, "method.dpo"),
        (
            {"method": {"type": "supervised", "supervised": {"hyperparameters": {"max_length": 2}}}},
            "method.supervised.hyperparameters.max_length",
        ),
    ],
)
def test_bad_hyperparameters_name_the_field(body: dict[str, object], param: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        _resolve(body)
    assert caught.value.param is not None and caught.value.param.startswith(param)
    assert caught.value.status_code == 400


def test_supervised_resolves_without_dpo_fields_and_with_sft_rates() -> None:
    hp = {"n_epochs": 2, "learning_rate_multiplier": 0.5, "max_length": 256}
    resolved = _resolve({"method": {"type": "supervised", "supervised": {"hyperparameters": hp}}}, rows=20)
    spec = resolved.spec  # type: ignore[attr-defined]
    assert spec.method is TrainingMethod.supervised and spec.init is None
    assert (spec.hyperparameters.n_epochs, spec.hyperparameters.batch_size) == (2, 8)
    assert spec.hyperparameters.learning_rate == pytest.approx(0.5 * 2e-4)
    assert spec.hyperparameters.max_length == 256
    echoed = resolved.hyperparameters.model_dump()  # type: ignore[attr-defined]
    assert echoed == {"batch_size": 8, "learning_rate_multiplier": 0.5, "n_epochs": 2}


@pytest.mark.parametrize(
    ("alignd", "merged"),
    [
        ({}, True),
        ({"merged_weights": False}, False),
        ({"merged_weights": True}, True),
        ({"training_type": "full"}, False),
        ({"training_type": "full", "merged_weights": False}, False),
    ],
)
def test_merged_weights_default_on_for_lora_only(alignd: dict[str, object], merged: bool) -> None:
    assert _resolve({"alignd": alignd}).spec.merged_weights is merged  # type: ignore[attr-defined]


def test_merged_weights_on_a_full_job_is_refused_not_dropped() -> None:
    with pytest.raises(InvalidRequest) as refused:
        _resolve({"alignd": {"training_type": "full", "merged_weights": True}})
    assert refused.value.param == "alignd.merged_weights"
    assert "artifacts/adapter" in refused.value.message
