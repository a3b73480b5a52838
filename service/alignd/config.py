"""The one settings object (env prefix ALIGND_). Paths are derived in methods, not at import time,
so tests can point ALIGND_DATA_DIR somewhere else."""

import ipaddress
import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from cryptography.fernet import Fernet
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from alignd.contract import AttentionKernel
from alignd.estimates.throughput import Throughput, default_throughput

DEFAULT_PUBLIC_URL = "http://127.0.0.1:8000"


class ConfigError(RuntimeError):
    """Settings that cannot work together, found at startup; the message names the setting to change."""


class GpuProfile(BaseModel):
    """How to land a run on one kind of GPU node: `resources.gpu_type` names a profile."""

    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[dict[str, str]] = Field(default_factory=list)
    resource_name: str = "nvidia.com/gpu"
    requests: dict[str, str] = Field(
        default_factory=dict,
        description="CPU, memory and ephemeral-storage requests of each pod of this profile, over "
        "ALIGND_K8S_DEFAULT_REQUESTS (a job's resources.cpu and resources.memory win).",
    )


RESERVED_VOLUMES = frozenset({"shm", "work", "tmp", "cache"})
"""Volume names the launcher gives every trainer pod."""


class PodTemplate(BaseModel):
    """What a cluster adds to every trainer pod (Kubernetes field names): alignd's own labels, env,
    volumes and security settings win, so selectors, the job token and the sandbox stay as they are."""

    model_config = ConfigDict(extra="forbid")

    annotations: dict[str, str] = Field(default_factory=dict)
    labels: dict[str, str] = Field(default_factory=dict)
    env: list[dict[str, Any]] = Field(default_factory=list, description="Kubernetes EnvVar entries.")
    volumes: list[dict[str, Any]] = Field(default_factory=list)
    volumeMounts: list[dict[str, Any]] = Field(default_factory=list)  # Kubernetes field names: camelCase
    runtimeClassName: str | None = None
    priorityClassName: str | None = None
    schedulerName: str | None = None
    tolerations: list[dict[str, Any]] = Field(default_factory=list)
    affinity: dict[str, Any] | None = None

    @field_validator("env")
    @classmethod
    def _env_leaves_alignd_alone(cls, env: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for item in env:
            name = str(item.get("name") or "")
            if not name or name.startswith("ALIGND_"):
                raise ValueError(
                    f"env entry {name!r}: every entry needs a name, and ALIGND_* variables are the "
                    "trainer's contract with the launcher; remove it from the pod template"
                )
        return env

    @field_validator("volumes")
    @classmethod
    def _volumes_keep_their_names(cls, volumes: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for volume in volumes:
            if volume.get("name") in RESERVED_VOLUMES or not volume.get("name"):
                raise ValueError(
                    f"volume {volume.get('name')!r}: every volume needs a name other than "
                    f"{', '.join(sorted(RESERVED_VOLUMES))} (the launcher's own); rename it"
                )
        return volumes


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ALIGND_", extra="ignore")

    data_dir: Path = Field(Path("~/.alignd"), description="Root of the embedded defaults (DB, store).")
    database_url: str | None = Field(None, description="SQLAlchemy URL; default SQLite in data_dir.")

    store: Literal["local", "s3"] = "local"
    store_dir: Path | None = Field(None, description="Local store root; default data_dir/data.")
    s3_endpoint: str | None = Field(None, description="host:port of any S3 endpoint.")
    s3_bucket: str = "alignd"
    s3_access_key: SecretStr | None = None
    s3_secret_key: SecretStr | None = None
    s3_region: str | None = None
    s3_secure: bool = True

    public_url: str | None = Field(
        None,
        description="How trainers and clients reach the API. Unset: `alignd serve` uses the address it "
        "binds (fine for the local launcher); the kubernetes launcher refuses to start without it.",
    )
    signing_key: SecretStr | None = Field(None, description="HMAC key for local signed URLs; random.")
    admin_key: SecretStr | None = Field(None, description="Bootstraps an admin API key.")
    auth_cache_seconds: float = Field(
        5.0,
        ge=0,
        description="How long a server process remembers a live API key; a revoked key keeps working "
        "this long in other processes and replicas (at once in the one that revoked it). 0: no cache.",
    )
    status_fast_path: bool = Field(
        True,
        description="Answer job-status polls from cached keys in ASGI middleware (alignd.api.fast_path); "
        "false sends them through the route, which bench/api_bench.py --no-fast-path compares against.",
    )

    launcher: str = Field(
        "local",
        description="The launcher backend, by name in alignd.launchers.registry: local (trainers as child "
        "processes) or kubernetes (a batch/v1 Job per run).",
    )
    run_controller: bool = Field(True, description="Run the reconcile loop inside the API server.")
    controller_interval_seconds: float = Field(1.0, gt=0)
    heartbeat_timeout_seconds: float = Field(300.0, gt=0, description="Silent trainers fail after this.")
    cancel_grace_seconds: float = Field(30.0, ge=0, description="SIGTERM, then SIGKILL after this.")

    leader_election: bool = Field(
        True, description="Only the replica holding the DB lease runs the controller (safe with >1 replica)."
    )
    leader_lease_seconds: float = Field(15.0, gt=0, description="A leader silent this long is replaced.")

    k8s_namespace: str | None = Field(None, description="Where trainer Jobs run; default the server's own.")
    k8s_kubeconfig: Path | None = Field(None, description="Kubeconfig when not running in the cluster.")
    k8s_trainer_image: str = "ghcr.io/alignd/alignd-trainer:0.1.0"
    k8s_trainer_service_account: str | None = Field(None, description="Trainer pods' account (no RBAC).")
    k8s_image_pull_secrets: list[str] = Field(default_factory=list)
    k8s_gpu_profiles: dict[str, GpuProfile] = Field(
        default_factory=dict, description="resources.gpu_type -> node selector and tolerations (JSON)."
    )
    k8s_pending_deadline_seconds: float = Field(
        900.0, gt=0, description="A run whose pods cannot schedule this long fails with the reason."
    )
    k8s_ttl_seconds_after_finished: int = Field(3600, ge=0)
    k8s_backoff_limit: int = Field(3, ge=0, description="Pod retries after preemption or eviction.")
    k8s_shm_size: str = "16Gi"
    k8s_labels: dict[str, str] = Field(default_factory=dict, description="Extra labels on trainer pods.")

    # Kubernetes: one installation's trainer Jobs among others in the namespace
    k8s_release: str = Field(
        "alignd",
        max_length=53,
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
        description="This installation's name (the Helm chart sets its release name): its trainer Jobs are "
        "named and labelled with it, and it lists, watches and deletes only Jobs that carry it. "
        "Installations sharing a namespace need different names.",
    )

    # Kubernetes on a shared GPU cluster: Kueue, the trainer pod template, requests, the model cache
    k8s_kueue_queue_name: str | None = Field(
        None,
        description="Kueue LocalQueue for trainer Jobs: they are created suspended with the "
        "kueue.x-k8s.io/queue-name label, and wait (queued, no pending deadline) until Kueue admits them.",
    )
    k8s_kueue_allowed_queues: list[str] = Field(
        default_factory=list,
        description="Other LocalQueues a job may name in alignd.resources.queue (e.g. one per team).",
    )
    k8s_pod_template: PodTemplate = Field(
        default_factory=PodTemplate,
        description="JSON merged into every trainer pod: annotations, labels, env, volumes, volumeMounts, "
        "runtimeClassName, priorityClassName, schedulerName, tolerations, affinity.",
    )
    k8s_default_requests: dict[str, str] = Field(
        default_factory=lambda: {"cpu": "2", "memory": "8Gi", "ephemeral-storage": "20Gi"},
        description="Requests of a trainer pod whose GPU profile sets none, so it is never BestEffort.",
    )
    k8s_trainer_image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    k8s_work_size_limit: str = Field("50Gi", description="sizeLimit of the run's work directory emptyDir.")
    k8s_tmp_size_limit: str = Field("10Gi", description="sizeLimit of the trainer's /tmp emptyDir.")
    k8s_model_cache_claim: str | None = Field(
        None,
        description="A ReadWriteMany PersistentVolumeClaim mounted at the trainer's cache root: base models "
        "downloaded once are reused by every pod and run. Unset: an emptyDir per pod.",
    )
    k8s_model_cache_read_only: bool = Field(
        False, description="Mount the cache claim read-only (a ReadOnlyMany claim filled beforehand)."
    )
    k8s_model_cache_size_limit: str = Field("200Gi", description="sizeLimit of the cache emptyDir.")

    max_upload_bytes: int = Field(10 * 1024**3, gt=0)
    max_line_bytes: int = Field(8 * 1024**2, gt=0)

    default_quota_concurrent_jobs: int = Field(4, ge=0)
    default_quota_gpus: int = Field(8, ge=0)
    default_quota_stored_bytes: int = Field(100 * 1024**3, ge=0)

    # Crash-safe files: the sweeper that removes what interrupted uploads and deletes left behind.
    sweeper_interval_seconds: float = Field(
        300.0, gt=0, description="How often the leader's controller runs the sweeper."
    )
    sweeper_grace_seconds: float = Field(
        3600.0,
        ge=0,
        description="Staged uploads and stored files with no database row are removed once this old; "
        "longer than any upload takes between its last byte and its registration.",
    )

    webhook_timeout_seconds: float = Field(10.0, gt=0, description="How long a receiver has to answer.")
    webhook_max_attempts: int = Field(10, ge=1, description="Attempts per event before giving up.")
    webhook_backoff_seconds: float = Field(
        10.0, gt=0, description="Wait before the first retry; each further retry waits twice as long."
    )
    webhook_backoff_max_seconds: float = Field(3600.0, gt=0, description="Longest wait between attempts.")
    webhook_poll_seconds: float = Field(1.0, gt=0, description="How often the dispatcher looks for work.")
    webhook_concurrency: int = Field(4, ge=1, description="Deliveries one dispatcher sends at once.")

    # request hardening (api/limits.py, api/ratelimit.py): body size and failed-authentication limits
    max_json_body_bytes: int = Field(
        1024**2,
        gt=0,
        description="Largest request body on JSON routes (413 above); file uploads have max_upload_bytes.",
    )
    auth_failure_limit: int = Field(
        20,
        ge=0,
        description="Failed API keys or job tokens one client address may send within the window before "
        "its requests get 429; counted per server process. 0: no limit.",
    )
    auth_failure_window_seconds: float = Field(
        60.0, gt=0, description="The window of auth_failure_limit; a blocked address waits this long at most."
    )

    # webhooks: where targets may point, and secrets at rest
    webhook_allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Host names and networks (CIDR) webhooks may reach although they are not public, "
        "comma-separated (`hooks.internal,10.8.0.0/16`). Empty: only public addresses.",
    )
    encryption_key: SecretStr | None = Field(
        None,
        description="Fernet key sealing stored secrets (webhook signing secrets, integration credentials); "
        "default a random key kept in data_dir/encryption.key. Processes sharing a database must share it.",
    )

    # integrations: mirroring jobs into W&B and MLflow runs
    integrations_poll_seconds: float = Field(
        1.0, gt=0, description="How often the integrations worker sends new metrics to W&B and MLflow runs."
    )
    integrations_timeout_seconds: float = Field(
        10.0, gt=0, description="How long W&B or an MLflow tracking server has to answer one request."
    )
    integrations_max_attempts: int = Field(
        8, ge=1, description="Failed attempts in a row before a job's integration gives up (a job event)."
    )
    integrations_backoff_seconds: float = Field(
        5.0, gt=0, description="Wait before retrying an integration; each further retry waits twice as long."
    )
    integrations_backoff_max_seconds: float = Field(
        600.0, gt=0, description="Longest wait between an integration's attempts."
    )
    wandb_mode: Literal["online", "offline"] = Field(
        "online",
        description="online: runs go to W&B with the project's API key; offline: they are written under "
        "data_dir/wandb for `wandb sync` (no key needed).",
    )
    wandb_base_url: str | None = Field(None, description="A self-hosted W&B server; default W&B's cloud.")
    mlflow_allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Host names and networks (CIDR) MLflow tracking URIs may name although they are not "
        "public, comma-separated (`mlflow.internal,10.8.0.0/16`). Empty: only public addresses.",
    )

    @field_validator("webhook_allowed_hosts", "mlflow_allowed_hosts", mode="before")
    @classmethod
    def _split_allowed_hosts(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            return json.loads(text) if text.startswith("[") else [h for h in text.split(",") if h.strip()]
        return value

    @field_validator("webhook_allowed_hosts", "mlflow_allowed_hosts")
    @classmethod
    def _check_allowed_hosts(cls, value: list[str]) -> list[str]:
        entries = [entry.strip().lower().rstrip(".") for entry in value]
        for entry in entries:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                if not re.fullmatch(r"[a-z0-9_-]+(\.[a-z0-9_-]+)*", entry):
                    raise ValueError(
                        f"{entry!r} is neither a host name nor a network such as 10.8.0.0/16"
                    ) from None
        return entries

    @field_validator("encryption_key")
    @classmethod
    def _check_encryption_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            try:
                Fernet(value.get_secret_value().encode())
            except ValueError:
                raise ValueError(
                    "must be 32 random bytes in base64 (44 characters); make one with "
                    "`openssl rand -base64 32`"
                ) from None
        return value

    # evaluations (`alignd.evals`): the judge model graders call, and what an evaluation run gets
    eval_judge_base_url: str | None = Field(
        None,
        pattern=r"^https?://",
        description="The OpenAI-compatible endpoint (up to /v1) score_model and label_model graders call: "
        "vLLM, OpenAI, or this server's own /v1 (its registered and ft: models). Unset: evals with those "
        "graders are refused.",
    )
    eval_judge_api_key: SecretStr | None = Field(
        None, description="Bearer key for the judge endpoint (for this server's own /v1: a project key)."
    )
    eval_judge_timeout_seconds: float = Field(120.0, gt=0, description="Longest wait for one judge reply.")
    eval_gpus: int = Field(
        1, ge=0, le=8, description="GPUs of a base model's evaluation run (an ft: model's takes its job's)."
    )
    eval_gpu_type: str | None = Field(None, description="GPU profile of an evaluation run of a base model.")
    eval_batch_size: int = Field(8, ge=1, le=1024, description="Prompts an evaluation generates at once.")
    eval_max_retries: int = Field(2, ge=0, description="Re-launches of an evaluation run whose run was lost.")

    # the trainer: what every training and evaluation run is started with
    trainer_attention: AttentionKernel = Field(
        AttentionKernel.auto,
        description="Attention kernel for packed rows, passed to every trainer as ALIGND_TRAINER_ATTENTION: "
        "auto (varlen, else FlexAttention on CUDA; SDPA on CPU), sdpa (a dense mask), flex (FlexAttention) "
        "or varlen (flash varlen); a trainer that cannot run the kernel uses SDPA and says why in a warning "
        "event.",
    )

    # -- faults: store timeouts, readiness, infrastructure errors --------------------------------------
    s3_connect_timeout_seconds: float = Field(
        5.0, gt=0, description="Longest wait to connect to the S3 endpoint, and to send each block of a body."
    )
    s3_read_timeout_seconds: float = Field(
        30.0,
        gt=0,
        description="Longest wait for each read of an S3 answer (per socket read, not per request).",
    )
    s3_retries: int = Field(
        2, ge=0, description="Retries of an S3 request after a timeout, refused connection or 5xx."
    )
    readyz_timeout_seconds: float = Field(
        2.0, gt=0, description="/readyz answers 503 when its database and store check takes longer."
    )
    readyz_cache_seconds: float = Field(
        2.0, ge=0, description="How long one readiness check answers /readyz: probes meanwhile share it."
    )
    readyz_min_free_bytes: int = Field(
        512 * 1024**2,
        ge=0,
        description="/readyz answers 503 when a disk alignd writes to (data dir, local store, upload "
        "spool) has less free space. 0: not checked.",
    )
    upload_spool_dir: Path | None = Field(
        None, description="Where uploads wait while they are received; default the system's temp dir."
    )

    # estimates before training (alignd.estimates): the duration table and how much of a file is tokenized
    estimate_throughput: dict[str, Throughput] = Field(
        default_factory=default_throughput,
        description="GPU profile (resources.gpu_type, or `cpu`) -> tokens/s per device for LoRA and full "
        "training of a model of `params` parameters (JSON); estimates scale it to the job's model. "
        "Default: alignd.estimates.throughput.default_throughput (CPU measured, GPUs derived).",
    )
    estimate_max_rows: int = Field(
        20_000,
        ge=1,
        description="Rows an estimate tokenizes per file at most; a larger file is sampled evenly and its "
        "token totals extrapolated (the estimate says so).",
    )

    # -- /v1/chat/completions: generation with registered and fine-tuned models ---------------------------
    chat_max_tokens: int = Field(
        512,
        ge=1,
        le=65536,
        description="Most new tokens one chat completion may generate: the default when a request names "
        "none, and the bound a request's max_completion_tokens may not exceed.",
    )
    chat_loaded_models: int = Field(
        2, ge=1, description="Chat models kept loaded in memory; the least recently used is dropped."
    )
    chat_cache_dir: Path | None = Field(
        None,
        description="Where fine-tuned weights (and base models kept in S3) are downloaded for chat, one "
        "directory per job; default data_dir/cache/chat.",
    )

    def resolved_chat_cache_dir(self) -> Path:
        return (self.chat_cache_dir or self.resolved_data_dir() / "cache" / "chat").expanduser()

    def resolved_data_dir(self) -> Path:
        return self.data_dir.expanduser()

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.resolved_data_dir() / 'alignd.db'}"

    def resolved_public_url(self) -> str:
        """The configured URL, else the address `alignd serve` binds by default: what a process that was
        not started by `serve` (the standalone controller, a library caller) falls back to."""
        return (self.public_url or DEFAULT_PUBLIC_URL).rstrip("/")

    def require_reachable_url(self) -> None:
        """Fail at startup, not at the first job, when trainer pods would have no address to report to."""
        if self.launcher == "kubernetes" and self.public_url is None:
            raise ConfigError(
                "ALIGND_LAUNCHER=kubernetes needs ALIGND_PUBLIC_URL: the URL trainer pods use to reach this "
                "server, e.g. http://alignd.<namespace>.svc:8000 (the Helm chart sets it from its Service)"
            )

    def resolved_store_dir(self) -> Path:
        return (self.store_dir or self.resolved_data_dir() / "data").expanduser()


@lru_cache
def get_settings() -> Settings:
    return Settings()
