"""Rendering the Helm chart with the real helm binary, and picking objects out of what it renders: shared by
the chart's test modules (the `helm` fixture that gives the command line is in conftest.py)."""

import subprocess
from pathlib import Path
from typing import Any

import yaml

CHART = Path(__file__).resolve().parents[2] / "helm" / "alignd"
RELEASE, NAMESPACE = "alignd", "ml-platform"


def run(command: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def template(helm: list[str], *args: str) -> subprocess.CompletedProcess[str]:
    return run([*helm, "template", RELEASE, str(CHART), "--namespace", NAMESPACE, *args])


def render(helm: list[str], *args: str) -> list[dict[str, Any]]:
    result = template(helm, *args)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def only(manifests: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [m for m in manifests if m["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {[m['metadata']['name'] for m in found]}"
    return found[0]


def api_container(manifests: list[dict[str, Any]]) -> dict[str, Any]:
    containers = only(manifests, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["api"]
    return containers[0]
