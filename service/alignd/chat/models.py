"""A few chat models kept loaded, least recently used dropped first, each behind its own lock.

Generation needs torch and transformers (the `trainer` extra), which an API-only server image does
not have. They are imported on the first chat request, not with the app, so a server without them
starts, serves everything else, and answers chat requests with a 501 that names the extra."""

import importlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from alignd.errors import NotInstalled

GENERATION_MODULE = "alignd_trainer.generation"


def generation() -> ModuleType:
    """alignd_trainer.generation, or a 501 when this process cannot import it."""
    try:
        return importlib.import_module(GENERATION_MODULE)
    except ImportError as exc:
        raise NotInstalled(
            f"chat completions generate with torch and transformers, which this server cannot import "
            f"({exc}); install the trainer extra (pip install 'alignd[server,trainer]') and restart"
        ) from None


@dataclass
class _Slot:
    lock: threading.Lock = field(default_factory=threading.Lock)
    generator: Any = None
    """An alignd_trainer.generation.ChatGenerator once loaded."""


class LoadedModels:
    """Loaded ChatGenerators by key. A slot's lock is held while its model loads and while it
    generates, so one model serves one request at a time and loads once; different models run in
    parallel. A dropped model stays alive until the requests using it finish."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._slots: OrderedDict[str, _Slot] = OrderedDict()
        self._lock = threading.Lock()

    @contextmanager
    def use(self, key: str, load: Callable[[], Any]) -> Iterator[Any]:
        """The generator for `key` (loaded by `load()` the first time), held exclusively meanwhile."""
        with self._lock:
            slot = self._slots.get(key)
            if slot is None:
                slot = self._slots[key] = _Slot()
            self._slots.move_to_end(key)
            while len(self._slots) > self.capacity:
                self._slots.popitem(last=False)
        with slot.lock:
            if slot.generator is None:
                slot.generator = load()
            yield slot.generator

    def keys(self) -> list[str]:
        with self._lock:
            return list(self._slots)
