"""The embedded default: each job's trainer is a subprocess on this machine.

Each run lives in `{root}/{job_id}/`: `run.json` (pid, attempt), `trainer.log` (stdout and
stderr), `termination.json` (the trainer's exit summary). Runs are started in their own
session, so they survive an API server restart and are found again from `run.json`.
"""

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Self

from alignd.config import Settings
from alignd.contract import ExitCode, TerminationSummary
from alignd.jobs.lifecycle import RunEndReason
from alignd.launchers.base import Launcher, LaunchRequest, RunState, RunStatus


class LocalLauncher(Launcher):
    """Trainers as child processes of the server, each in its own directory under the data dir."""

    name = "local"

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        return cls(settings.resolved_data_dir() / "runs")

    def __init__(
        self, root: Path, *, python: str = sys.executable, env: Mapping[str, str] | None = None
    ) -> None:
        self.root = root
        self.python = python
        self.base_env = {
            k: v for k, v in (env if env is not None else os.environ).items() if not k.startswith("ALIGND_")
        }
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        self._lock = threading.Lock()

    def run_dir(self, job_id: str) -> Path:
        return self.root / job_id

    def launch(self, request: LaunchRequest) -> str:
        directory = self.run_dir(request.job_id)
        existing = self._read_run(request.job_id)
        if (
            existing
            and existing.get("attempt") == request.attempt
            and self._alive(request.job_id, existing["pid"])
        ):
            return str(existing["pid"])
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "termination.json").unlink(missing_ok=True)
        env = (
            self.base_env
            | request.env
            | {
                "ALIGND_TERMINATION_LOG": str(directory / "termination.json"),
                "PYTHONUNBUFFERED": "1",
            }
        )
        with open(directory / "trainer.log", "ab") as log:
            proc = subprocess.Popen(
                [self.python, "-m", request.module],
                cwd=directory,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        with self._lock:
            self._children[proc.pid] = proc
        run = {
            "pid": proc.pid,
            "attempt": request.attempt,
            "run_id": request.run_id,
            "started_at": time.time(),
        }
        (directory / "run.json").write_text(json.dumps(run))
        return str(proc.pid)

    def poll(self, job_id: str, ref: str | None) -> RunStatus:
        run = self._read_run(job_id)
        pid = int(ref) if ref else (run or {}).get("pid")
        if pid is None:
            return RunStatus(
                RunState.missing, reason=RunEndReason.lost, message="no local run was started for this job"
            )
        if self._alive(job_id, pid):
            return RunStatus(RunState.running)
        return self._finished(job_id)

    def terminate(self, job_id: str, ref: str | None, *, grace_seconds: float) -> None:
        run = self._read_run(job_id)
        pid = int(ref) if ref else (run or {}).get("pid")
        if pid is None or not self._alive(job_id, pid):
            return
        _signal_group(pid, signal.SIGTERM)
        timer = threading.Timer(grace_seconds, self._kill_if_alive, args=(job_id, pid))
        timer.daemon = True
        timer.start()

    def active_job_ids(self) -> set[str]:
        if not self.root.is_dir():
            return set()
        active = set()
        for run_file in self.root.glob("*/run.json"):
            job_id = run_file.parent.name
            run = self._read_run(job_id)
            if run and self._alive(job_id, run["pid"]):
                active.add(job_id)
        return active

    def logs(self, job_id: str, ref: str | None) -> bytes | None:
        path = self.run_dir(job_id) / "trainer.log"
        return path.read_bytes() if path.exists() else None

    def _read_run(self, job_id: str) -> dict[str, Any] | None:
        path = self.run_dir(job_id) / "run.json"
        try:
            return json.loads(path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def _alive(self, job_id: str, pid: int) -> bool:
        """Alive and really this job's trainer: after a restart a pid may belong to someone else."""
        with self._lock:
            child = self._children.get(pid)
        if child is not None:
            return child.poll() is None
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            return False
        return f"ALIGND_JOB_ID={job_id}".encode() in environ.split(b"\0")

    def _finished(self, job_id: str) -> RunStatus:
        path = self.run_dir(job_id) / "termination.json"
        try:
            summary = TerminationSummary.model_validate_json(path.read_text())
        except (FileNotFoundError, ValueError):
            return RunStatus(
                RunState.failed,
                reason=RunEndReason.lost,
                message="the trainer process ended without an exit summary (killed or crashed)",
            )
        if summary.exit_code == ExitCode.SUCCESS:
            return RunStatus(RunState.succeeded, exit_code=0)
        return RunStatus(
            RunState.failed, exit_code=summary.exit_code, reason=summary.reason, message=summary.message
        )

    def _kill_if_alive(self, job_id: str, pid: int) -> None:
        if self._alive(job_id, pid):
            _signal_group(pid, signal.SIGKILL)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)
