"""The lock files in requirements/ still pin what pyproject.toml asks for, and the installs use them.

A dependency added to or tightened in pyproject.toml without `make lock` fails here, naming the lock,
instead of as an import error in an image or in CI's clean install."""

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
LOCKS = {
    "dev.lock": ["dev", "server", "trainer", "integrations"],
    "demo.lock": ["server", "trainer"],
    "server-image.lock": ["server", "integrations"],
    "trainer-image.lock": ["trainer"],
}
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", re.M)


def pins(lock: str) -> dict[str, list[Version]]:
    """Every pinned version of each package (a universal lock may pin two, under different markers)."""
    found: dict[str, list[Version]] = {}
    for name, version in _PIN.findall((ROOT / "requirements" / lock).read_text()):
        found.setdefault(canonicalize_name(name), []).append(Version(version))
    return found


def wanted(extras: list[str]) -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lines = project["dependencies"] + [
        line for extra in extras for line in project["optional-dependencies"][extra]
    ]
    return [Requirement(line) for line in lines]


@pytest.mark.parametrize(("lock", "extras"), LOCKS.items())
def test_the_lock_pins_every_dependency_of_its_extras(lock: str, extras: list[str]) -> None:
    pinned = pins(lock)
    assert "torch" not in pinned, "torch is installed apart from the locks (Makefile, trainer base image)"
    for requirement in wanted(extras):
        name = canonicalize_name(requirement.name)
        if name == "torch":
            continue
        assert name in pinned, f"{lock} has no {requirement.name}: run `make lock`"
        for version in pinned[name]:
            assert requirement.specifier.contains(version, prereleases=True), (
                f"{lock} pins {requirement.name}=={version}, outside {requirement}: run `make lock`"
            )


def test_the_installs_use_the_locks_and_the_cpu_torch_fits_the_trainer_extra() -> None:
    makefile = (ROOT / "Makefile").read_text()
    [torch] = re.findall(r"^TORCH := (\S+)$", makefile, re.M)
    [trainer_torch] = [r for r in wanted(["trainer"]) if r.name == "torch"]
    [torch_pin] = Requirement(torch).specifier

    assert trainer_torch.specifier.contains(torch_pin.version)
    assert "-r requirements/dev.lock" in makefile and "-r requirements/demo.lock" in makefile
    assert "-r requirements/server-image.lock" in (ROOT / "Dockerfile").read_text()
    assert "-r requirements/trainer-image.lock" in (ROOT / "trainer_image" / "Dockerfile").read_text()
