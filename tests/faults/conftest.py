"""Fault injection through real parts: a live server (uvicorn in a thread) whose S3 endpoint is a moto
server we can stop and kill, whose Postgres is a cluster of the test's own that we can restart, and whose
disks are small tmpfs mounts we can fill or make read-only.

Nothing here touches the shared Postgres on 5432: the test cluster runs from a temporary directory on a
port of its own. Mounting needs root (or CAP_SYS_ADMIN); without it the disk tests skip and say why.
"""

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, make_url, text

from alignd.config import Settings
from alignd.server import BackgroundServer, free_port
from tests.api.helpers import ADMIN_KEY, bearer, new_project_key

ROW = {"prompt": "Name a fruit.", "chosen": " apple.", "rejected": " dog."}
REGION = "us-east-1"


def rows(count: int = 20) -> bytes:
    return "".join(json.dumps(ROW) + "\n" for _ in range(count)).encode()


def wait_until(condition: Callable[[], bool], *, timeout: float = 30, what: str = "the condition") -> None:
    """Poll `condition` until it holds; fail the test if it does not within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {timeout:.0f} s")
        time.sleep(0.05)


# ---- the live server ------------------------------------------------------------------------------------


@dataclass
class Api:
    """A running server and an httpx client holding a project key."""

    url: str
    client: httpx.Client
    settings: Settings

    def upload(self, body: bytes, *, name: str = "train.jsonl") -> httpx.Response:
        return self.client.post("/v1/files", files={"file": (name, body)}, data={"purpose": "fine-tune"})

    def create_job(self, file_id: str, model_dir: Path) -> str:
        model_dir.mkdir(parents=True, exist_ok=True)
        (model_dir / "config.json").write_text("{}")
        model = self.client.post(
            "/v1/models", json={"id": "tiny", "source": str(model_dir)}, headers=bearer(ADMIN_KEY)
        )
        assert model.status_code == 200, model.text
        job = self.client.post("/v1/fine_tuning/jobs", json={"model": "tiny", "training_file": file_id})
        assert job.status_code == 200, job.text
        return str(job.json()["id"])


@contextlib.contextmanager
def live_server(**fields: object) -> Iterator[Api]:
    """The app under uvicorn on a free port with these settings, the controller off (these tests are
    about requests)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    settings = Settings(admin_key=ADMIN_KEY, public_url=url, run_controller=False, **fields)  # type: ignore[arg-type]
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    with (
        BackgroundServer(settings, "127.0.0.1", port),
        httpx.Client(base_url=url, timeout=30, limits=limits) as client,
    ):
        client.headers.update(bearer(new_project_key(client, "faults")))
        yield Api(url, client, settings)


def assert_unavailable(response: httpx.Response, code: str) -> None:
    """A 503 in OpenAI's envelope that says when to retry."""
    assert response.status_code == 503, response.text
    assert int(response.headers["Retry-After"]) > 0
    error = response.json()["error"]
    assert error["code"] == code and error["type"] == "server_error", error


def assert_insufficient_storage(response: httpx.Response, code: str) -> None:
    assert response.status_code == 507, response.text
    error = response.json()["error"]
    assert error["code"] == code and error["type"] == "server_error", error


# ---- S3: a moto server in a process of its own, so it can be stopped ----------------------------------


