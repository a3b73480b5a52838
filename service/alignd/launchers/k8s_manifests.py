"""The Kubernetes objects of one trainer run, as plain dicts (pure: no API calls).

One batch/v1 Job per attempt, named from the release, the job id and the attempt so a repeated launch
finds the first one and two releases in one namespace never share a name; a Secret with the job token
owned by the Job (the token never appears in the pod spec); for multi-node runs an Indexed Job and a
headless Service for torchrun's rendezvous at index 0.

On a cluster with Kueue the Job is created suspended in a LocalQueue, and Kueue admits it as one
workload (every pod of a multi-node run together) by unsuspending it. The cluster's pod template
(ALIGND_K8S_POD_TEMPLATE) is merged into every pod; alignd's own labels, env and volumes win.
"""

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from alignd.config import GpuProfile, PodTemplate, Settings
from alignd.contract import ExitCode
from alignd.launchers.base import LaunchRequest

Manifest = dict[str, Any]

JOB_ID_LABEL = "alignd.dev/job-id"
ATTEMPT_LABEL = "alignd.dev/attempt"
RUN_LABEL = "alignd.dev/run"
RELEASE_LABEL = "alignd.dev/release"
MANAGED_BY = {"app.kubernetes.io/managed-by": "alignd"}
SELECTOR = "app.kubernetes.io/managed-by=alignd,app.kubernetes.io/component=trainer"
"""Every alignd trainer Job and pod, whichever release made it."""
LEGACY_SELECTOR = f"{SELECTOR},!{RELEASE_LABEL}"
"""Trainer Jobs and pods made before runs carried their release: any release's, told apart by job id."""
NAME_PREFIX_LENGTH = 16
CONTAINER = "trainer"
TOKEN_ENV = "ALIGND_JOB_TOKEN"
TOKEN_KEY = "job-token"
TERMINATION_LOG = "/dev/termination-log"
WORK_DIR = "/workspace"
"""HOME: the run's own files. Matches trainer_image/Dockerfile."""
CACHE_DIR = "/cache"
"""XDG_CACHE_HOME: downloaded base models (and HF_HOME), shared between runs when it is a claim."""
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
"""The taint GPU node pools commonly carry; GPU pods without a gpu_type (so without a profile's
tolerations) still land on them."""
RENDEZVOUS_PORT = 29500
TRAINER_UID = 1000
"""Matches the USER of trainer_image/Dockerfile."""


class ManifestError(ValueError):
    """The job cannot be expressed as a run on this cluster (e.g. an unknown GPU profile)."""


def selector(release: str) -> str:
    """This release's trainer Jobs and pods, and no other release's."""
    return f"{SELECTOR},{RELEASE_LABEL}={release}"


def job_name(job_id: str, attempt: int, release: str) -> str:
    """`<release>-<job id>-<attempt>`: a DNS-1123 label, short enough for Indexed pods' hostnames
    (`{name}-{index}`). Helm keeps release names unique in a namespace, so names are too; a release
    name too long to fit, or with a dot, is shortened and made unique again by a hash of it."""
    name = f"{_name_prefix(release)}-{job_id}-{attempt}".lower().replace("_", "-").replace(".", "-")
    if len(name) > 56:
        raise ManifestError(f"job id {job_id!r} is too long for a Kubernetes name ({name})")
    return name


def _name_prefix(release: str) -> str:
    """The release itself, or (too long, or with a dot a name cannot keep) its start and a hash of it."""
    if len(release) <= NAME_PREFIX_LENGTH and "." not in release:
        return release
    digest = hashlib.sha256(release.encode()).hexdigest()[:5]
    return f"{release[: NAME_PREFIX_LENGTH - 6].replace('.', '-')}-{digest}"


def not_retriable_exit_codes() -> list[int]:
    return sorted(int(code) for code in ExitCode if code is not ExitCode.SUCCESS and not code.retriable)


@dataclass(frozen=True)
class RunManifests:
    name: str
    job: Manifest
    secret: Manifest
    service: Manifest | None

    def owned(self, job_uid: str) -> list[Manifest]:
        """The Secret (and Service) with an ownerReference to the created Job, so they go with it."""
        owner = {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "name": self.name,
            "uid": job_uid,
            "controller": True,
            "blockOwnerDeletion": False,
        }
        objects = [self.secret] + ([self.service] if self.service else [])
        return [_with_owner(obj, owner) for obj in objects]


def _with_owner(obj: Manifest, owner: Manifest) -> Manifest:
    metadata = dict(obj["metadata"]) | {"ownerReferences": [owner]}
    return obj | {"metadata": metadata}


def queue(wanted: str | None, settings: Settings) -> str | None:
    """The Kueue LocalQueue of a run: the job's `alignd.resources.queue` if the admin allows it, else
    the configured default; None without Kueue."""
    default = settings.k8s_kueue_queue_name
    if wanted is None or wanted == default:
        return default
    if wanted not in settings.k8s_kueue_allowed_queues:
        allowed = sorted({*settings.k8s_kueue_allowed_queues, *([default] if default else [])})
        known = ", ".join(allowed) or "none (the admin sets ALIGND_K8S_KUEUE_ALLOWED_QUEUES)"
        raise ManifestError(f"resources.queue {wanted!r} is not a queue jobs may use here; allowed: {known}")
    return wanted


