"""The rule for storage paths a job's token may name: strictly under `jobs/{job_id}/`, as written."""

import pytest

from alignd.errors import InvalidRequest
from alignd.jobs.paths import confined_key, is_confined

JOB = "ftjob-1"


@pytest.mark.parametrize(
    ("path", "key"),
    [
        ("jobs/ftjob-1/checkpoints/step-00000010", "jobs/ftjob-1/checkpoints/step-00000010"),
        ("jobs/ftjob-1/checkpoints/step-00000010/", "jobs/ftjob-1/checkpoints/step-00000010"),
        ("jobs/ftjob-1/adapter/adapter_model.safetensors", "jobs/ftjob-1/adapter/adapter_model.safetensors"),
        ("jobs/ftjob-1/..hidden", "jobs/ftjob-1/..hidden"),
    ],
)
def test_a_path_under_the_jobs_own_prefix_is_kept(path: str, key: str) -> None:
    assert confined_key(JOB, path, field="checkpoints[0].path") == key
    assert is_confined(JOB, path)


@pytest.mark.parametrize(
    "path",
    [
        "files",
        "files/file-abc",
        "",
        "/",
        "jobs",
        "jobs/ftjob-1",
        "jobs/ftjob-1/",
        "jobs/ftjob-10/checkpoints/step-00000010",
        "jobs/ftjob-1x/checkpoints/step-00000010",
        "jobs/ftjob-2/checkpoints/step-00000010",
        "jobs/ftjob-1/../ftjob-2/checkpoints",
        "jobs/ftjob-1/../x",
        "jobs/ftjob-1/checkpoints/..",
        "jobs/ftjob-1/./checkpoints",
        "jobs/ftjob-1//checkpoints",
        "/jobs/ftjob-1/checkpoints",
        "../jobs/ftjob-1/checkpoints",
        "./jobs/ftjob-1/checkpoints",
        "jobs/ftjob-1/checkpoints\\..\\..\\files",
        "jobs/ftjob-1/step\x00",
        "Jobs/ftjob-1/checkpoints",
        "s3://bucket/jobs/ftjob-1/checkpoints",
        "/tmp/output/checkpoints/step-00000010",
    ],
)
def test_any_other_path_is_refused_naming_the_field(path: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        confined_key(JOB, path, field="checkpoints[2].path")
    assert refused.value.param == "checkpoints[2].path"
    assert refused.value.code == "path_outside_job"
    assert "jobs/ftjob-1/" in refused.value.message
    assert not is_confined(JOB, path)
