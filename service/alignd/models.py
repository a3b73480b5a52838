"""The database tables (SQLModel). Names end in `Model`; wire shapes live in `schemas.py`, so no table is
ever a response model and internal columns (hashes, lock tokens, storage keys) cannot leak.

Conventions:
- timestamps are integer unix seconds (`unix_now()`), as OpenAI's objects carry them;
- ids are strings with a type prefix (`new_id("ftjob-")`), random, never derived from user input;
- JSON columns use SQLAlchemy's portable `JSON` type (SQLite and Postgres). SQLAlchemy does not see
  in-place changes to a JSON value: assign a new dict/list instead of mutating one;
- a job's `status` is a `JobStatus` column stored as its string value; it and `lock_token` change only
  through `alignd.jobs.state.transition` (STYLE rule 5).

The schema is created by Alembic migrations (`alignd/migrations/`), never by `create_all`; a test checks
that the migrated schema matches these classes.
"""

import secrets
import threading
import time
from enum import StrEnum
from typing import Any, TypeVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Dialect,
    Index,
    Integer,
    String,
    TypeDecorator,
    UniqueConstraint,
)
from sqlmodel import Field, SQLModel

from alignd.evals.status import EvalRunStatus
from alignd.jobs.lifecycle import JobStatus, RunEndReason, RunKind

# Deterministic constraint names: Alembic's batch mode (SQLite) needs named constraints to alter them.
SQLModel.metadata.naming_convention = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# A 64-bit autoincrement key; on SQLite it must be INTEGER to alias the rowid.
BigSerial = BigInteger().with_variant(Integer(), "sqlite")


def new_id(prefix: str) -> str:
    """A random id with a type prefix, e.g. `new_id("ftjob-")` -> "ftjob-3f9a...". 96 random bits."""
    return f"{prefix}{secrets.token_hex(12)}"


def new_lock_token() -> str:
    return secrets.token_hex(16)


def unix_now() -> int:
    return int(time.time())


