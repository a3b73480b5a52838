"""Control-plane benchmark: job-status reads under concurrent load, and upload + validation speed.

Starts `alignd serve` as a separate process (embedded defaults, controller off) so the server's
memory is measured on its own, then drives it over loopback. Prints a table; DESIGN.md section 12
has the targets (>= 2,000 status reads/s with p99 < 50 ms; >= 100 MB/s upload with flat memory).
"""

import argparse
import asyncio
import json
import os
import platform
import signal
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from alignd.server import free_port, peak_rss_mib, start_serve

ADMIN = "sk-alignd-admin-bench"


def start_server(data_dir: Path, port: int, workers: int) -> subprocess.Popen[bytes]:
    """The server, once all its workers are up (the first answers /healthz before the others start)."""
    server = start_serve(data_dir, admin_key=ADMIN, port=port, workers=workers, timeout=60)
    deadline = time.monotonic() + 60
    while len(server_processes(server.pid)) < workers:
        if time.monotonic() > deadline:
            server.kill()
            raise SystemExit(f"only {len(server_processes(server.pid))} of {workers} workers started")
        time.sleep(0.2)
    return server


def server_processes(pid: int) -> list[int]:
    """The processes that serve requests: the server itself, or with --workers > 1 its worker children."""
    children = [
        int(child)
        for task in Path(f"/proc/{pid}/task").iterdir()
        for child in (task / "children").read_text().split()
    ]
    workers = [child for child in children if "spawn_main" in _command_line(child)]
    return workers or [pid]


def _command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except FileNotFoundError:
        return ""


def setup_job(url: str, data_dir: Path) -> tuple[str, str]:
    admin = {"Authorization": f"Bearer {ADMIN}"}
    project = httpx.post(f"{url}/v1/admin/projects", json={"name": "bench"}, headers=admin).json()
    key = httpx.post(f"{url}/v1/admin/projects/{project['id']}/api_keys", json={}, headers=admin).json()[
        "value"
    ]
    model = data_dir / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    httpx.post(f"{url}/v1/models", json={"id": "m", "source": str(model)}, headers=admin).raise_for_status()
    auth = {"Authorization": f"Bearer {key}"}
    row = json.dumps({"prompt": "p", "chosen": " a", "rejected": " b"}) + "\n"
    file = httpx.post(
        f"{url}/v1/files", files={"file": ("t.jsonl", row * 16)}, data={"purpose": "fine-tune"}, headers=auth
    ).json()
    job = httpx.post(
        f"{url}/v1/fine_tuning/jobs", json={"model": "m", "training_file": file["id"]}, headers=auth
    ).json()
    return key, job["id"]


class KeepAliveConnection:
    """One HTTP/1.1 keep-alive connection that sends a GET and reads a Content-Length-framed answer.

    The load generator shares the two cores with the server, so it has to be cheap per request.
    httpx's AsyncClient is not: with 32 pooled connections it spent about 8 ms of CPU per request here,
    most of it scanning every pooled connection on each request (httpcore's pool bookkeeping), more
    than the server spent answering. This costs about 0.15 ms and does not grow with concurrency.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, host: str, port: int) -> "KeepAliveConnection":
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer)

    async def get(self, request: bytes) -> int:
        """Send one prepared request; return the status once the whole body has arrived."""
        self.writer.write(request)
        status_line = await self.reader.readline()
        length = None
        while (header := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = header.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if length is None:
            raise RuntimeError(f"answer without Content-Length: {status_line!r}")
        await self.reader.readexactly(length)
        return int(status_line.split()[1])

    def close(self) -> None:
        self.writer.close()


async def status_reads(
    host: str, port: int, key: str, job_id: str, *, concurrency: int, seconds: float
) -> list[float]:
    """`concurrency` clients, each on its own keep-alive connection, read the job's status back to back."""
    latencies: list[float] = []
    stop = time.monotonic() + seconds
    request = (
        f"GET /v1/fine_tuning/jobs/{job_id} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Authorization: Bearer {key}\r\n\r\n"
    ).encode()

    async def worker() -> None:
        connection = await KeepAliveConnection.open(host, port)
        try:
            while time.monotonic() < stop:
                started = time.perf_counter()
                status = await connection.get(request)
                latencies.append(time.perf_counter() - started)
                if status != 200:
                    raise RuntimeError(f"status read answered {status}")
        finally:
            connection.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies


def _row(form: str, i: int) -> dict[str, object]:
    """A ~850-byte preference row in one of the three formats, with the same texts in each."""
    prompt, chosen, rejected = f"Q{i}: " + "context " * 100, f" a{i}.", f" b{i}."
    if form == "standard":
        return {"prompt": prompt, "chosen": chosen, "rejected": rejected}
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": prompt}]
    answer, other = [{"role": "assistant", "content": chosen}], [{"role": "assistant", "content": rejected}]
    if form == "conversational":
        return {"prompt": messages, "chosen": answer, "rejected": other}
    source = {"messages": messages, "tools": [], "parallel_tool_calls": True}  # as OpenAI's guide writes it
    return {"input": source, "preferred_output": answer, "non_preferred_output": other}


