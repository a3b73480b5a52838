"""Every object the Kubernetes launcher creates is valid for the API versions we support, and carries
the safety settings a cluster admin expects (DESIGN.md sections 8 and 10)."""

import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
from pydantic import ValidationError

from alignd.config import GpuProfile, PodTemplate, Settings
from alignd.contract import ExitCode, JobSpec
from alignd.jobs.lifecycle import RunKind
from alignd.launchers.base import LaunchRequest
from alignd.launchers.k8s_manifests import (
    CACHE_DIR,
    QUEUE_LABEL,
    RELEASE_LABEL,
    WORK_DIR,
    ManifestError,
    RunManifests,
    build,
    job_name,
    selector,
)
from alignd.models import new_id

KUBERNETES_VERSIONS = ("1.31.0", "1.35.0")
TOKEN = "job-token-value-never-in-the-pod-spec"
SETTINGS = Settings(
    k8s_trainer_image="ghcr.io/alignd/alignd-trainer:0.1.0",
    k8s_trainer_service_account="alignd-trainer",
    k8s_image_pull_secrets=["regcred"],
    k8s_gpu_profiles={
        "h100": GpuProfile(
            node_selector={"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
            tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        )
    },
)
SHAPES = {
    "cpu": {"gpus": 0},
    "one-gpu": {"gpus": 1, "gpu_type": "h100", "memory": "64Gi", "cpu": "8"},
    "eight-gpus": {"gpus": 8, "gpu_type": "h100"},
    "two-nodes": {"gpus": 8, "nodes": 2, "gpu_type": "h100"},
}


ROOT = Path(__file__).resolve().parents[2]
POD_TEMPLATE = PodTemplate(
    annotations={"karpenter.sh/do-not-disrupt": "true"},
    labels={"team": "nlp", "app.kubernetes.io/component": "not-ours-to-change"},
    env=[
        {"name": "NCCL_DEBUG", "value": "WARN"},
        {"name": "HTTPS_PROXY", "value": "http://proxy:3128"},
        {"name": "HOME", "value": "/elsewhere"},
    ],
    volumes=[{"name": "ca-bundle", "configMap": {"name": "corp-ca"}}],
    volumeMounts=[{"name": "ca-bundle", "mountPath": "/etc/ssl/corp", "readOnly": True}],
    runtimeClassName="nvidia",
    priorityClassName="training-low",
    schedulerName="volcano",
    tolerations=[{"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}],
    affinity={
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a", "b"]}]}
                ]
            }
        }
    },
)
CLUSTER = {
    "k8s_pod_template": POD_TEMPLATE,
    "k8s_kueue_queue_name": "ml-default",
    "k8s_kueue_allowed_queues": ["ml-urgent"],
    "k8s_model_cache_claim": "hf-models",
    "k8s_trainer_image_pull_policy": "Always",
}
"""A shared GPU cluster: Kueue, a pod template, a model cache claim."""


def manifests(
    resources: dict[str, Any],
    *,
    max_runtime: int | None = 3600,
    release: str = "alignd",
    **settings_update: Any,
) -> RunManifests:
    spec = JobSpec(
        model="/models/base", training_file="file-abc", resources=resources, max_runtime_seconds=max_runtime
    )
    env = {"ALIGND_JOB_ID": "ftjob-abc", "ALIGND_API_URL": "http://alignd:8000", "ALIGND_JOB_TOKEN": TOKEN}
    settings = SETTINGS.model_copy(update={"k8s_release": release} | settings_update)
    return build(LaunchRequest("ftjob-abc", 3, spec, env, run_id="run-abc"), settings, "ml")


def objects(run: RunManifests) -> list[dict[str, Any]]:
    return [run.job, *run.owned("8d3e0c1a-1111-2222-3333-444455556666")]


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_every_object_passes_strict_validation(shape: dict[str, Any], version: str) -> None:
    for obj in objects(manifests(shape)):
        kubernetes_validate.validate(obj, version, strict=True)
    for obj in objects(manifests(shape, **CLUSTER)):
        kubernetes_validate.validate(obj, version, strict=True)


