"""Running the API server: in the foreground (`alignd serve`) or in a thread (demo, tests)."""

import socket
import threading
import time
from pathlib import Path

import uvicorn

from alignd.app import create_app
from alignd.config import Settings


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def peak_rss_mib(pid: int) -> float:
    """A process's peak resident memory in MiB (Linux `VmHWM`): how the upload test and the benchmark
    check that a server's memory stays flat however large the upload."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/{pid}/status has no VmHWM line (needs Linux)")


class BackgroundServer:
    def __init__(self, settings: Settings, host: str, port: int) -> None:
        config = uvicorn.Config(create_app(settings), host=host, port=port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="alignd-api", daemon=True)

    def __enter__(self) -> "BackgroundServer":
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the API server did not start; see the log above")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