def upload_body(megabytes: int, form: str) -> Iterator[bytes]:
    boundary = b"bench"
    yield b'--bench\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n'
    yield b'--bench\r\nContent-Disposition: form-data; name="file"; filename="big.jsonl"\r\n\r\n'
    target, written, i, batch = megabytes * 1024 * 1024, 0, 0, []
    while written < target:
        line = (json.dumps(_row(form, i)) + "\n").encode()
        written += len(line)
        batch.append(line)
        i += 1
        if len(batch) == 1000:
            yield b"".join(batch)
            batch = []
    yield b"".join(batch) + b"\r\n--" + boundary + b"--\r\n"


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU of the processes so far (`/proc/<pid>/stat`)."""
    ticks = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def upload(url: str, key: str, form: str, megabytes: int, workers: list[int]) -> tuple[float, float, float]:
    """One upload of a generated file: (MB/s, MB, server CPU ms per MB)."""
    # Generated before the clock starts, so the client's JSON encoding is not what is measured.
    body = list(upload_body(megabytes, form))
    cpu_before = cpu_seconds(workers)
    started = time.perf_counter()
    response = httpx.post(
        f"{url}/v1/files",
        content=iter(body),
        timeout=900,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "multipart/form-data; boundary=bench"},
    )
    elapsed = time.perf_counter() - started
    response.raise_for_status()
    if response.json()["alignd"]["format"] != form:
        raise RuntimeError(f"uploaded {form} rows, the server read {response.json()['alignd']['format']}")
    size_mb = response.json()["bytes"] / 1e6
    return size_mb / elapsed, size_mb, (cpu_seconds(workers) - cpu_before) * 1000 / size_mb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--upload-mb", type=int, default=200)
    parser.add_argument(
        "--formats",
        nargs="*",
        default=["standard", "conversational", "openai"],
        help="one upload of each; none (`--formats` alone) measures status reads only",
    )
    parser.add_argument(
        "--no-fast-path",
        action="store_true",
        help="serve status reads through the route alone (ALIGND_STATUS_FAST_PATH=false)",
    )
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="alignd serve --workers")
    args = parser.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="alignd-bench-"))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    load_before = os.getloadavg()
    if args.no_fast_path:
        os.environ["ALIGND_STATUS_FAST_PATH"] = "false"
    server = start_server(data_dir, port, args.workers)
    try:
        key, job_id = setup_job(url, data_dir)
        asyncio.run(status_reads("127.0.0.1", port, key, job_id, concurrency=4, seconds=1))
        workers = server_processes(server.pid)
        cpu_before = cpu_seconds(workers)
        latencies = asyncio.run(
            status_reads("127.0.0.1", port, key, job_id, concurrency=args.concurrency, seconds=args.seconds)
        )
        read_cpu_ms = (cpu_seconds(workers) - cpu_before) * 1000 / len(latencies)
        cuts = statistics.quantiles(latencies, n=100)
        baseline = {pid: peak_rss_mib(pid) for pid in workers}
        uploads = {form: upload(url, key, form, args.upload_mb, workers) for form in args.formats}
        growth = max(peak_rss_mib(pid) - baseline[pid] for pid in workers) if uploads else None
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=30)
    load_after = os.getloadavg()
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}; client and server share the machine; load average "
        f"{load_before[0]:.2f} before, {load_after[0]:.2f} after"
    )
    print(f"{'measure':<46}{'value':>14}   target")
    print(f"{'job-status reads/s':<46}{len(latencies) / args.seconds:>14,.0f}   >= 2,000")
    print(f"{'  p50 latency (ms)':<46}{cuts[49] * 1000:>14.1f}")
    print(f"{'  p99 latency (ms)':<46}{cuts[98] * 1000:>14.1f}   < 50")
    print(f"{'  server CPU (ms per read)':<46}{read_cpu_ms:>14.2f}")
    print(f"{'  fast path':<46}{'off' if args.no_fast_path else 'on':>14}")
    print(f"{'  concurrency':<46}{args.concurrency:>14}")
    print(f"{'  server workers':<46}{args.workers:>14}")
    for form, (speed, size_mb, cpu_ms) in uploads.items():
        print(f"{f'upload + validation, {form} (MB/s)':<46}{speed:>14.1f}   >= 100")
        print(f"{'  upload size (MB)':<46}{size_mb:>14.1f}")
        print(f"{'  server CPU (ms per MB)':<46}{cpu_ms:>14.1f}")
    if growth is not None:
        print(f"{'  server peak RSS growth, all uploads (MiB)':<46}{growth:>14.1f}   flat")


if __name__ == "__main__":
    main()
