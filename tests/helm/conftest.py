"""The chart tests' fixtures: the helm command line, and an environment with no ALIGND_* variables."""

import os

import pytest

from tests.helm.helm_binary import helm_binary


@pytest.fixture(scope="session")
def helm(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """The helm command line prefix, with helm's config/cache/data homes in a temporary directory."""
    binary = helm_binary()
    homes = tmp_path_factory.mktemp("helm-home")
    env = {f"HELM_{kind}_HOME": str(homes / kind.lower()) for kind in ("CACHE", "CONFIG", "DATA")}
    return ["env", *(f"{key}={value}" for key, value in env.items()), str(binary)]


@pytest.fixture
def clean_alignd_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in [n for n in os.environ if n.startswith("ALIGND_")]:
        monkeypatch.delenv(name)
    return monkeypatch
