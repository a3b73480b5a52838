"""Bad input fails before training, with the line and field named and the not-retriable exit code."""

import json
from pathlib import Path
from typing import Any

import pytest

from tests.trainer.harness import run_trainer, trainer_env, write_spec

BAD_ROWS = [
    ("{not json", "line 2", None),
    ('["a", "b"]', "line 2", None),
    ('{"prompt": "p", "rejected": " r"}', "line 2", "chosen"),
    ('{"prompt": "p", "chosen": " c"}', "line 2", "rejected"),
    ('{"chosen": " c", "rejected": " r"}', "line 2", "prompt"),
    ('{"prompt": "p", "chosen": "", "rejected": " r"}', "line 2", "chosen"),
    (
        '{"prompt": [{"role": "bot", "content": "hi"}], "chosen": [{"role": "assistant", "content": "a"}], '
        '"rejected": [{"role": "assistant", "content": "b"}]}',
        "line 2",
        "prompt[0].role",
    ),
    (
        '{"prompt": [{"role": "user", "content": "hi"}], "chosen": [{"role": "user", "content": "a"}], '
        '"rejected": [{"role": "assistant", "content": "b"}]}',
        "line 2",
        "chosen[0].role",
    ),
]
GOOD_ROW = '{"prompt": "Name a fruit.", "chosen": " apple.", "rejected": " dog."}'
GOOD_CONVERSATION = json.dumps({
    "prompt": [{"role": "user", "content": "Name a fruit."}],
    "chosen": [{"role": "assistant", "content": "apple."}],
    "rejected": [{"role": "assistant", "content": "dog."}],
})  # fmt: skip


def _run(spec: dict[str, Any], tmp_path: Path) -> tuple[Any, dict[str, Any]]:
    log = tmp_path / "termination-log"
    run = run_trainer(
        ["--spec", str(write_spec(tmp_path / "spec.json", spec))],
        env=trainer_env(ALIGND_TERMINATION_LOG=str(log)),
    )
    return run, json.loads(log.read_text())


@pytest.mark.parametrize(("row", "line", "field"), BAD_ROWS)
def test_bad_rows_fail_before_training(
    small_spec: dict[str, Any], tmp_path: Path, row: str, line: str, field: str | None
) -> None:
    data = tmp_path / "bad.jsonl"
    good = GOOD_CONVERSATION if '"role"' in row else GOOD_ROW
    data.write_text(good + "\n" + row + "\n" + good + "\n")
    run, summary = _run(small_spec | {"training_file": str(data)}, tmp_path)
    assert run.returncode == 65
    assert f"bad.jsonl {line}" in run.stderr
    if field:
        assert f"field '{field}'" in run.stderr
    assert summary["exit_code"] == 65 and summary["reason"] == "InvalidData" and line in summary["message"]
    assert not run.metrics("train"), "nothing is trained on bad data"


def test_invalid_utf8_and_empty_file(small_spec: dict[str, Any], tmp_path: Path) -> None:
    data = tmp_path / "bad.jsonl"
    data.write_bytes(GOOD_ROW.encode() + b"\n" + b'{"prompt": "\xff", "chosen": "a", "rejected": "b"}\n')
    run, _ = _run(small_spec | {"training_file": str(data)}, tmp_path)
    assert run.returncode == 65 and "line 2: invalid UTF-8" in run.stderr
    data.write_text("")
    run, _ = _run(small_spec | {"training_file": str(data)}, tmp_path)
    assert run.returncode == 65 and "no rows" in run.stderr


def test_mixed_formats_name_the_line(small_spec: dict[str, Any], tmp_path: Path) -> None:
    data = tmp_path / "mixed.jsonl"
    data.write_text(GOOD_ROW + "\n" + GOOD_CONVERSATION + "\n")
    run, _ = _run(small_spec | {"training_file": str(data)}, tmp_path)
    assert run.returncode == 65 and "mixed.jsonl line 2" in run.stderr and "one format per file" in run.stderr