def build(request: LaunchRequest, settings: Settings, namespace: str) -> RunManifests:
    name = job_name(request.job_id, request.attempt, settings.k8s_release)
    labels = _labels(request, name, settings)
    run_queue = queue(request.spec.resources.queue, settings)
    job_labels = labels | ({QUEUE_LABEL: run_queue} if run_queue else {})
    metadata = {
        "name": name,
        "namespace": namespace,
        "labels": labels,
        "annotations": {JOB_ID_LABEL: request.job_id},
    }
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata | {"name": f"{name}-token"},
        "type": "Opaque",
        "stringData": {TOKEN_KEY: request.env[TOKEN_ENV]},
    }
    multi_node = request.spec.resources.nodes > 1
    service = _headless_service(metadata, name, settings.k8s_release) if multi_node else None
    job = _job(request, settings, metadata | {"labels": job_labels}, labels)
    if run_queue:
        # Kueue admits the Job by unsuspending it, all of its pods at once (one Workload).
        job["spec"]["suspend"] = True
    return RunManifests(name, job, secret, service)


def _labels(request: LaunchRequest, name: str, settings: Settings) -> dict[str, str]:
    """The release as Helm's `instance` (and in alignd's own label, which selectors use); the run's
    identity in alignd's labels."""
    return (
        dict(settings.k8s_pod_template.labels)
        | dict(settings.k8s_labels)
        | MANAGED_BY
        | {
            "app.kubernetes.io/name": "alignd-trainer",
            "app.kubernetes.io/instance": settings.k8s_release,
            "app.kubernetes.io/component": "trainer",
            RELEASE_LABEL: settings.k8s_release,
            JOB_ID_LABEL: request.job_id,
            ATTEMPT_LABEL: str(request.attempt),
            RUN_LABEL: name,
        }
    )


def _job(request: LaunchRequest, settings: Settings, metadata: Manifest, labels: dict[str, str]) -> Manifest:
    nodes = request.spec.resources.nodes
    spec: Manifest = {
        "backoffLimit": settings.k8s_backoff_limit,
        "ttlSecondsAfterFinished": settings.k8s_ttl_seconds_after_finished,
        "podFailurePolicy": {
            "rules": [
                {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
                {
                    "action": "FailJob",
                    "onExitCodes": {
                        "containerName": CONTAINER,
                        "operator": "In",
                        "values": not_retriable_exit_codes(),
                    },
                },
            ]
        },
        "template": {
            "metadata": {
                "labels": labels,
                "annotations": dict(settings.k8s_pod_template.annotations) | metadata["annotations"],
            },
            "spec": _pod_spec(request, settings, metadata["name"]),
        },
    }
    if request.spec.max_runtime_seconds is not None:
        spec["activeDeadlineSeconds"] = request.spec.max_runtime_seconds
    if nodes > 1:
        # A node that fails leaves its peers stuck in a collective: fail the attempt, and let the
        # controller's retry start every node again from the last checkpoint.
        spec |= {"completionMode": "Indexed", "completions": nodes, "parallelism": nodes, "backoffLimit": 0}
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata, "spec": spec}


def _pod_spec(request: LaunchRequest, settings: Settings, name: str) -> Manifest:
    resources = request.spec.resources
    profile = _profile(resources.gpu_type, settings.k8s_gpu_profiles)
    template = settings.k8s_pod_template
    pod: Manifest = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": max(30, int(settings.cancel_grace_seconds)),
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": TRAINER_UID,
            "runAsGroup": TRAINER_UID,
            "fsGroup": TRAINER_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [_container(request, settings, name, profile)],
        "volumes": [*_volumes(settings), *template.volumes],
    }
    if settings.k8s_trainer_service_account:
        pod["serviceAccountName"] = settings.k8s_trainer_service_account
    if settings.k8s_image_pull_secrets:
        pod["imagePullSecrets"] = [{"name": secret} for secret in settings.k8s_image_pull_secrets]
    if profile is not None and profile.node_selector:
        pod["nodeSelector"] = dict(profile.node_selector)
    tolerations = [dict(t) for t in profile.tolerations] if profile is not None else []
    if profile is None and resources.gpus > 0:
        tolerations.append(dict(GPU_TOLERATION))
    tolerations += [dict(t) for t in template.tolerations if t not in tolerations]
    if tolerations:
        pod["tolerations"] = tolerations
    if resources.nodes > 1:
        pod["subdomain"] = name
    return pod | _template_fields(template)


def _template_fields(template: PodTemplate) -> Manifest:
    fields: Manifest = {
        "runtimeClassName": template.runtimeClassName,
        "priorityClassName": template.priorityClassName,
        "schedulerName": template.schedulerName,
        "affinity": template.affinity,
    }
    return {key: value for key, value in fields.items() if value}


