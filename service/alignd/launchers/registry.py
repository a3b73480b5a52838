"""Launchers by name: `ALIGND_LAUNCHER` picks one. A new backend is its module plus one line here.

Backends are imported when chosen, so a backend's client library (the `kubernetes` package) is needed
only where that backend runs.
"""

import importlib

from alignd.config import ConfigError, Settings
from alignd.contract import Resources
from alignd.launchers.base import Launcher

LAUNCHERS: dict[str, str] = {
    "local": "alignd.launchers.local:LocalLauncher",
    "kubernetes": "alignd.launchers.kubernetes:KubernetesLauncher",
}
"""Name -> "module:class" of a `Launcher` subclass."""


def launcher_class(name: str) -> type[Launcher]:
    if name not in LAUNCHERS:
        raise ConfigError(
            f"unknown ALIGND_LAUNCHER {name!r}; the launchers are: {', '.join(sorted(LAUNCHERS))}"
        )
    module, _, attribute = LAUNCHERS[name].partition(":")
    found = getattr(importlib.import_module(module), attribute)
    if not (isinstance(found, type) and issubclass(found, Launcher)):
        raise TypeError(f"{LAUNCHERS[name]} is not a Launcher")
    return found


def build_launcher(settings: Settings) -> Launcher:
    """The launcher `settings.launcher` names, built from the settings."""
    return launcher_class(settings.launcher).from_settings(settings)


def check_resources(settings: Settings, resources: Resources) -> None:
    """Ask the configured launcher whether it can ever place `resources`; InvalidRequest if not."""
    launcher_class(settings.launcher).check_resources(settings, resources)
