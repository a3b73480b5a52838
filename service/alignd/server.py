"""Running the API server: in the foreground (`alignd serve`), as several worker processes
(`alignd serve --workers N`), or in a thread (demo, tests)."""

import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import uvicorn

from alignd.app import create_app
from alignd.config import Settings
from alignd.db import check_schema, make_engine
from alignd.metrics import MULTIPROCESS_DIR_ENV


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


def start_serve(
    data_dir: Path,
    *,
    admin_key: str,
    port: int,
    workers: int = 1,
    timeout: float = 120,
    stderr: int = subprocess.DEVNULL,
) -> "subprocess.Popen[bytes]":
    """`alignd serve` as a child process on an empty data directory (controller off), returned once
    `/healthz` answers: how the multi-worker test, the upload-memory test and the API benchmark run a
    real server. Raises RuntimeError, with the server's stderr when it is piped, if it exits or does not
    answer within `timeout` seconds; stopping it is the caller's."""
    env = os.environ | {
        "ALIGND_DATA_DIR": str(data_dir),
        "ALIGND_ADMIN_KEY": admin_key,
        "ALIGND_RUN_CONTROLLER": "false",
    }
    command = [sys.executable, "-m", "alignd.cli", "serve", "--port", str(port), "--workers", str(workers)]
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            output = server.stderr.read().decode(errors="replace") if server.stderr else ""
            raise RuntimeError(f"alignd serve exited with {server.returncode}: {output}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    server.kill()
    raise RuntimeError(f"alignd serve did not answer /healthz within {timeout:.0f} s")


def run_workers(settings: Settings, *, host: str, port: int, workers: int) -> None:
    """Serve with `workers` uvicorn processes on one port, until interrupted.

    Every worker is a whole server. The controller is safe to run in each: only the one holding the
    database lease reconciles (`ALIGND_LEADER_ELECTION`), and webhook deliveries are claimed row by row.
    Two things are set up here, before any worker starts: the database is migrated once, so workers
    starting on an empty SQLite file do not race to create its tables; and Prometheus counters are
    kept in files in one directory shared by the workers (prometheus_client's multiprocess mode), so
    `/metrics`, whichever worker answers it, reports the sums over all of them.
    """
    settings.resolved_data_dir().mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.resolved_database_url())
    try:
        check_schema(engine)
    finally:
        engine.dispose()
    with tempfile.TemporaryDirectory(prefix="alignd-metrics-") as directory:
        os.environ[MULTIPROCESS_DIR_ENV] = directory  # the workers are spawned, so they inherit it
        try:
            uvicorn.run("alignd.app:create_app", factory=True, host=host, port=port, workers=workers)
        finally:
            del os.environ[MULTIPROCESS_DIR_ENV]


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
