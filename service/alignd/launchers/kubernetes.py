"""Runs as Kubernetes Jobs through the official client (DESIGN.md section 8).

Reads come from list-then-watch caches of this release's labelled Jobs and pods (ALIGND_K8S_RELEASE)
and of Job events, so a controller pass over many runs makes no API calls; a cache miss (a Job
created a moment ago) reads the Job directly before calling a run missing. Writes are idempotent: a
conflict on create means the object exists (if it is this run's), a 404 on delete means it is gone.

Other releases in the namespace are invisible, so nothing here can stop their runs. Jobs made before
runs carried their release are watched apart: one is adopted when this release's database asks about
its job id, and an unlabelled Job no one asked about is never deleted.
"""

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubernetes import client, config
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

from alignd.config import Settings
from alignd.launchers import k8s_manifests as manifests
from alignd.launchers.base import Launcher, LaunchRequest, RunStatus
from alignd.launchers.k8s_status import Obj, is_suspended, newest_first, run_status
from alignd.launchers.k8s_watch import Informer

log = logging.getLogger("alignd.launchers.kubernetes")
NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
CONFLICT, NOT_FOUND = 409, 404
SYNC_TIMEOUT_SECONDS = 30.0


class KubernetesConfigError(RuntimeError):
    pass


class RunNameTakenError(RuntimeError):
    """A Job of the run's name exists and is another release's (two installations with one name)."""


def api_client_from_settings(settings: Settings) -> ApiClient:
    """A kubeconfig when one is configured, else the pod's in-cluster service account."""
    if settings.k8s_kubeconfig is not None:
        return config.new_client_from_config(config_file=str(settings.k8s_kubeconfig.expanduser()))
    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)
    except config.ConfigException as exc:
        raise KubernetesConfigError(
            f"ALIGND_LAUNCHER=kubernetes but no cluster credentials were found ({exc}); run inside the "
            "cluster or set ALIGND_K8S_KUBECONFIG"
        ) from None
    return ApiClient(configuration)


def default_namespace(settings: Settings) -> str:
    if settings.k8s_namespace:
        return settings.k8s_namespace
    if NAMESPACE_FILE.exists():
        return NAMESPACE_FILE.read_text().strip()
    return "default"