class MotoProcess:
    """`moto_server` as a child process (ThreadedMotoServer lives in our process: SIGSTOP would stop us)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.endpoint = f"127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=os.environ | {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"},
        )
        wait_until(self._answers, what="moto_server answering")

    def _answers(self) -> bool:
        if self.process.poll() is not None:
            pytest.fail(f"moto_server exited with {self.process.returncode}")
        try:
            return httpx.get(f"http://{self.endpoint}/moto-api/", timeout=1).status_code < 500
        except httpx.TransportError:
            return False

    def stop(self) -> None:
        """Hang it: connections are accepted by the kernel, but nothing answers."""
        self.process.send_signal(signal.SIGSTOP)

    def kill(self) -> None:
        self.process.send_signal(signal.SIGCONT)
        self.process.kill()
        self.process.wait()

    def close(self) -> None:
        if self.process.poll() is None:
            self.kill()


@pytest.fixture
def moto() -> Iterator[MotoProcess]:
    server = MotoProcess()
    yield server
    server.close()


def s3_fields(endpoint: str) -> dict[str, object]:
    return {
        "store": "s3",
        "s3_endpoint": endpoint,
        "s3_bucket": "alignd-faults",
        "s3_access_key": "testing",
        "s3_secret_key": "testing",
        "s3_region": REGION,
        "s3_secure": False,
    }


# ---- Postgres: a cluster of the test's own ---------------------------------------------------------------


class OwnPostgres:
    """initdb + pg_ctl in a temporary directory, on a free port, run as the `postgres` OS user (initdb
    refuses root). Trust auth on loopback; the socket lives in the directory too."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.data = directory / "data"
        self.port = free_port()
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"
        self._as_postgres("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")
        self.start()

    def _as_postgres(self, *command: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        result = subprocess.run([*prefix, *command], capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(command[:2])} failed: {result.stderr or result.stdout}")

    def _pg_ctl(self, action: str, *extra: str) -> None:
        options = f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._as_postgres(
            "pg_ctl",
            "-D",
            str(self.data),
            "-l",
            str(self.directory / "log"),
            "-o",
            options,
            "-w",
            *extra,
            action,
        )

    def start(self) -> None:
        self._pg_ctl("start")

    def create_database(self) -> str:
        """A fresh database on this cluster; its URL."""
        name = f"alignd_{secrets.token_hex(4)}"
        admin = create_engine(self.url, isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as connection:
                connection.execute(text(f'CREATE DATABASE "{name}"'))
        finally:
            admin.dispose()
        return str(make_url(self.url).set(database=name).render_as_string(hide_password=False))

    def stop(self) -> None:
        """A fast shutdown: open sessions are terminated ("terminating connection due to administrator
        command"), new ones refused."""
        self._pg_ctl("stop", "-m", "fast")

    def close(self) -> None:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", "pg_ctl", "-D", str(self.data), "-m", "immediate", "stop"],
            capture_output=True,
            timeout=60,
        )


@pytest.fixture(scope="module")
def own_postgres() -> Iterator[OwnPostgres]:
    if shutil.which("initdb") is None or shutil.which("pg_ctl") is None:
        pytest.skip("initdb/pg_ctl are not on PATH; the Postgres restart tests need a PostgreSQL install")
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        pytest.skip("running as root without runuser: initdb refuses root")
    directory = Path(tempfile.mkdtemp(prefix="alignd-faults-pg-"))
    try:
        if os.geteuid() == 0:
            shutil.chown(directory, "postgres", "postgres")
        cluster = OwnPostgres(directory)
    except (RuntimeError, LookupError) as exc:  # LookupError: no `postgres` OS user
        shutil.rmtree(directory, ignore_errors=True)
        pytest.skip(f"could not start a Postgres cluster of our own: {exc}")
    yield cluster
    cluster.close()
    shutil.rmtree(directory, ignore_errors=True)


# ---- disks: small tmpfs mounts ----------------------------------------------------------------------------


class Tmpfs:
    def __init__(self, path: Path, size: int) -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        if shutil.which("mount") is None:
            pytest.skip("no `mount` command here: the disk tests need one to mount a small tmpfs")
        result = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN): {result.stderr.strip()}")

    def fill(self) -> Path:
        """Write a file until the disk is full; returns it (delete it to free the space)."""
        filler = self.path / "filler"
        block = b"\0" * (1 << 16)
        with filler.open("wb", buffering=0) as out:
            try:
                while True:
                    out.write(block)
            except OSError:
                pass
        return filler

    def remount(self, mode: str) -> None:
        subprocess.run(["mount", "-o", f"remount,{mode}", str(self.path)], check=True, capture_output=True)

    def unmount(self) -> None:
        result = subprocess.run(["umount", str(self.path)], capture_output=True)
        if result.returncode != 0:
            subprocess.run(["umount", "-l", str(self.path)], capture_output=True)


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[[str, int], Tmpfs]]:
    """`tmpfs(name, size_bytes)` mounts a tmpfs at tmp_path/name; all are unmounted at teardown."""
    mounted: list[Tmpfs] = []

    def mount(name: str, size: int) -> Tmpfs:
        disk = Tmpfs(tmp_path / name, size)
        mounted.append(disk)
        return disk

    yield mount
    for disk in reversed(mounted):
        disk.unmount()


# ---- a slow network link -----------------------------------------------------------------------------------


class SlowLink:
    """A TCP proxy to `target` that passes the client's bytes on at about `bytes_per_second` (answers go
    back at full speed): a store on the far side of a slow uplink."""

    def __init__(self, target: str, bytes_per_second: int) -> None:
        host, port = target.rsplit(":", 1)
        self._target = (host, int(port))
        self._delay = BLOCK / bytes_per_second
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.endpoint = f"127.0.0.1:{self._listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self._target)
            threading.Thread(target=self._pipe, args=(client, upstream, self._delay), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, 0.0), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket, delay: float) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(BLOCK):
                sink.sendall(data)
                time.sleep(delay)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self._listener.close()


BLOCK = 64 * 1024