def test_the_token_lives_only_in_the_secret() -> None:
    run = manifests(SHAPES["one-gpu"])
    assert TOKEN not in repr(run.job)
    assert run.secret["stringData"] == {"job-token": TOKEN}
    owner = run.owned("uid-1")[0]["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["uid"]) == ("Job", run.name, "uid-1")


def test_the_pod_runs_locked_down() -> None:
    pod = manifests(SHAPES["one-gpu"]).job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert pod["automountServiceAccountToken"] is False and pod["restartPolicy"] == "Never"
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 1000
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert pod["serviceAccountName"] == "alignd-trainer" and pod["imagePullSecrets"] == [{"name": "regcred"}]
    shm = next(v for v in pod["volumes"] if v["name"] == "shm")
    assert shm["emptyDir"]["medium"] == "Memory"


def test_gpu_profile_places_the_pod_and_sets_limits() -> None:
    pod = manifests(SHAPES["one-gpu"]).job["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert pod["containers"][0]["resources"] == {
        "limits": {"nvidia.com/gpu": "1", "memory": "64Gi"},
        "requests": {"memory": "64Gi", "cpu": "8", "ephemeral-storage": "20Gi"},
    }


def test_failure_policy_ignores_disruptions_and_fails_fast_on_bad_input() -> None:
    spec = manifests(SHAPES["one-gpu"]).job["spec"]
    ignore, fail = spec["podFailurePolicy"]["rules"]
    assert ignore == {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}
    assert fail["action"] == "FailJob" and ExitCode.BAD_INPUT in fail["onExitCodes"]["values"]
    assert ExitCode.INFRASTRUCTURE not in fail["onExitCodes"]["values"]
    assert spec["activeDeadlineSeconds"] == 3600 and spec["ttlSecondsAfterFinished"] == 3600
    assert "activeDeadlineSeconds" not in manifests(SHAPES["cpu"], max_runtime=None).job["spec"]


def test_labels_and_annotation_name_the_job() -> None:
    job = manifests(SHAPES["cpu"]).job
    labels = job["metadata"]["labels"]
    assert labels["alignd.dev/job-id"] == "ftjob-abc" and labels["alignd.dev/attempt"] == "3"
    assert labels["app.kubernetes.io/managed-by"] == "alignd"
    assert job["metadata"]["annotations"] == {"alignd.dev/job-id": "ftjob-abc"}
    assert job["spec"]["template"]["metadata"]["labels"] == labels


def test_the_release_is_the_instance_and_the_run_is_in_alignds_own_labels() -> None:
    """Helm's convention: `app.kubernetes.io/instance` is the release; the launcher selects on it."""
    run = manifests(SHAPES["two-nodes"], release="team-a")
    labels = run.job["metadata"]["labels"]
    assert labels["app.kubernetes.io/instance"] == labels[RELEASE_LABEL] == "team-a"
    assert labels["alignd.dev/run"] == run.name and labels["app.kubernetes.io/component"] == "trainer"
    assert run.job["spec"]["template"]["metadata"]["labels"] == labels
    own = dict(term.split("=") for term in selector("team-a").split(","))
    assert own.items() <= labels.items()
    assert not own.items() <= manifests(SHAPES["cpu"], release="team-b").job["metadata"]["labels"].items()
    assert run.service is not None and run.service["spec"]["selector"] == {
        "alignd.dev/run": run.name,
        RELEASE_LABEL: "team-a",
    }


@pytest.mark.parametrize(
    "releases",
    [
        ("team-a", "team-b"),
        ("ml.team", "ml-team"),
        ("platform-" + "x" * 44, "platform-" + "y" * 44),
    ],
    ids=["short", "dot", "longest"],
)
def test_two_releases_never_share_a_name_for_the_same_job(releases: tuple[str, str]) -> None:
    """Even for one job id in two databases (a restored backup): Job, Secret and Service names differ."""
    first, second = (manifests(SHAPES["two-nodes"], release=release) for release in releases)
    for one, other in ((first.job, second.job), (first.secret, second.secret)):
        assert one["metadata"]["name"] != other["metadata"]["name"]
    assert first.name != second.name
    real_id = new_id("ftjob-")
    assert len({job_name(real_id, 999, release) for release in releases}) == 2
    assert all(len(job_name(real_id, 999, release)) <= 56 for release in releases)
    for version in KUBERNETES_VERSIONS:
        for obj in objects(first):
            kubernetes_validate.validate(obj, version, strict=True)


def test_the_default_release_names_jobs_as_before() -> None:
    """A server upgraded without Helm (release "alignd") finds its pre-upgrade runs under the same names."""
    assert job_name("ftjob-abc", 3, Settings().k8s_release) == "alignd-ftjob-abc-3"


@pytest.mark.parametrize(
    ("shape", "command"),
    [
        ("cpu", ["python", "-m", "alignd_trainer"]),
        ("eight-gpus", ["torchrun", "--standalone", "--nproc_per_node=8", "-m", "alignd_trainer"]),
    ],
)
def test_one_process_per_gpu(shape: str, command: list[str]) -> None:
    assert manifests(SHAPES[shape]).job["spec"]["template"]["spec"]["containers"][0]["command"] == command


@pytest.mark.parametrize(
    ("shape", "command"),
    [
        ("cpu", ["python", "-m", "alignd_trainer.evaluate"]),
        ("eight-gpus", ["torchrun", "--standalone", "--nproc_per_node=8", "-m", "alignd_trainer.evaluate"]),
    ],
)
def test_an_evaluation_run_starts_the_evaluator_under_the_same_names(shape: str, command: list[str]) -> None:
    spec = JobSpec(model="/models/base", training_file="file-abc", resources=SHAPES[shape])
    env = {"ALIGND_JOB_ID": "evalrun-abc", "ALIGND_API_URL": "http://alignd:8000", "ALIGND_JOB_TOKEN": TOKEN}
    request = LaunchRequest("evalrun-abc", 2, spec, env, run_id="run-e", kind=RunKind.evaluate)
    run = build(request, SETTINGS, "ml")
    assert run.job["spec"]["template"]["spec"]["containers"][0]["command"] == command
    assert run.name == job_name("evalrun-abc", 2, SETTINGS.k8s_release)


def test_multi_node_is_an_indexed_job_with_rendezvous_at_index_0() -> None:
    run = manifests(SHAPES["two-nodes"])
    spec = run.job["spec"]
    assert (spec["completionMode"], spec["completions"], spec["parallelism"]) == ("Indexed", 2, 2)
    assert spec["template"]["spec"]["subdomain"] == run.name
    assert run.service is not None and run.service["spec"]["clusterIP"] == "None"
    assert run.service["metadata"]["name"] == run.name
    command = spec["template"]["spec"]["containers"][0]["command"]
    assert f"--master_addr={run.name}-0.{run.name}" in command and "--nnodes=2" in command
    assert "--node_rank=$(JOB_COMPLETION_INDEX)" in command


def test_an_unknown_gpu_type_is_refused_with_the_known_ones() -> None:
    with pytest.raises(ManifestError, match=r"'a100'.*GPU types: h100"):
        manifests({"gpus": 1, "gpu_type": "a100"})


@pytest.mark.parametrize("release", ["Team_A", "-team", "x" * 54, ""])
def test_a_release_name_a_label_cannot_carry_is_refused_at_start(release: str) -> None:
    with pytest.raises(ValidationError, match="k8s_release"):
        Settings(k8s_release=release)


def pod_of(run: RunManifests) -> dict[str, Any]:
    pod: dict[str, Any] = run.job["spec"]["template"]["spec"]
    return pod


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_no_trainer_pod_is_best_effort(shape: dict[str, Any]) -> None:
    """Requests for CPU, memory and node disk on every pod: first to be evicted is never a training run."""
    requests = pod_of(manifests(shape))["containers"][0]["resources"]["requests"]
    assert {"cpu", "memory", "ephemeral-storage"} <= set(requests)


def test_a_gpu_profile_sets_its_requests_and_the_job_wins() -> None:
    profile = GpuProfile(requests={"cpu": "24", "memory": "200Gi", "ephemeral-storage": "400Gi"})
    update = {"k8s_gpu_profiles": {"h100": profile}}
    profiled = pod_of(manifests({"gpus": 8, "gpu_type": "h100"}, **update))["containers"][0]["resources"]
    assert profiled["requests"] == {"cpu": "24", "memory": "200Gi", "ephemeral-storage": "400Gi"}
    own = pod_of(manifests({"gpus": 8, "gpu_type": "h100", "cpu": "8", "memory": "64Gi"}, **update))
    assert own["containers"][0]["resources"]["requests"] == {
        "cpu": "8",
        "memory": "64Gi",
        "ephemeral-storage": "400Gi",
    }


def test_gpu_pods_without_a_gpu_type_tolerate_the_gpu_taint() -> None:
    toleration = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    assert pod_of(manifests({"gpus": 2}))["tolerations"] == [toleration]
    assert "tolerations" not in pod_of(manifests({"gpus": 0}))


def test_the_pods_disks_are_bounded() -> None:
    volumes = {v["name"]: v for v in pod_of(manifests(SHAPES["one-gpu"]))["volumes"]}
    assert {name: v["emptyDir"]["sizeLimit"] for name, v in volumes.items()} == {
        "shm": "16Gi",
        "work": "50Gi",
        "tmp": "10Gi",
        "cache": "200Gi",
    }


def test_the_pod_template_reaches_every_trainer_pod_and_alignd_keeps_its_own() -> None:
    run = manifests(SHAPES["two-nodes"], k8s_pod_template=POD_TEMPLATE)
    template, pod = run.job["spec"]["template"], pod_of(run)
    container = pod["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}

    assert template["metadata"]["annotations"]["karpenter.sh/do-not-disrupt"] == "true"
    assert template["metadata"]["annotations"]["alignd.dev/job-id"] == "ftjob-abc"
    assert template["metadata"]["labels"]["team"] == "nlp"
    assert template["metadata"]["labels"]["app.kubernetes.io/component"] == "trainer", "selectors stay"
    assert (env["NCCL_DEBUG"], env["HTTPS_PROXY"]) == ("WARN", "http://proxy:3128")
    assert env["HOME"] == WORK_DIR and [e["name"] for e in container["env"]].count("HOME") == 1
    assert {"name": "ca-bundle", "configMap": {"name": "corp-ca"}} in pod["volumes"]
    assert {"name": "ca-bundle", "mountPath": "/etc/ssl/corp", "readOnly": True} in container["volumeMounts"]
    assert (pod["runtimeClassName"], pod["priorityClassName"], pod["schedulerName"]) == (
        "nvidia",
        "training-low",
        "volcano",
    )
    assert pod["affinity"] == POD_TEMPLATE.affinity
    assert pod["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
        {"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"},
    ]
    assert (
        pod["securityContext"]["runAsNonRoot"] is True
        and container["securityContext"]["readOnlyRootFilesystem"]
    )


@pytest.mark.parametrize(
    ("template", "message"),
    [
        (
            {"env": [{"name": "ALIGND_JOB_TOKEN", "value": "x"}]},
            "ALIGND_\\* variables are the trainer's contract",
        ),
        ({"volumes": [{"name": "work", "emptyDir": {}}]}, "other than cache, shm, tmp, work"),
        ({"hostNetwork": True}, "hostNetwork"),
    ],
    ids=["alignd-env", "own-volume", "unknown-field"],
)
def test_a_pod_template_cannot_take_what_alignd_needs(template: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Settings.model_validate({"k8s_pod_template": template})


def test_kueue_holds_the_job_in_its_queue_until_admitted() -> None:
    plain = manifests(SHAPES["two-nodes"])
    assert "suspend" not in plain.job["spec"] and QUEUE_LABEL not in plain.job["metadata"]["labels"]

    run = manifests(SHAPES["two-nodes"], **CLUSTER)
    assert run.job["spec"]["suspend"] is True
    assert run.job["metadata"]["labels"][QUEUE_LABEL] == "ml-default"
    # One Indexed Job is one Kueue Workload: every node's pod is admitted together, or none.
    assert run.job["spec"]["parallelism"] == run.job["spec"]["completions"] == 2
    urgent = manifests({"gpus": 8, "gpu_type": "h100", "queue": "ml-urgent"}, **CLUSTER)
    assert urgent.job["metadata"]["labels"][QUEUE_LABEL] == "ml-urgent"


def test_a_queue_the_admin_did_not_allow_is_refused_with_the_allowed_ones() -> None:
    with pytest.raises(ManifestError, match=r"'ml-vip' is not a queue.*allowed: ml-default, ml-urgent"):
        manifests({"gpus": 1, "queue": "ml-vip"}, **CLUSTER)
    with pytest.raises(ManifestError, match="ALIGND_K8S_KUEUE_ALLOWED_QUEUES"):
        manifests({"gpus": 1, "queue": "ml-urgent"})


def test_the_model_cache_claim_is_the_trainers_cache_root() -> None:
    pod = pod_of(manifests(SHAPES["one-gpu"], **CLUSTER))
    container = pod["containers"][0]
    cache = next(v for v in pod["volumes"] if v["name"] == "cache")
    mount = next(m for m in container["volumeMounts"] if m["name"] == "cache")
    env = {e["name"]: e.get("value") for e in container["env"]}

    assert cache["persistentVolumeClaim"] == {"claimName": "hf-models", "readOnly": False}
    assert mount["mountPath"] == env["XDG_CACHE_HOME"] == CACHE_DIR
    assert env["HF_HOME"].startswith(CACHE_DIR + "/")
    assert container["imagePullPolicy"] == "Always"
    read_only = pod_of(manifests(SHAPES["one-gpu"], **CLUSTER, k8s_model_cache_read_only=True))
    assert next(v for v in read_only["volumes"] if v["name"] == "cache")["persistentVolumeClaim"]["readOnly"]


def test_home_and_caches_agree_with_the_trainer_image() -> None:
    """The image works the same run by hand (`docker run`) and as a pod: same HOME, caches, workdir."""
    dockerfile = (ROOT / "trainer_image" / "Dockerfile").read_text()
    image_env = dict(re.findall(r"^(?:ENV)?\s+(HOME|XDG_CACHE_HOME|HF_HOME)=(\S+)", dockerfile, re.M))
    container = pod_of(manifests(SHAPES["one-gpu"]))["containers"][0]
    pod_env = {e["name"]: e.get("value") for e in container["env"]}

    assert image_env == {name: pod_env[name] for name in ("HOME", "XDG_CACHE_HOME", "HF_HOME")}
    assert re.findall(r"^WORKDIR (\S+)$", dockerfile, re.M)[-1] == container["workingDir"]
