"""The evaluator offline (`python -m alignd_trainer.evaluate --spec`), on the tiny model: every item is
graded by every grader, replies are the same for the same seed, and a stop request ends it between
batches with the documented exit code."""

import io
import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from alignd.contract import ExitCode
from alignd.contract.evals import EvalReport, EvalRunSpec
from alignd_trainer.eval_report import EvalReporter
from alignd_trainer.evaluate import evaluate
from alignd_trainer.synthetic import preference_rows

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _spec(model_dir: Path, tmp_path: Path, **overrides: Any) -> EvalRunSpec:
    rows = [
        {**row, "question": row["prompt"][0]["content"]}
        for row in preference_rows(6, seed=3, fmt="conversational")
    ]
    spec: dict[str, Any] = {
        "items": [{"item": row} for row in rows],
        "input_messages": [{"role": "user", "content": "{{item.question}}"}],
        "model": {"name": "tiny", "base": {"location": str(model_dir)}},
        "sampling": {"temperature": 1.0, "max_completion_tokens": 6, "seed": 7},
        "graders": [
            {
                "type": "string_check",
                "name": "says a word",
                "input": "{{sample.output_text}}",
                "reference": "e",
                "operation": "ilike",
            },
            {
                "type": "text_similarity",
                "name": "like chosen",
                "input": "{{sample.output_text}}",
                "reference": "{{item.chosen.0.content}}",
                "evaluation_metric": "fuzzy_match",
                "pass_threshold": 0.3,
            },
            {"type": "preference", "name": "prefers chosen", "beta": 0.1},
        ],
        "batch_size": 4,
        "output_dir": str(tmp_path / "out"),
    }
    return EvalRunSpec.model_validate(spec | overrides)


def _reports(stream: io.StringIO) -> list[EvalReport]:
    return [EvalReport.model_validate_json(line) for line in stream.getvalue().splitlines()]


def _run(spec: EvalRunSpec, stop: threading.Event | None = None) -> list[EvalReport]:
    stream = io.StringIO()
    with EvalReporter(None, stream=stream) as reporter:
        evaluate(spec, reporter, stop or threading.Event())
    return _reports(stream)


def test_every_item_is_graded_by_every_grader_in_batches(tiny_model_dir: Path, tmp_path: Path) -> None:
    reports = _run(_spec(tiny_model_dir, tmp_path))
    items = [item for report in reports for item in report.items]
    assert [item.datasource_item_id for item in items] == list(range(6))
    assert [r.progress.done for r in reports if r.progress] == [0, 4, 6]
    for item in items:
        assert [r.name for r in item.results] == ["says a word", "like chosen", "prefers chosen"]
        assert item.sample.model == "tiny" and item.sample.output[0].role == "assistant"
        assert item.sample.usage.completion_tokens <= 6
        preference = item.results[2]
        assert preference.error is None and preference.alignd is not None
        # The base model against itself: the margin is 0, the verdict is which log-prob is higher.
        assert preference.score == 0.0
        assert preference.passed is (preference.alignd["chosen_logps"] > preference.alignd["rejected_logps"])
        assert item.results[0].passed is ("e" in item.sample.output[0].content.lower())


def test_the_same_seed_gives_the_same_replies(tiny_model_dir: Path, tmp_path: Path) -> None:
    def replies(seed: int) -> list[str]:
        spec = _spec(
            tiny_model_dir, tmp_path, sampling={"temperature": 1.0, "max_completion_tokens": 6, "seed": seed}
        )
        return [i.sample.output[0].content for r in _run(spec) for i in r.items]

    first = replies(7)
    assert replies(7) == first
    assert replies(8) != first


def test_a_missing_item_field_is_an_error_on_that_item(tiny_model_dir: Path, tmp_path: Path) -> None:
    spec = _spec(tiny_model_dir, tmp_path, input_messages=[{"role": "user", "content": "{{item.nope}}"}])
    items = [i for r in _run(spec) for i in r.items]
    assert all(
        i.sample.error.code == "template_error" and "item.nope" in i.sample.error.message for i in items
    )
    assert all(i.results[0].error and "sample" in i.results[0].error for i in items)


def test_a_stop_request_ends_the_run_between_batches(tiny_model_dir: Path, tmp_path: Path) -> None:
    stop = threading.Event()
    stop.set()
    with pytest.raises(Exception) as caught:
        _run(_spec(tiny_model_dir, tmp_path), stop)
    assert getattr(caught.value, "exit_code", None) is ExitCode.TERMINATED


def test_the_module_runs_offline_and_writes_its_exit_summary(tiny_model_dir: Path, tmp_path: Path) -> None:
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(_spec(tiny_model_dir, tmp_path).model_dump_json())
    termination = tmp_path / "termination.json"
    env = {
        "ALIGND_TERMINATION_LOG": str(termination),
        "PATH": "/usr/bin:/bin",
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": ":".join(sys.path),
    }
    done = subprocess.run(
        [sys.executable, "-m", "alignd_trainer.evaluate", "--spec", str(spec_file)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = [
        EvalReport.model_validate_json(line) for line in done.stdout.splitlines() if line.startswith("{")
    ]
    assert sum(len(r.items) for r in lines) == 6
    assert json.loads(termination.read_text())["exit_code"] == 0