def _volumes(settings: Settings) -> list[Manifest]:
    """Memory-backed /dev/shm; bounded emptyDirs for the run's files and /tmp; the model cache, a
    shared claim or a bounded emptyDir."""
    if settings.k8s_model_cache_claim:
        claim = {"claimName": settings.k8s_model_cache_claim, "readOnly": settings.k8s_model_cache_read_only}
        cache: Manifest = {"name": "cache", "persistentVolumeClaim": claim}
    else:
        cache = {"name": "cache", "emptyDir": {"sizeLimit": settings.k8s_model_cache_size_limit}}
    return [
        {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": settings.k8s_shm_size}},
        {"name": "work", "emptyDir": {"sizeLimit": settings.k8s_work_size_limit}},
        {"name": "tmp", "emptyDir": {"sizeLimit": settings.k8s_tmp_size_limit}},
        cache,
    ]


def unknown_gpu_type(gpu_type: str | None, profiles: Mapping[str, GpuProfile]) -> str | None:
    """What is wrong with asking for `gpu_type` on this cluster, or None when it has that profile."""
    if gpu_type is None or gpu_type in profiles:
        return None
    known = ", ".join(sorted(profiles)) or "none (the admin sets ALIGND_K8S_GPU_PROFILES)"
    return f"unknown gpu_type {gpu_type!r}; this cluster's GPU types: {known}"


def _profile(gpu_type: str | None, profiles: Mapping[str, GpuProfile]) -> GpuProfile | None:
    if (problem := unknown_gpu_type(gpu_type, profiles)) is not None:
        raise ManifestError(problem)
    return None if gpu_type is None else profiles[gpu_type]


def _container(request: LaunchRequest, settings: Settings, name: str, profile: GpuProfile | None) -> Manifest:
    resources = request.spec.resources
    limits: dict[str, str] = {}
    requests = dict(settings.k8s_default_requests) | (dict(profile.requests) if profile else {})
    if resources.gpus > 0:
        limits[profile.resource_name if profile else "nvidia.com/gpu"] = str(resources.gpus)
    if resources.memory:
        limits["memory"] = requests["memory"] = resources.memory
    if resources.cpu:
        requests["cpu"] = resources.cpu
    return {
        "name": CONTAINER,
        "image": settings.k8s_trainer_image,
        "imagePullPolicy": settings.k8s_trainer_image_pull_policy,
        "command": command(request, name),
        "workingDir": WORK_DIR,
        "env": _env(request, name, settings.k8s_pod_template),
        "resources": {"limits": limits, "requests": requests},
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [
            {"name": "shm", "mountPath": "/dev/shm"},
            {"name": "work", "mountPath": WORK_DIR},
            {"name": "tmp", "mountPath": "/tmp"},
            {"name": "cache", "mountPath": CACHE_DIR, "readOnly": settings.k8s_model_cache_read_only},
            *settings.k8s_pod_template.volumeMounts,
        ],
    }


def command(request: LaunchRequest, name: str) -> list[str]:
    """`python -m alignd_trainer` (or the run kind's module) for one process; torchrun for several GPUs or
    nodes."""
    resources = request.spec.resources
    if resources.gpus <= 1 and resources.nodes == 1:
        return ["python", "-m", request.module]
    per_node = str(max(1, resources.gpus))
    if resources.nodes == 1:
        return ["torchrun", "--standalone", f"--nproc_per_node={per_node}", "-m", request.module]
    return [
        "torchrun",
        f"--nnodes={resources.nodes}",
        f"--nproc_per_node={per_node}",
        "--node_rank=$(JOB_COMPLETION_INDEX)",
        f"--master_addr={name}-0.{name}",
        f"--master_port={RENDEZVOUS_PORT}",
        "-m",
        request.module,
    ]


def _env(request: LaunchRequest, name: str, template: PodTemplate) -> list[Manifest]:
    plain = {k: v for k, v in request.env.items() if k != TOKEN_ENV} | {
        "ALIGND_TERMINATION_LOG": TERMINATION_LOG,
        "HOME": WORK_DIR,
        "XDG_CACHE_HOME": CACHE_DIR,
        "HF_HOME": f"{CACHE_DIR}/huggingface",
        "PYTHONUNBUFFERED": "1",
    }
    env: list[Manifest] = [{"name": k, "value": v} for k, v in sorted(plain.items())]
    env += [item for item in template.env if item["name"] not in plain]
    env.append(
        {
            "name": TOKEN_ENV,
            "valueFrom": {
                "secretKeyRef": {
                    "name": f"{name}-token",
                    "key": TOKEN_KEY,
                }
            },
        }
    )
    if request.spec.resources.nodes > 1:
        index_path = "metadata.annotations['batch.kubernetes.io/job-completion-index']"
        env.append({"name": "JOB_COMPLETION_INDEX", "valueFrom": {"fieldRef": {"fieldPath": index_path}}})
    return env


def _headless_service(metadata: Manifest, name: str, release: str) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": dict(metadata),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": {RUN_LABEL: name, RELEASE_LABEL: release},
            "ports": [{"name": "rendezvous", "port": RENDEZVOUS_PORT, "targetPort": RENDEZVOUS_PORT}],
        },
    }