class _MonotonicMicros:
    """Unix time in microseconds that never repeats nor goes back within this process: two rows created
    in the same microsecond, or across a clock step backwards, still get increasing values."""

    def __init__(self) -> None:
        self._last = 0
        self._lock = threading.Lock()

    def __call__(self) -> int:
        with self._lock:
            self._last = max(time.time_ns() // 1000, self._last + 1)
            return self._last


class JobStatusType(TypeDecorator[JobStatus]):
    """A `JobStatus` column stored as its value in a plain string column: the schema stays what the
    migrations made, and reads come back as members, so code asks `job.status.is_terminal`. Binding a
    string that is no status fails before it reaches the database."""

    impl = String
    cache_ok = True

    def process_bind_param(self, value: JobStatus | str | None, dialect: Dialect) -> str | None:
        return None if value is None else JobStatus(value).value

    def process_result_value(self, value: str | None, dialect: Dialect) -> JobStatus | None:
        return None if value is None else JobStatus(value)


E = TypeVar("E", bound=StrEnum)


class StrEnumType(TypeDecorator[E]):
    """A `StrEnum` column stored as its value in a plain string column (`RunModel.kind`, `.end_reason`):
    reads come back as members, and binding a string no member has fails before the database sees it."""

    impl = String
    cache_ok = True

    def __init__(self, enum: type[E]) -> None:
        super().__init__()
        self.enum = enum

    def process_bind_param(self, value: E | str | None, dialect: Dialect) -> str | None:
        return None if value is None else self.enum(value).value

    def process_result_value(self, value: str | None, dialect: Dialect) -> E | None:
        return None if value is None else self.enum(value)


unix_now_us = _MonotonicMicros()
"""Creation order of files and jobs (`created_at_us`): lists sort by it, so rows made in the same second
come back in the order they were made, not by their random ids. `created_at` stays whole seconds."""


class ProjectModel(SQLModel, table=True):
    """A tenant: owns API keys, files and jobs. A quota of None means "use the settings default"."""

    __tablename__ = "projects"

    id: str = Field(default_factory=lambda: new_id("proj_"), primary_key=True)
    name: str = Field(unique=True)
    created_at: int = Field(default_factory=unix_now, sa_type=BigInteger)
    quota_concurrent_jobs: int | None = None
    quota_gpus: int | None = None
    quota_stored_bytes: int | None = Field(default=None, sa_type=BigInteger)


class ApiKeyModel(SQLModel, table=True):
    """An API key, stored as the SHA-256 of the plaintext. Admin keys have no project."""

    __tablename__ = "api_keys"

    id: str = Field(default_factory=lambda: new_id("key_"), primary_key=True)
    project_id: str | None = Field(default=None, foreign_key="projects.id", index=True)
    is_admin: bool = False
    name: str
    key_hash: str = Field(unique=True)
    """SHA-256 hex of the plaintext key."""
    key_prefix: str
    """The first characters of the key, to tell keys apart in listings (`redacted_value`)."""
    created_at: int = Field(default_factory=unix_now, sa_type=BigInteger)
    revoked_at: int | None = Field(default=None, sa_type=BigInteger)


class FileState(StrEnum):
    """Where a file row is in its life (`FileModel.status`): files are deleted in steps that are safe
    to interrupt (`alignd.files.delete_file`)."""

    processed = "processed"
    """Stored and registered: what the API shows."""
    deleting = "deleting"
    """Being deleted: invisible to the API, its bytes still counted until the object is gone."""


class FileModel(SQLModel, table=True):
    """An uploaded, validated preference data file (bytes live in the object store at `storage_key`)."""

    __tablename__ = "files"

    id: str = Field(default_factory=lambda: new_id("file-"), primary_key=True)
    project_id: str = Field(foreign_key="projects.id", index=True)
    filename: str
    purpose: str = "fine-tune"
    bytes: int = Field(sa_type=BigInteger)
    status: str = FileState.processed.value
    """A `FileState`; internal (the wire's `status` is always "processed")."""
    format: str | None = None
    """Detected preference format (contract.DataFormat); None when it could not be detected."""
    rows: int = 0
    sha256: str
    storage_key: str
    report: dict[str, Any] | None = Field(default=None, sa_type=JSON)
    """The dataset quality report (DESIGN.md section 5)."""
    created_at: int = Field(default_factory=unix_now, sa_type=BigInteger)
    created_at_us: int = Field(default_factory=unix_now_us, sa_type=BigInteger)
    """List order (`unix_now_us`); `created_at` is what users see."""


class BaseModelModel(SQLModel, table=True):
    """A base model jobs may train from: a Hugging Face id or a model registered in our store."""

    __tablename__ = "base_models"

    id: str = Field(primary_key=True)
    """The model name users pass as `model`."""
    source: str
    """Where it came from: "hub", "store", "local"."""
    location: str
    """What the trainer loads: a hub id, a directory, or a store prefix."""
    created_at: int = Field(default_factory=unix_now, sa_type=BigInteger)
    owned_by: str = "alignd"


class JobModel(SQLModel, table=True):
    """A fine-tuning job. `status`, `lock_token`, `started_at` and `finished_at` change only through
    `alignd.jobs.state.transition`, which compares and sets them and records a status event."""

    __tablename__ = "jobs"
    __table_args__ = (UniqueConstraint("project_id", "idempotency_key"),)

    id: str = Field(default_factory=lambda: new_id("ftjob-"), primary_key=True)
    project_id: str = Field(foreign_key="projects.id", index=True)
    model: str
    training_file: str
    validation_file: str | None = None
    status: JobStatus = Field(sa_column=Column(JobStatusType(), index=True, nullable=False))
    spec: dict[str, Any] = Field(sa_type=JSON)
    """The frozen `contract.JobSpec` dump: exactly what the trainer receives."""
    request: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    """Hyperparameters and method as echoed to users (OpenAI shapes), plus integrations."""
    suffix: str | None = None
    seed: int
    job_metadata: dict[str, str] | None = Field(
        default=None, sa_column=Column("metadata", JSON, nullable=True)
    )
    """The user's `metadata` (the attribute name `metadata` is reserved by SQLAlchemy)."""
    priority: int = 0
    gpus: int = 1
    error: dict[str, Any] | None = Field(default=None, sa_type=JSON)
    """OpenAI's job error object: {"code", "message", "param"}."""
    fine_tuned_model: str | None = None
    trained_tokens: int | None = Field(default=None, sa_type=BigInteger)
    estimated_finish: int | None = Field(default=None, sa_type=BigInteger)
    result_files: list[str] = Field(default_factory=list, sa_type=JSON)
    idempotency_key: str | None = None
    """The `Idempotency-Key` header it was created with; unique per project."""
    created_at: int = Field(default_factory=unix_now, sa_type=BigInteger)
    created_at_us: int = Field(default_factory=unix_now_us, sa_type=BigInteger)
    """List order (`unix_now_us`); `created_at` is what users see."""
    started_at: int | None = Field(default=None, sa_type=BigInteger)
    finished_at: int | None = Field(default=None, sa_type=BigInteger)
    updated_at: int = Field(default_factory=unix_now, sa_type=BigInteger)
    lock_token: str = Field(default_factory=new_lock_token)
    """Changes on every status transition; reconcile steps apply results only while it is unchanged."""
    attempt: int = 0
    """The latest run's attempt number (0 before the first start); that run is the `RunModel` with this
    job id and attempt, and holds the launcher ref, token, heartbeat and progress of the attempt."""
    retries: int = 0
    """Automatic re-launches after a retriable failure; pauses and resumes do not count."""
    desired: str | None = None
    """A pending request the controller acts on: "cancel" or "pause"."""
    event_seq: int = Field(default=0, sa_type=BigInteger)
    """The last `JobEventModel.job_seq` handed out; bumped under this row's lock (`jobs.events`)."""
    step: int | None = None
    """The last optimizer step a run of the job reported: the job's progress, as users see it."""
    total_steps: int | None = None
    """Steps the trainer will run in all, as it announced when its training loop last started."""


class RunModel(SQLModel, table=True):
    """One attempt of a run: what one launch started and how it ended. Every start inserts a row; a row
    is never reused for a later attempt.

    `kind` says whose run it is: a training run belongs to a job (`job_id`), an evaluation run to an
    evaluation (`eval_run_id`, no foreign key: evaluations live in their own tables). `ended_at` is set
    once, by a write guarded on it still being None, so two controllers cannot end a run twice.
    """

    __tablename__ = "runs"
    __table_args__ = (UniqueConstraint("job_id", "attempt"),)

    id: str = Field(default_factory=lambda: new_id("run-"), primary_key=True)
    kind: RunKind = Field(sa_column=Column(StrEnumType(RunKind), nullable=False))
    job_id: str | None = Field(default=None, foreign_key="jobs.id", ondelete="CASCADE", index=True)
    eval_run_id: str | None = Field(default=None, index=True)
    attempt: int
    """1 for the first run of its owner; the job's `attempt` names its latest."""
    launcher_ref: str | None = None
    """The launcher's handle on the run (a pid, a Kubernetes Job name); None until the launch returned."""
    token_hash: str | None = None
    """SHA-256 hex of the run's trainer token; None once the run ended, so the token stops working."""
    last_heartbeat_at: int | None = Field(default=None, sa_type=BigInteger)
    """The trainer's last report (or, while the run waits to be placed, the controller's hold)."""
    exit_code: int | None = None
    end_reason: RunEndReason | None = Field(default=None, sa_column=Column(StrEnumType(RunEndReason)))
    logs_key: str | None = None
    """Where the run's output was kept in the object store, once it was."""
    step: int | None = None
    """The last optimizer step this run reported (the job's `step` follows its latest run)."""
    total_steps: int | None = None
    """Steps this run's trainer announced in all when its training loop started."""
    run_start_step: int | None = None
    run_start_at: int | None = Field(default=None, sa_type=BigInteger)
    """Step and unix time this run's training loop started from (after a resume, the checkpoint's step):
    the base of the pace behind the job's `estimated_finish`."""
    started_at: int = Field(default_factory=unix_now, sa_type=BigInteger)
    ended_at: int | None = Field(default=None, sa_type=BigInteger)


class JobEventModel(SQLModel, table=True):
    """One line of a job's event log. `job_seq` is the cursor order within the job; `id` is the public id.

    Rows are added only through `alignd.jobs.events.add_events`, which numbers them under the job row's
    lock, so per job they commit in `job_seq` order and a reader that has seen `job_seq` n has seen every
    earlier one. (`seq` is a global row key: on Postgres its values commit out of order.)
    """

    __tablename__ = "job_events"
    __table_args__ = (UniqueConstraint("job_id", "job_seq"),)

    seq: int | None = Field(default=None, primary_key=True, sa_type=BigSerial)
    id: str = Field(default_factory=lambda: new_id("ftevent-"), unique=True)
    job_id: str = Field(foreign_key="jobs.id", ondelete="CASCADE")
    job_seq: int | None = Field(default=None, sa_type=BigInteger, nullable=False)
    """1, 2, 3, ... per job, in commit order; set by `add_events` (a row added without it is refused)."""
    created_at: int = Field(default_factory=unix_now, sa_type=BigInteger)
    level: str = "info"
    type: str = "message"
    message: str
    data: dict[str, Any] | None = Field(default=None, sa_type=JSON)


class MetricModel(SQLModel, table=True):
    """One reported metric point (TRL's metric names in `values`)."""

    __tablename__ = "metrics"
    __table_args__ = (Index("ix_metrics_job_id_step", "job_id", "step"),)

    id: int | None = Field(default=None, primary_key=True, sa_type=BigSerial)
    job_id: str = Field(foreign_key="jobs.id", ondelete="CASCADE")
    step: int
    split: str = "train"
    epoch: float = 0.0
    values: dict[str, float] = Field(sa_type=JSON)
    created_at: int = Field(default_factory=unix_now, sa_type=BigInteger)


class CheckpointModel(SQLModel, table=True):
    """A checkpoint the trainer uploaded; one per (job, step)."""

    __tablename__ = "checkpoints"
    __table_args__ = (UniqueConstraint("job_id", "step"),)

    id: str = Field(default_factory=lambda: new_id("ftckpt-"), primary_key=True)
    job_id: str = Field(foreign_key="jobs.id", ondelete="CASCADE")
    step: int
    metrics: dict[str, float] = Field(default_factory=dict, sa_type=JSON)
    storage_prefix: str
    created_at: int = Field(default_factory=unix_now, sa_type=BigInteger)


class WebhookEndpointModel(SQLModel, table=True):
    """A project's webhook receiver: which events it gets and the secret they are signed with."""

    __tablename__ = "webhook_endpoints"

    id: str = Field(default_factory=lambda: new_id("wh_"), primary_key=True)
    project_id: str = Field(foreign_key="projects.id", index=True)
    url: str
    events: list[str] = Field(sa_type=JSON)
    """Event types it receives (`alignd.webhooks.events.EVENT_TYPES`)."""
    secret: str
    """`whsec_<base64>` sealed by `alignd.secretbox` (rows from before sealing: plaintext until a dispatcher
    starts); returned once, at creation, in plaintext."""
    created_at: int = Field(default_factory=unix_now, sa_type=BigInteger)
    created_at_us: int = Field(default_factory=unix_now_us, sa_type=BigInteger)
    """List order (`unix_now_us`)."""


class WebhookDeliveryModel(SQLModel, table=True):
    """One event owed to one endpoint: the outbox row written with the status change that caused it.

    `payload` is the exact body, so every retry sends the same bytes. A dispatcher claims a row by
    compare-and-set on `lock_token` and pushes `next_attempt_at` past the attempt's timeout, so a
    dispatcher that dies mid-send leaves a row another one retries later.
    """

    __tablename__ = "webhook_deliveries"
    __table_args__ = (Index("ix_webhook_deliveries_status_next_attempt_at", "status", "next_attempt_at"),)

    id: str = Field(default_factory=lambda: new_id("whdel_"), primary_key=True)
    endpoint_id: str = Field(foreign_key="webhook_endpoints.id", ondelete="CASCADE", index=True)
    event_id: str
    """The event's id (`evt_...`), sent as `webhook-id`: the same for every attempt and endpoint."""
    event_type: str
    subject_id: str
    """What the event is about (the job id in `data.id`)."""
    payload: str
    status: str = "pending"
    """pending (waiting or being sent), delivered, failed (gave up after the last attempt)."""
    attempts: int = 0
    """Attempts finished so far."""
    next_attempt_at: float | None = None
    """Unix seconds (fractional) when the next attempt is due; None once delivered or failed."""
    last_status_code: int | None = None
    last_error: str | None = None
    lock_token: str = Field(default_factory=new_lock_token)
    created_at: int = Field(default_factory=unix_now, sa_type=BigInteger)
    created_at_us: int = Field(default_factory=unix_now_us, sa_type=BigInteger)
    """List order (`unix_now_us`)."""
    updated_at: int = Field(default_factory=unix_now, sa_type=BigInteger)
    delivered_at: int | None = Field(default=None, sa_type=BigInteger)


class WebhookAttemptModel(SQLModel, table=True):
    """One finished attempt to send a delivery: what the endpoint answered, or why nothing came back."""

    __tablename__ = "webhook_attempts"

    id: int | None = Field(default=None, primary_key=True, sa_type=BigSerial)
    delivery_id: str = Field(foreign_key="webhook_deliveries.id", ondelete="CASCADE", index=True)
    attempt: int
    """1 for the first try."""
    created_at: int = Field(default_factory=unix_now, sa_type=BigInteger)
    duration_ms: int = 0
    status_code: int | None = None
    error: str | None = None


class LeaseModel(SQLModel, table=True):
    """Who runs the controller: one holder per name, taken over only after it expires."""

    __tablename__ = "leases"

    name: str = Field(primary_key=True)
    holder: str
    expires_at: float


class IntegrationCredentialsModel(SQLModel, table=True):
    """A project's credentials for one integration type, as one JSON object sealed by `alignd.secretbox`
    (W&B: the API key; MLflow: the tracking URI and an optional token)."""

    __tablename__ = "integration_credentials"
    __table_args__ = (UniqueConstraint("project_id", "type"),)

    id: str = Field(default_factory=lambda: new_id("intcred_"), primary_key=True)
    project_id: str = Field(foreign_key="projects.id", index=True)
    type: str
    sealed: str
    created_at: int = Field(default_factory=unix_now, sa_type=BigInteger)
    updated_at: int = Field(default_factory=unix_now, sa_type=BigInteger)


class IntegrationRunModel(SQLModel, table=True):
    """One integration of one job: the external run the control plane mirrors the job into.

    The job's metric rows are its outbox: the integrations worker sends those after `metric_cursor`, then
    advances it. It claims a row by compare-and-set on `lock_token`, pushing `next_attempt_at` past the
    attempt's timeout, like the webhook dispatcher. `status`: active (mirroring), finished (the job ended
    and everything was sent), failed (gave up after the last attempt; the job has an event saying so).
    """

    __tablename__ = "integration_runs"
    __table_args__ = (Index("ix_integration_runs_status_next_attempt_at", "status", "next_attempt_at"),)

    id: str = Field(default_factory=lambda: new_id("intrun_"), primary_key=True)
    job_id: str = Field(foreign_key="jobs.id", ondelete="CASCADE", index=True)
    type: str
    options: dict[str, Any] = Field(sa_type=JSON)
    """The request's entry (`schemas.Integration`), as the job echoes it."""
    status: str = "active"
    external_id: str | None = None
    """The run's id in the other system, once it was created there."""
    metric_cursor: int = Field(default=0, sa_type=BigInteger)
    """The last `MetricModel.id` sent."""
    attempts: int = 0
    """Failed attempts in a row."""
    next_attempt_at: float | None = None
    last_error: str | None = None
    lock_token: str = Field(default_factory=new_lock_token)
    created_at: int = Field(default_factory=unix_now, sa_type=BigInteger)
    updated_at: int = Field(default_factory=unix_now, sa_type=BigInteger)


# ---- evals (OpenAI's Evals API; `alignd.evals`) ---------------------------------------------------------


class EvalRunStatusType(TypeDecorator[EvalRunStatus]):
    """An `EvalRunStatus` column stored as its value in a plain string column (like `JobStatusType`)."""

    impl = String
    cache_ok = True

    def process_bind_param(self, value: EvalRunStatus | str | None, dialect: Dialect) -> str | None:
        return None if value is None else EvalRunStatus(value).value

    def process_result_value(self, value: str | None, dialect: Dialect) -> EvalRunStatus | None:
        return None if value is None else EvalRunStatus(value)


class EvalModel(SQLModel, table=True):
    """An eval: the shape of its items and its testing criteria, as validated at creation (the
    `alignd.evals.schemas.EvalCreate` dump). Runs of it are `EvalRunModel` rows."""

    __tablename__ = "evals"

    id: str = Field(default_factory=lambda: new_id("eval_"), primary_key=True)
    project_id: str = Field(foreign_key="projects.id", index=True)
    name: str
    eval_metadata: dict[str, str] | None = Field(
        default=None, sa_column=Column("metadata", JSON, nullable=True)
    )
    data_source_config: dict[str, Any] = Field(sa_type=JSON)
    """`CustomDataSourceConfig` dump: the item schema and whether graders read a sample."""
    testing_criteria: list[dict[str, Any]] = Field(sa_type=JSON)
    """The graders (`schemas.Grader` dumps, `preference` in its own shape), in request order."""
    created_at: int = Field(default_factory=unix_now, sa_type=BigInteger)
    created_at_us: int = Field(default_factory=unix_now_us, sa_type=BigInteger)
    """List order (`unix_now_us`)."""
    updated_at: int = Field(default_factory=unix_now, sa_type=BigInteger)


class EvalRunModel(SQLModel, table=True):
    """One run of an eval over a data source, with a model. `status` changes only through
    `alignd.evals.service` (compare-and-set on `lock_token`)."""

    __tablename__ = "eval_runs"

    id: str = Field(default_factory=lambda: new_id("evalrun_"), primary_key=True)
    eval_id: str = Field(foreign_key="evals.id", ondelete="CASCADE", index=True)
    project_id: str = Field(foreign_key="projects.id", index=True)
    name: str
    status: EvalRunStatus = Field(sa_column=Column(EvalRunStatusType(), index=True, nullable=False))
    model: str = ""
    """The model under evaluation as the user named it; "" for a jsonl source."""
    data_source: dict[str, Any] = Field(sa_type=JSON)
    """The `RunDataSource` dump, as echoed to users."""
    resolved: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    """What creation resolved, for the executor: `alignd.evals.models.ResolvedRun` dump (the model's
    base and adapter job, each preference grader's reference, the file's row count)."""
    run_metadata: dict[str, str] | None = Field(
        default=None, sa_column=Column("metadata", JSON, nullable=True)
    )
    error: dict[str, Any] | None = Field(default=None, sa_type=JSON)
    """{"code", "message"} once failed."""
    result_counts: dict[str, int] | None = Field(default=None, sa_type=JSON)
    per_testing_criteria_results: list[dict[str, Any]] | None = Field(default=None, sa_type=JSON)
    per_model_usage: list[dict[str, Any]] | None = Field(default=None, sa_type=JSON)
    report_file_id: str | None = None
    desired: str | None = None
    """A pending request the controller acts on: "cancel"."""
    lock_token: str = Field(default_factory=new_lock_token)
    created_at: int = Field(default_factory=unix_now, sa_type=BigInteger)
    created_at_us: int = Field(default_factory=unix_now_us, sa_type=BigInteger)
    """List order (`unix_now_us`)."""
    started_at: int | None = Field(default=None, sa_type=BigInteger)
    finished_at: int | None = Field(default=None, sa_type=BigInteger)
    updated_at: int = Field(default_factory=unix_now, sa_type=BigInteger)


class EvalOutputItemModel(SQLModel, table=True):
    """One graded item of a run; one per (run, datasource_item_id), so a retried attempt that reports an
    item again replaces it rather than adding a second."""

    __tablename__ = "eval_output_items"
    __table_args__ = (UniqueConstraint("run_id", "datasource_item_id"),)

    id: str = Field(default_factory=lambda: new_id("outputitem_"), primary_key=True)
    run_id: str = Field(foreign_key="eval_runs.id", ondelete="CASCADE")
    eval_id: str
    datasource_item_id: int
    status: str
    """An `OutputItemStatus` value: pass, fail or error."""
    datasource_item: dict[str, Any] = Field(sa_type=JSON)
    results: list[dict[str, Any]] = Field(sa_type=JSON)
    """`contract.eval_items.GraderResult` dumps, one per testing criterion."""
    sample: dict[str, Any] = Field(sa_type=JSON)
    """A `contract.eval_items.Sample` dump."""
    created_at: int = Field(default_factory=unix_now, sa_type=BigInteger)
