"""The chart's `estimate` values: the throughput table and the row cap reach the API server's settings,
and the schema refuses a table entry without its figures."""

import pytest

from alignd.config import Settings
from alignd.estimates.throughput import Throughput, default_throughput
from tests.helm.chart import only, render, template


def test_the_throughput_table_and_the_row_cap_reach_the_settings(
    helm: list[str], clean_alignd_env: pytest.MonkeyPatch
) -> None:
    values = [
        "--set",
        "estimate.throughput.h100.lora=40000",
        "--set",
        "estimate.throughput.h100.full=30000",
        "--set",
        "estimate.throughput.h100.params=1038682112",
        "--set",
        "estimate.throughput.h100.source=our bench run",
        "--set",
        "estimate.maxRows=5000",
    ]
    for name, value in only(render(helm, *values), "ConfigMap")["data"].items():
        clean_alignd_env.setenv(name, value)
    settings = Settings()

    assert settings.estimate_throughput == {
        "h100": Throughput(lora=40000, full=30000, params=1038682112, source="our bench run")
    }
    assert settings.estimate_max_rows == 5000


def test_by_default_the_built_in_table_applies(helm: list[str], clean_alignd_env: pytest.MonkeyPatch) -> None:
    data = only(render(helm), "ConfigMap")["data"]
    assert "ALIGND_ESTIMATE_THROUGHPUT" not in data
    for name, value in data.items():
        clean_alignd_env.setenv(name, value)
    assert Settings().estimate_throughput == default_throughput()


def test_a_table_entry_needs_its_figures(helm: list[str]) -> None:
    result = template(helm, "--set", "estimate.throughput.h100.lora=40000")
    assert result.returncode != 0
    assert "estimate" in result.stderr and "params" in result.stderr
