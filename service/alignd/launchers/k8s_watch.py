"""A list-then-watch cache of one kind of object, so polling a thousand runs costs no API calls.

The loop lists by label, watches from the list's resourceVersion, keeps watching from the last
version it saw when a stream ends, and lists again when the server says that version is gone (410).
"""

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from kubernetes import watch
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

Obj = dict[str, Any]
log = logging.getLogger("alignd.launchers.kubernetes")
GONE = 410


class Informer:
    def __init__(
        self,
        list_fn: Callable[..., Any],
        api: ApiClient,
        *,
        namespace: str,
        label_selector: str | None = None,
        field_selector: str | None = None,
        index_label: str | None = None,
        watch_seconds: int = 60,
        resync_seconds: float = 300.0,
        retry_seconds: float = 1.0,
    ) -> None:
        self.list_fn = list_fn
        self.api = api
        self.namespace = namespace
        self.selectors = {
            k: v for k, v in {"label_selector": label_selector, "field_selector": field_selector}.items() if v
        }
        self.watch_seconds = watch_seconds
        self.resync_seconds = resync_seconds
        self.retry_seconds = retry_seconds
        self.relists = 0
        self.index_label = index_label
        self._items: dict[str, Obj] = {}
        self._index: dict[str, set[str]] = {}
        """index_label's value -> names: each run's pods without scanning every pod."""
        self._lock = threading.Lock()
        self._synced = threading.Event()
        self._stop = threading.Event()
        self._watch: watch.Watch | None = None
        self.what = " ".join([list_fn.__name__, *self.selectors.values()])
        """What is watched, for logs: two informers may list one kind with different selectors."""
        self._thread = threading.Thread(target=self._run, name=f"informer-{self.what}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._watch is not None:
            self._watch.stop()

    def wait_synced(self, timeout: float) -> bool:
        return self._synced.wait(timeout)

    def items(self) -> list[Obj]:
        with self._lock:
            return list(self._items.values())

    def get(self, name: str) -> Obj | None:
        with self._lock:
            return self._items.get(name)

    def indexed(self, value: str) -> list[Obj]:
        """Objects whose `index_label` has this value."""
        with self._lock:
            return [self._items[name] for name in self._index.get(value, ())]

    def put(self, obj: Obj) -> None:
        """Record an object this process just created or read, ahead of its watch event."""
        with self._lock:
            self._store(obj)

    def _store(self, obj: Obj) -> None:
        name = obj["metadata"]["name"]
        self._drop(name)
        self._items[name] = obj
        if self.index_label is not None:
            value = (obj["metadata"].get("labels") or {}).get(self.index_label)
            if value is not None:
                self._index.setdefault(value, set()).add(name)

    def _drop(self, name: str) -> None:
        old = self._items.pop(name, None)
        if old is not None and self.index_label is not None:
            value = (old["metadata"].get("labels") or {}).get(self.index_label)
            self._index.get(value or "", set()).discard(name)

    # ---- the loop ------------------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                version = self._list()
                self._watch_from(version)
            except ApiException as exc:
                if exc.status != GONE:
                    log.warning("watch of %s failed (%s); listing again", self.what, exc.reason)
                    self._stop.wait(self.retry_seconds)
            except Exception as exc:
                log.warning("watch of %s failed (%s); listing again", self.what, exc)
                self._stop.wait(self.retry_seconds)

    def _list(self) -> str | None:
        result = self.list_fn(self.namespace, **self.selectors, _request_timeout=30)
        items = self.api.sanitize_for_serialization(result.items) or []
        with self._lock:
            self._items, self._index = {}, {}
            for obj in items:
                self._store(obj)
        self.relists += 1
        self._synced.set()
        return result.metadata.resource_version if result.metadata else None

    def _watch_from(self, version: str | None) -> None:
        """Apply events until stopped or due for a resync; a 410 from the server raises (list again).

        The periodic full list is a safety net for a deletion missed between two watch streams.
        """
        deadline = time.monotonic() + self.resync_seconds
        while not self._stop.is_set() and time.monotonic() < deadline:
            self._watch = watch.Watch()
            kwargs: dict[str, Any] = self.selectors | {
                "timeout_seconds": self.watch_seconds,
                "allow_watch_bookmarks": True,
                "_request_timeout": (10, self.watch_seconds + 10),
            }
            if version:
                kwargs["resource_version"] = version
            try:
                for event in self._watch.stream(self.list_fn, self.namespace, **kwargs):
                    version = self._apply(event) or version
            except ApiException:
                raise
            except Exception as exc:
                # A read timeout or dropped connection: carry on from the last version seen.
                log.debug("watch stream of %s ended (%s); resuming", self.what, exc)

    def _apply(self, event: Obj) -> str | None:
        obj: Obj = event.get("raw_object") or {}
        metadata = obj.get("metadata") or {}
        name = metadata.get("name")
        if event.get("type") == "BOOKMARK" or not name:
            return metadata.get("resourceVersion")
        with self._lock:
            if event.get("type") == "DELETED":
                self._drop(name)
            else:
                self._store(obj)
        return metadata.get("resourceVersion")
