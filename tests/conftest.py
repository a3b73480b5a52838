"""Fixtures shared by every test package. Keep this file generic: fixtures for one package belong in
that package's tests."""

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from xdist.remote import Producer
from xdist.scheduler import LoadGroupScheduling

# Tests never touch the network. Set before any test module imports transformers, datasets or TRL,
# which read these at import time.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

# Under pytest-xdist (`-n 2`, the default) each worker gets its share of the CPUs. More OpenMP threads
# than that make the workers' torch code, and the trainers and servers they start (which inherit this
# environment), fight over the cores, and tiny-model runs slow down several times over. Set before torch
# is imported, which reads it once.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, len(os.sched_getaffinity(0)) // _WORKERS)))

ONE_WORKER = ("tests/sdk/",)
"""Directories whose tests all run on the same pytest-xdist worker, because they share session fixtures
too costly to build on each: tests/sdk's live server trains a job that many tests read."""


class _LoadGroupScheduling(LoadGroupScheduling):
    """`--dist loadgroup` with the directories in ONE_WORKER as groups.

    pytest-xdist 3.8 marks a test's group by appending `@group` to its node id, which pytest 9.2's
    structured node ids ignore (pytest-xdist issue #1386), so `xdist_group` marks alone do not group
    anything; the scheduler sees only node ids, so the groups are named by directory here."""

    def _split_scope(self, nodeid: str) -> str:
        directory = next((d for d in ONE_WORKER if nodeid.startswith(d)), None)
        return directory or super()._split_scope(nodeid)


def pytest_xdist_make_scheduler(config: pytest.Config, log: Producer) -> LoadGroupScheduling | None:
    return _LoadGroupScheduling(config, log) if config.getvalue("dist") == "loadgroup" else None


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-init Llama + byte-level BPE tokenizer with a chat template, built once per session.

    Read-only for tests: load it with `from_pretrained`, never write into it.
    """
    # Imported here, not at the top, so control-plane tests run without the trainer's torch stack.
    from alignd_trainer.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny_model"))


@pytest.fixture(scope="session")
def tools_model_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with a Qwen2.5-style chat template that renders tools (`TOOLS_CHAT_TEMPLATE`); the
    tiny model's own template does not. Read-only for tests, like `tiny_model_dir`."""
    from alignd_trainer.tiny_model import TOOLS_CHAT_TEMPLATE, with_chat_template

    return with_chat_template(tiny_model_dir, tmp_path_factory.mktemp("tools_model"), TOOLS_CHAT_TEMPLATE)


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """SmolLM2-135M-Instruct (a real chat model) as a model directory, converted once per machine.

    Kept in `$ALIGND_CACHE_DIR/models` (default ~/.cache/alignd/models), so only the first run on a
    machine pays for the download and conversion; parallel workers wait on one conversion. Read-only
    for tests, like `tiny_model_dir`."""
    from alignd_trainer.smollm2 import ensure_smollm2

    return ensure_smollm2()


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port that refuses connections for the whole test. The socket stays bound without
    listening, so nothing else (another pytest-xdist worker's server) can take the port meanwhile, as it
    could between closing a probed free port and the test connecting to it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def torch_one_thread() -> Iterator[None]:
    """One intra-op thread for a module of tiny-model tests: faster than several, and immune to the large
    slowdowns OpenMP threads suffer when other processes share the CPUs. Opt in with
    `pytestmark = pytest.mark.usefixtures("torch_one_thread")`."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