def test_bad_spec_names_the_field(small_spec: dict[str, Any], tmp_path: Path) -> None:
    spec = small_spec | {"hyperparameters": {"beta": -1}}
    run, summary = _run(spec, tmp_path)
    assert run.returncode == 65
    assert "hyperparameters.beta" in run.stderr and summary["reason"] == "BadInput"


def test_missing_model_and_data_are_bad_input(small_spec: dict[str, Any], tmp_path: Path) -> None:
    run, _ = _run(small_spec | {"training_file": str(tmp_path / "nope.jsonl")}, tmp_path)
    assert run.returncode == 65 and "nope.jsonl" in run.stderr
    empty_dir = tmp_path / "not-a-model"
    empty_dir.mkdir()
    run, _ = _run(small_spec | {"model": str(empty_dir)}, tmp_path)
    assert run.returncode == 65 and "config.json" in run.stderr


def test_batch_larger_than_data_is_bad_input(small_spec: dict[str, Any], tmp_path: Path) -> None:
    data = tmp_path / "few.jsonl"
    data.write_text(GOOD_ROW + "\n")
    spec = small_spec | {"training_file": str(data)}
    spec["hyperparameters"] = small_spec["hyperparameters"] | {"gradient_accumulation_steps": 4}
    run, _ = _run(spec, tmp_path)
    assert run.returncode == 65 and "1 usable pairs" in run.stderr
    spec["hyperparameters"] = small_spec["hyperparameters"] | {
        "batch_size": 2,
        "gradient_accumulation_steps": 4,
    }
    run, _ = _run(spec, tmp_path)
    assert run.returncode == 65 and "gradient_accumulation_steps" in run.stderr


def test_prompt_filling_max_length_is_dropped_with_a_warning(
    small_spec: dict[str, Any], tmp_path: Path
) -> None:
    data = tmp_path / "long.jsonl"
    long_row = json.dumps({"prompt": "word " * 200, "chosen": " a.", "rejected": " b."})
    data.write_text((GOOD_ROW + "\n") * 8 + long_row + "\n")
    spec = small_spec | {"training_file": str(data)}
    spec["hyperparameters"] = small_spec["hyperparameters"] | {"max_length": 64, "max_steps": 1}
    run, _ = _run(spec, tmp_path)
    assert run.returncode == 0, run.stderr
    warnings = run.events("warning")
    assert warnings and warnings[0]["data"]["dropped_prompt_too_long"] == 1


def test_score_reports_every_pair_in_order(
    tiny_model_dir: Path, rule_data: tuple[Path, Path], tmp_path: Path
) -> None:
    out = tmp_path / "scores.jsonl"
    run = run_trainer(
        [
            "score",
            "--model",
            str(tiny_model_dir),
            "--ref",
            str(tiny_model_dir),
            "--data",
            str(rule_data[1]),
            "--out",
            str(out),
        ]
    )
    assert run.returncode == 0, run.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["index"] for r in rows] == list(range(64))
    first = rows[0]
    assert {"chosen_logps", "rejected_logps", "chosen_tokens", "rejected_tokens", "prompt_tokens"} <= set(
        first
    )
    assert first["ref_chosen_logps"] == pytest.approx(first["chosen_logps"], abs=1e-5)
    assert first["reward_margin"] == pytest.approx(0.0, abs=1e-5)
    assert first["chosen_logps"] < 0 and first["chosen_tokens"] > 0


def test_score_bad_data_exits_bad_input(tiny_model_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "bad.jsonl"
    data.write_text(GOOD_ROW + "\n{oops\n")
    run = run_trainer(
        ["score", "--model", str(tiny_model_dir), "--data", str(data), "--out", str(tmp_path / "o")]
    )
    assert run.returncode == 65 and "bad.jsonl line 2" in run.stderr
