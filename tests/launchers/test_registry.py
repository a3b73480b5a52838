"""alignd/launchers/registry.py: ALIGND_LAUNCHER names a registered backend, or the server refuses to start
with the names it knows."""

from pathlib import Path

import pytest

from alignd.config import ConfigError, Settings
from alignd.contract import Resources
from alignd.errors import InvalidRequest
from alignd.launchers import Launcher
from alignd.launchers.registry import LAUNCHERS, build_launcher, check_resources, launcher_class


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path, public_url="http://alignd.test:8000")


@pytest.mark.parametrize("name", sorted(LAUNCHERS))
def test_every_registered_name_is_a_launcher_of_that_name(name: str) -> None:
    cls = launcher_class(name)
    assert issubclass(cls, Launcher) and cls.name == name


def test_an_unknown_launcher_is_refused_with_the_known_ones(settings: Settings) -> None:
    with pytest.raises(
        ConfigError, match=r"unknown ALIGND_LAUNCHER 'ray'; the launchers are: kubernetes, local"
    ):
        build_launcher(settings.model_copy(update={"launcher": "ray"}))


def test_the_local_launcher_is_built_from_settings(settings: Settings) -> None:
    launcher = build_launcher(settings.model_copy(update={"launcher": "local"}))
    assert launcher.name == "local"


def test_gpu_types_are_checked_by_the_configured_launcher(settings: Settings) -> None:
    a100 = Resources(gpus=1, gpu_type="a100")
    check_resources(settings.model_copy(update={"launcher": "local"}), a100)  # a laptop places anything
    cluster = settings.model_copy(update={"launcher": "kubernetes", "k8s_gpu_profiles": {}})
    with pytest.raises(
        InvalidRequest, match=r"unknown gpu_type 'a100'; this cluster's GPU types: none"
    ) as refused:
        check_resources(cluster, a100)
    assert refused.value.param == "alignd.resources.gpu_type"
