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
from typing import IO

import httpx
import uvicorn

from alignd.app import create_app
from alignd.config import Settings
from alignd.db import check_schema, make_engine, make_private_dir
from alignd.metrics import MULTIPROCESS_DIR_ENV


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def advertised_url(host: str, port: int) -> str:
    """The URL a process on this machine uses to reach a server bound to `host:port`. A wildcard bind
    (0.0.0.0, ::) is reached over loopback; an IPv6 literal is bracketed."""
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def bound_settings(settings: Settings, *, host: str, port: int) -> Settings:
    """The settings a server bound to `host:port` runs with: with no ALIGND_PUBLIC_URL, the local
    launcher's trainers and the local store's signed URLs use the address actually bound, so
    `alignd serve --port 9000` works without further configuration. The kubernetes launcher gets no
    such default: its pods cannot reach this machine's loopback (`Settings.require_reachable_url`)."""
    if settings.public_url is not None or settings.launcher != "local":
        return settings
    return settings.model_copy(update={"public_url": advertised_url(host, port)})


def listening_socket(host: str, port: int) -> socket.socket:
    """Bind before serving, so the advertised URL names the real port even for `--port 0`."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host or "0.0.0.0", port), family=family)
    sock.set_inheritable(True)
    return sock


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
    controller: bool = False,
    stdout: "int | IO[bytes]" = subprocess.DEVNULL,
) -> "subprocess.Popen[bytes]":
    """`alignd serve` as a child process on an empty data directory (controller off unless asked),
    returned once `/healthz` answers: how the serve tests, the upload-memory test and the API benchmark
    run a real server (`stdout` receives its access log). Raises RuntimeError, with the server's stderr
    when it is piped, if it exits or does not answer within `timeout` seconds; stopping it is the caller's."""
    env = {k: v for k, v in os.environ.items() if k != "ALIGND_PUBLIC_URL"} | {
        "ALIGND_DATA_DIR": str(data_dir),
        "ALIGND_ADMIN_KEY": admin_key,
        "ALIGND_RUN_CONTROLLER": str(controller).lower(),
    }
    command = [sys.executable, "-m", "alignd.cli", "serve", "--port", str(port), "--workers", str(workers)]
    server = subprocess.Popen(command, env=env, stdout=stdout, stderr=stderr)
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
    make_private_dir(settings.resolved_data_dir())
    engine = make_engine(settings.resolved_database_url())
    try:
        check_schema(engine)
    finally:
        engine.dispose()
    # The workers are spawned and read their settings from the environment, so both are passed there.
    exported = {MULTIPROCESS_DIR_ENV: "", "ALIGND_PUBLIC_URL": settings.public_url or ""}
    exported = {name: value for name, value in exported.items() if value or name == MULTIPROCESS_DIR_ENV}
    with tempfile.TemporaryDirectory(prefix="alignd-metrics-") as directory:
        exported[MULTIPROCESS_DIR_ENV] = directory
        previous = {name: os.environ.get(name) for name in exported}
        os.environ.update(exported)
        try:
            uvicorn.run("alignd.app:create_app", factory=True, host=host, port=port, workers=workers)
        finally:
            for name, value in previous.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


class BackgroundServer:
    """A server on a thread of this process (the demo, tests); like `alignd serve`, it advertises the
    address it binds when the settings name no public URL."""

    def __init__(self, settings: Settings, host: str, port: int) -> None:
        self.settings = bound_settings(settings, host=host, port=port)
        self.url = advertised_url(host, port)
        config = uvicorn.Config(create_app(self.settings), host=host, port=port, log_level="warning")
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
