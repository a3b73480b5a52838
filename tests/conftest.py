"""Fixtures shared by every test package. Keep this file generic: fixtures for one package belong in
that package's tests."""

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# Tests never touch the network. Set before any test module imports transformers, datasets or TRL,
# which read these at import time.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-init Llama + byte-level BPE tokenizer with a chat template, built once per session.

    Read-only for tests: load it with `from_pretrained`, never write into it.
    """
    # Imported here, not at the top, so control-plane tests run without the trainer's torch stack.
    from alignd_trainer.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny_model"))


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
