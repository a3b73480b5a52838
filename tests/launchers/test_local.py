"""alignd/launchers/local.py: a run's kind picks the module its process starts."""

import json
import os
import stat
import time
from pathlib import Path

import pytest

from alignd.contract import JobSpec
from alignd.jobs.lifecycle import RunKind
from alignd.launchers import LaunchRequest, LocalLauncher


@pytest.mark.parametrize(
    ("kind", "module"), [(RunKind.train, "alignd_trainer"), (RunKind.evaluate, "alignd_trainer.evaluate")]
)
def test_the_run_kind_picks_the_module(tmp_path: Path, kind: RunKind, module: str) -> None:
    """The launcher's `python` is a script that writes down its arguments, so the test sees exactly what
    a real interpreter would have been asked to run."""
    python = tmp_path / "python"
    python.write_text('#!/bin/sh\nprintf "%s\\n" "$@" > args.txt\n')
    python.chmod(python.stat().st_mode | stat.S_IXUSR)
    launcher = LocalLauncher(tmp_path / "runs", python=str(python), env=dict(os.environ))
    spec = JobSpec(model="/models/base", training_file="file-abc")
    request = LaunchRequest("owner-1", 1, spec, {"ALIGND_JOB_ID": "owner-1"}, run_id="run-1", kind=kind)

    launcher.launch(request)

    args = launcher.run_dir("owner-1") / "args.txt"
    deadline = time.monotonic() + 30
    while not args.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert args.read_text().split() == ["-m", module]
    run = json.loads((launcher.run_dir("owner-1") / "run.json").read_text())
    assert (run["attempt"], run["run_id"]) == (1, "run-1")