class KubernetesLauncher(Launcher):
    name = "kubernetes"
    enforces_max_runtime = True

    def __init__(
        self,
        settings: Settings,
        api: ApiClient | None = None,
        *,
        clock: Callable[[], float] = time.time,
        watch_seconds: int = 60,
    ) -> None:
        self.settings = settings
        self.api = api or api_client_from_settings(settings)
        self.namespace = default_namespace(settings)
        self.clock = clock
        self.batch = client.BatchV1Api(self.api)
        self.core = client.CoreV1Api(self.api)

        def informer(
            list_fn: Callable[..., Any],
            labels: str | None,
            fields: str | None = None,
            index: str | None = None,
        ) -> Informer:
            return Informer(
                list_fn,
                self.api,
                namespace=self.namespace,
                label_selector=labels,
                field_selector=fields,
                index_label=index,
                watch_seconds=watch_seconds,
            )

        self.release = settings.k8s_release
        own, legacy = manifests.selector(self.release), manifests.LEGACY_SELECTOR
        self.jobs = informer(self.batch.list_namespaced_job, own, index=manifests.JOB_ID_LABEL)
        self.pods = informer(self.core.list_namespaced_pod, own, index=manifests.RUN_LABEL)
        self.legacy_jobs = informer(self.batch.list_namespaced_job, legacy, index=manifests.JOB_ID_LABEL)
        self.legacy_pods = informer(self.core.list_namespaced_pod, legacy, index=manifests.RUN_LABEL)
        self.events = informer(self.core.list_namespaced_event, None, "involvedObject.kind=Job")
        """Events cannot be selected by label; they are read by Job name, which no other release shares."""
        self._informers: tuple[Informer, ...] = (
            self.jobs,
            self.pods,
            self.legacy_jobs,
            self.legacy_pods,
            self.events,
        )
        self.workload_events: Informer | None = None
        """Kueue says why a run waits on its Workload (`job-<Job name>-<hash>`), not on the Job."""
        if settings.k8s_kueue_queue_name or settings.k8s_kueue_allowed_queues:
            self.workload_events = informer(
                self.core.list_namespaced_event, None, "involvedObject.kind=Workload"
            )
            self._informers += (self.workload_events,)
        self._adopted: set[str] = set()
        """Names of unlabelled Jobs (made before runs carried their release) this release's jobs own."""
        self._reported: dict[str, set[str]] = {}
        self._start_lock = threading.Lock()
        self._started = False

    # ---- lifecycle ------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the watches and wait for their first lists, so a restart does not see runs as missing."""
        with self._start_lock:
            if self._started:
                return
            for informer in self._informers:
                informer.start()
            for informer in self._informers:
                if not informer.wait_synced(SYNC_TIMEOUT_SECONDS):
                    raise KubernetesConfigError(
                        f"could not list ({informer.what}) in namespace {self.namespace} within "
                        f"{SYNC_TIMEOUT_SECONDS:.0f}s; check the API server address and the Role's verbs"
                    )
            self._started = True

    def close(self) -> None:
        for informer in self._informers:
            informer.stop()

    # ---- Launcher -------------------------------------------------------------------------------------

    def launch(self, request: LaunchRequest) -> str:
        self.start()
        run = manifests.build(request, self.settings, self.namespace)
        job = self._create_job(run.job, request.job_id)
        for owned in run.owned(job["metadata"].get("uid") or ""):
            self._create(owned)
        (self.jobs if manifests.RELEASE_LABEL in _labels(job) else self.legacy_jobs).put(job)
        log.info("launched %s for %s (attempt %d)", run.name, request.job_id, request.attempt)
        return run.name

    def poll(self, job_id: str, ref: str | None) -> RunStatus:
        """The controller polls only its own database's jobs: that is when unlabelled Jobs are adopted."""
        self.start()
        self._adopt(job_id)
        name = ref or self._latest_run(job_id)
        job = self._job_of(job_id, name) if name else None
        pods = self._pods(name) if name else []
        status = run_status(
            job, pods, now=self.clock(), pending_deadline=self.settings.k8s_pending_deadline_seconds
        )
        if job is not None and not pods:
            status = self._with_job_warnings(name or "", status)
        if job is not None and is_suspended(job):
            status = self._with_kueue_reason(name or "", status)
        return self._only_new_notices(job_id, status)

    def terminate(self, job_id: str, ref: str | None, *, grace_seconds: float) -> None:
        """Delete the run's Job; foreground propagation stops its pods (SIGTERM, then the pod's grace).

        Without a ref, only this release's (and adopted) Jobs of the job id are deleted."""
        self.start()
        names = {ref} if ref else {job["metadata"]["name"] for job in self._runs(job_id)}
        for name in names:
            try:
                self.batch.delete_namespaced_job(
                    name, self.namespace, propagation_policy="Foreground", _request_timeout=30
                )
            except ApiException as exc:
                if exc.status != NOT_FOUND:
                    raise
            log.info("deleted %s (job %s)", name, job_id)

    def active_job_ids(self) -> set[str]:
        """This release's live runs and the adopted ones: another release's are never orphans here."""
        self.start()
        adopted = [job for job in self.legacy_jobs.items() if job["metadata"]["name"] in self._adopted]
        return {
            _labels(job)[manifests.JOB_ID_LABEL]
            for job in [*self.jobs.items(), *adopted]
            if manifests.JOB_ID_LABEL in _labels(job) and not _finished(job)
        }

    def logs(self, job_id: str, ref: str | None) -> bytes | None:
        """Every pod's trainer output for the run, oldest first: preempted pods' logs are kept too."""
        self.start()
        name = ref or self._latest_run(job_id)
        pods = self._pods(name) if name else []
        if not pods:
            return None
        parts = []
        for pod in reversed(newest_first(pods)):
            pod_name = pod["metadata"]["name"]
            try:
                text = self.core.read_namespaced_pod_log(
                    pod_name, self.namespace, container=manifests.CONTAINER, _request_timeout=30
                )
            except ApiException as exc:
                text = f"(logs unavailable: {exc.status} {exc.reason})\n"
            parts.append(f"===== pod {pod_name} =====\n{text}")
        return "".join(parts).encode()

    # ---- helpers --------------------------------------------------------------------------------------

    def _create_job(self, body: Any, job_id: str) -> Obj:
        name = body["metadata"]["name"]
        try:
            created = self.batch.create_namespaced_job(self.namespace, body, _request_timeout=30)
        except ApiException as exc:
            if exc.status != CONFLICT:
                raise
            existing = self._read_job(name)
            if existing is None:
                raise
            if self._claim(existing, job_id) is None:
                other = _labels(existing).get(manifests.RELEASE_LABEL)
                raise RunNameTakenError(
                    f"Job {name} in namespace {self.namespace} belongs to release {other!r}, not to "
                    f"{self.release!r}: give each installation in a namespace its own ALIGND_K8S_RELEASE"
                ) from None
            return existing
        return self._dict(created)

    def _create(self, body: Obj) -> None:
        create: dict[str, Callable[..., Any]] = {
            "Secret": self.core.create_namespaced_secret,
            "Service": self.core.create_namespaced_service,
        }
        try:
            create[body["kind"]](self.namespace, body, _request_timeout=30)
        except ApiException as exc:
            if exc.status != CONFLICT:
                raise

    def _read_job(self, name: str) -> Obj | None:
        try:
            return self._dict(self.batch.read_namespaced_job(name, self.namespace, _request_timeout=30))
        except ApiException as exc:
            if exc.status == NOT_FOUND:
                return None
            raise

    def _dict(self, obj: Any) -> Obj:
        result: Obj = self.api.sanitize_for_serialization(obj)
        return result

    def _adopt(self, job_id: str) -> None:
        for job in self.legacy_jobs.indexed(job_id):
            self._adopted.add(job["metadata"]["name"])

    def _claim(self, job: Obj, job_id: str) -> Obj | None:
        """The Job if it is this release's run of the job (or an unlabelled one of it, now adopted)."""
        labels = _labels(job)
        owner = (job["metadata"].get("annotations") or {}).get(manifests.JOB_ID_LABEL)
        if labels.get(manifests.JOB_ID_LABEL, owner) != job_id:
            return None
        if manifests.RELEASE_LABEL not in labels:
            self._adopted.add(job["metadata"]["name"])
            return job
        return job if labels[manifests.RELEASE_LABEL] == self.release else None

    def _job_of(self, job_id: str, name: str) -> Obj | None:
        job = self.jobs.get(name) or self.legacy_jobs.get(name) or self._read_job(name)
        return None if job is None else self._claim(job, job_id)

    def _pods(self, name: str) -> list[Obj]:
        legacy = self.legacy_pods.indexed(name) if name in self._adopted else []
        return self.pods.indexed(name) + legacy

    def _runs(self, job_id: str) -> list[Obj]:
        legacy = self.legacy_jobs.indexed(job_id)
        return self.jobs.indexed(job_id) + [job for job in legacy if job["metadata"]["name"] in self._adopted]

    def _latest_run(self, job_id: str) -> str | None:
        runs = self._runs(job_id)
        if not runs:
            return None
        latest = max(runs, key=lambda j: int(_labels(j).get(manifests.ATTEMPT_LABEL, "0")))
        name: str = latest["metadata"]["name"]
        return name

    def _with_job_warnings(self, name: str, status: RunStatus) -> RunStatus:
        """No pod yet: the Job's own warnings (a ResourceQuota refusing pods) say why."""
        warnings = [
            f"Kubernetes: {event.get('reason')}: {event.get('message')}"
            for event in self.events.items()
            if (event.get("involvedObject") or {}).get("name") == name and event.get("type") == "Warning"
        ]
        if not warnings:
            return status
        if status.message and status.reason == "Unschedulable":
            return RunStatus(status.state, reason=status.reason, message=f"{status.message}; {warnings[-1]}")
        return RunStatus(
            status.state, status.exit_code, status.reason, status.message, status.notices + warnings
        )

    def _with_kueue_reason(self, name: str, status: RunStatus) -> RunStatus:
        """Kueue's latest word on the run's Workload (no quota left, a flavor that does not fit)."""
        if self.workload_events is None:
            return status
        prefix = f"job-{name}-"
        said = [
            event
            for event in self.workload_events.items()
            if (event.get("involvedObject") or {}).get("kind") == "Workload"
            and str((event.get("involvedObject") or {}).get("name") or "").startswith(prefix)
        ]
        if not said:
            return status
        latest = max(said, key=_event_time)
        notice = f"Kueue: {latest.get('reason')}: {latest.get('message')}"
        return RunStatus(
            status.state, status.exit_code, status.reason, status.message, [*status.notices, notice]
        )

    def _only_new_notices(self, job_id: str, status: RunStatus) -> RunStatus:
        """Each notice becomes one job event, not one per controller pass."""
        seen = self._reported.setdefault(job_id, set())
        fresh = [n for n in status.notices if n not in seen]
        seen.update(fresh)
        if status.state.value in ("succeeded", "failed", "missing"):
            self._reported.pop(job_id, None)
        return RunStatus(status.state, status.exit_code, status.reason, status.message, fresh)


def _labels(obj: Obj) -> dict[str, str]:
    labels: dict[str, str] = (obj.get("metadata") or {}).get("labels") or {}
    return labels


def _event_time(event: Obj) -> str:
    """RFC 3339 times in UTC sort as strings; events carry one of these, newest API first."""
    metadata = event.get("metadata") or {}
    return str(
        event.get("eventTime")
        or event.get("lastTimestamp")
        or event.get("firstTimestamp")
        or metadata.get("creationTimestamp")
        or ""
    )


def _finished(job: Obj) -> bool:
    if (job.get("metadata") or {}).get("deletionTimestamp"):
        return True
    conditions = (job.get("status") or {}).get("conditions") or []
    return any(c.get("type") in ("Complete", "Failed") and c.get("status") == "True" for c in conditions)
