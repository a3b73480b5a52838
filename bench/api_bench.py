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
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from alignd.server import free_port, peak_rss_mib

ADMIN = "sk-alignd-admin-bench"


def start_server(data_dir: Path, port: int) -> subprocess.Popen[bytes]:
    env = os.environ | {
        "ALIGND_DATA_DIR": str(data_dir),
        "ALIGND_ADMIN_KEY": ADMIN,
        "ALIGND_RUN_CONTROLLER": "false",
    }
    command = [sys.executable, "-m", "alignd.cli", "serve", "--port", str(port)]
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                return server
        except httpx.TransportError:
            time.sleep(0.2)
    server.kill()
    raise SystemExit("the server did not start")


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


async def status_reads(url: str, key: str, job_id: str, *, concurrency: int, seconds: float) -> list[float]:
    latencies: list[float] = []
    stop = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {key}"}, limits=limits
    ) as client:

        async def worker() -> None:
            while time.monotonic() < stop:
                started = time.perf_counter()
                response = await client.get(f"/v1/fine_tuning/jobs/{job_id}")
                latencies.append(time.perf_counter() - started)
                response.raise_for_status()

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies


def upload_body(megabytes: int) -> Iterator[bytes]:
    boundary = b"bench"
    yield b'--bench\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n'
    yield b'--bench\r\nContent-Disposition: form-data; name="file"; filename="big.jsonl"\r\n\r\n'
    target, written, i, batch = megabytes * 1024 * 1024, 0, 0, []
    while written < target:
        line = (
            json.dumps({"prompt": f"Q{i}: " + "context " * 100, "chosen": f" a{i}.", "rejected": f" b{i}."})
            + "\n"
        ).encode()
        written += len(line)
        batch.append(line)
        i += 1
        if len(batch) == 1000:
            yield b"".join(batch)
            batch = []
    yield b"".join(batch) + b"\r\n--" + boundary + b"--\r\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--upload-mb", type=int, default=200)
    args = parser.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="alignd-bench-"))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = start_server(data_dir, port)
    try:
        key, job_id = setup_job(url, data_dir)
        asyncio.run(status_reads(url, key, job_id, concurrency=4, seconds=1))
        latencies = asyncio.run(
            status_reads(url, key, job_id, concurrency=args.concurrency, seconds=args.seconds)
        )
        cuts = statistics.quantiles(latencies, n=100)
        baseline = peak_rss_mib(server.pid)
        started = time.perf_counter()
        response = httpx.post(
            f"{url}/v1/files",
            content=upload_body(args.upload_mb),
            timeout=900,
            headers={"Authorization": f"Bearer {key}", "Content-Type": "multipart/form-data; boundary=bench"},
        )
        elapsed = time.perf_counter() - started
        response.raise_for_status()
        size_mb = response.json()["bytes"] / 1e6
        growth = peak_rss_mib(server.pid) - baseline
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=30)
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}; client and server share the machine"
    )
    print(f"{'measure':<34}{'value':>14}   target")
    print(f"{'job-status reads/s':<34}{len(latencies) / args.seconds:>14,.0f}   >= 2,000")
    print(f"{'  p50 latency (ms)':<34}{cuts[49] * 1000:>14.1f}")
    print(f"{'  p99 latency (ms)':<34}{cuts[98] * 1000:>14.1f}   < 50")
    print(f"{'  concurrency':<34}{args.concurrency:>14}")
    print(f"{'upload + validation (MB/s)':<34}{size_mb / elapsed:>14.1f}   >= 100")
    print(f"{'  upload size (MB)':<34}{size_mb:>14.1f}")
    print(f"{'  server peak RSS growth (MiB)':<34}{growth:>14.1f}   flat")


if __name__ == "__main__":
    main()
