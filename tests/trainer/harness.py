"""Running the real trainer as a subprocess, the way a launcher does, and reading what it reports."""

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safetensors.torch import load_file

TIMEOUT = 300


@dataclass
class TrainerRun:
    returncode: int
    lines: list[dict[str, Any]]
    stderr: str

    def metrics(self, split: str) -> list[dict[str, Any]]:
        return [line for line in self.lines if line["kind"] == "metrics" and line["split"] == split]

    def events(self, type_: str | None = None) -> list[dict[str, Any]]:
        return [line for line in self.lines if line["kind"] == "event" and type_ in (None, line["type"])]

    def checkpoints(self) -> list[dict[str, Any]]:
        return [line for line in self.lines if line["kind"] == "checkpoint"]


def trainer_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALIGND_")}
    env |= {
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "PYTHONUNBUFFERED": "1",
    }
    return env | extra


def write_spec(path: Path, spec: dict[str, Any]) -> Path:
    path.write_text(json.dumps(spec))
    return path


def parse_lines(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def run_trainer(
    args: list[str], *, env: dict[str, str] | None = None, launcher: list[str] | None = None
) -> TrainerRun:
    command = (launcher or [sys.executable, "-m"]) + ["alignd_trainer", *args]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT, env=env or trainer_env())
    return TrainerRun(proc.returncode, parse_lines(proc.stdout), proc.stderr)


def adapter_weights(output_dir: Path) -> dict[str, Any]:
    return load_file(output_dir / "adapter" / "adapter_model.safetensors")
