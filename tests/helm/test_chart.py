"""The Helm chart (helm/alignd), rendered by the real helm v4 binary and checked by what a cluster would
check: `helm lint --strict`, the values schema, `kubernetes-validate --strict` for 1.31 and 1.35, and
the places where the chart must agree with the code (settings names, images, probes, RBAC)."""

import base64
import inspect
import re
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

import alignd
from alignd.api import health
from alignd.cli import serve
from alignd.config import GpuProfile, Settings
from alignd.contract import JobSpec
from alignd.launchers.base import LaunchRequest
from alignd.launchers.k8s_manifests import CACHE_DIR, QUEUE_LABEL, build, selector
from alignd.launchers.registry import launcher_class
from alignd.runs import trainer_env
from alignd.secretbox import generate_key
from tests.helm.chart import CHART, NAMESPACE, RELEASE, api_container, only, render, run, template
from tests.k8s.helpers import LAUNCHER_RULES

ROOT = Path(__file__).resolve().parents[2]
PRODUCTION = CHART / "examples" / "production.yaml"
QUICKSTART = CHART / "examples" / "quickstart.yaml"
GPU_CLUSTER = CHART / "examples" / "gpu-cluster.yaml"
KUBERNETES_VERSIONS = ("1.31.0", "1.35.0")
SERVICE_MONITOR_API = "monitoring.coreos.com/v1/ServiceMonitor"


VALUE_SETS = {
    "default": [],
    "production": ["-f", str(PRODUCTION)],
    "quickstart": ["-f", str(QUICKSTART)],
    "gpu-cluster": ["-f", str(GPU_CLUSTER)],
}


def test_the_binary_is_helm_v4(helm: list[str]) -> None:
    result = run([*helm, "version", "--short"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("v4."), result.stdout


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_lint_strict(helm: list[str], values: list[str]) -> None:
    result = run([*helm, "lint", "--strict", str(CHART), *values])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


@pytest.mark.parametrize("with_crd", [False, True], ids=["plain", "prometheus-operator"])
@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_rendered_manifests_pass_kubernetes_validate(
    helm: list[str], values: list[str], with_crd: bool, tmp_path: Path
) -> None:
    extra = ["--api-versions", SERVICE_MONITOR_API] if with_crd else []
    result = template(helm, *values, *extra)
    assert result.returncode == 0, result.stderr
    rendered = tmp_path / "rendered.yaml"
    rendered.write_text(result.stdout)
    manifests = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    # Every object has a schema in kubernetes-validate except the Prometheus Operator's CRD.
    core = {
        f"{m['kind'].lower()}/{m['metadata']['name']}" for m in manifests if m["kind"] != "ServiceMonitor"
    }
    assert {"deployment/alignd", "role/alignd", "configmap/alignd", "service/alignd"} <= core

    versions = [arg for version in KUBERNETES_VERSIONS for arg in ("-k", version)]
    check = run([sys.executable, "-m", "kubernetes_validate", "--strict", *versions, str(rendered)])

    assert check.returncode == 0, check.stdout + check.stderr
    assert "ERROR" not in check.stdout
    for version in KUBERNETES_VERSIONS:
        minor = version.rsplit(".", 1)[0]
        passed = set(
            re.findall(rf"passed for resource (\S+) against version {re.escape(minor)}\n", check.stdout)
        )
        assert passed == core, f"not validated against {minor}: {core - passed}"


def test_kubernetes_validate_strict_rejects_an_unknown_field(helm: list[str], tmp_path: Path) -> None:
    """The validation above would catch a misspelt field: the same Deployment with one fails."""
    deployment = only(render(helm), "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessprobe"] = {"periodSeconds": 10}
    rendered = tmp_path / "bad.yaml"
    rendered.write_text(yaml.safe_dump(deployment))

    check = run([sys.executable, "-m", "kubernetes_validate", "--strict", "-k", "1.35.0", str(rendered)])

    assert check.returncode != 0
    assert "livenessprobe" in check.stdout


def test_service_monitor_only_where_the_crd_is_served(helm: list[str]) -> None:
    assert not [m for m in render(helm) if m["kind"] == "ServiceMonitor"]
    assert not [
        m
        for m in render(
            helm, "--api-versions", SERVICE_MONITOR_API, "--set", "metrics.serviceMonitor.enabled=false"
        )
        if m["kind"] == "ServiceMonitor"
    ]

    manifests = render(helm, "--api-versions", SERVICE_MONITOR_API)
    monitor, service = only(manifests, "ServiceMonitor"), only(manifests, "Service")

    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"]["matchNames"] == [NAMESPACE]
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics"
    assert endpoint["port"] in {port["name"] for port in service["spec"]["ports"]}
    assert "/metrics" in {route.path for route in health.router.routes}  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "store=ftp"], "at '/store': value must be one of 's3', 'local'"),
        (["--set-json", 'replicaCount="two"'], "at '/replicaCount': got string, want integer"),
        (["--set", "persistence.mode=sqlite"], "at '/persistence/mode': value must be one of"),
        (["--set", "replicas=2"], "additional properties 'replicas' not allowed"),
        (["--set", "s3.endpoint=https://s3.example.com"], "at '/s3/endpoint'"),
        (["--set", "trainer.gpuProfiles.h100.nodeSelector=x"], "at '/trainer/gpuProfiles/h100/nodeSelector'"),
        (
            ["--set", "trainer.gpuProfiles.h100.tolerations[0].tolerationSeconds=60"],
            "additional properties 'tolerationSeconds' not allowed",
        ),
    ],
    ids=["store", "replicas-type", "persistence-mode", "unknown-key", "s3-scheme", "gpu-profile", "tolerate"],
)
def test_schema_rejects_bad_values(helm: list[str], args: list[str], message: str) -> None:
    result = template(helm, *args)

    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr
    assert message in result.stderr


def test_embedded_mode_refuses_more_than_one_replica(helm: list[str]) -> None:
    result = template(helm, "-f", str(QUICKSTART), "--set", "replicaCount=2")

    assert result.returncode != 0
    assert "persistence.mode=embedded" in result.stderr
    assert "runs exactly one replica, but replicaCount=2" in result.stderr


def test_quickstart_keeps_sqlite_and_the_store_on_one_claim(helm: list[str]) -> None:
    manifests = render(helm, "-f", str(QUICKSTART))
    deployment, claim = only(manifests, "Deployment"), only(manifests, "PersistentVolumeClaim")
    container, pod = api_container(manifests), deployment["spec"]["template"]["spec"]
    config = only(manifests, "ConfigMap")["data"]

    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert claim["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
    data_volume = next(v for v in pod["volumes"] if v["name"] == "data")
    assert data_volume["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["data"] == config["ALIGND_DATA_DIR"]
    assert config["ALIGND_STORE"] == "local"
    assert "ALIGND_DATABASE_URL" not in {e["name"] for e in container["env"]}  # SQLite in the data dir
    assert not [m for m in manifests if m["kind"] == "PodDisruptionBudget"]


def test_production_mode_keeps_nothing_in_the_pod(helm: list[str]) -> None:
    manifests = render(helm, "-f", str(PRODUCTION))
    container = api_container(manifests)
    pod = only(manifests, "Deployment")["spec"]["template"]["spec"]

    assert not [m for m in manifests if m["kind"] in ("PersistentVolumeClaim", "Secret")]
    assert only(manifests, "Deployment")["spec"]["replicas"] == 3
    assert only(manifests, "PodDisruptionBudget")["spec"]["minAvailable"] == 1
    volumes = {v["name"]: set(v) - {"name"} for v in pod["volumes"]}
    assert volumes == {"tmp": {"emptyDir"}, "data": {"emptyDir"}}
    secret_refs = {
        e["name"]: e["valueFrom"]["secretKeyRef"]
        for e in container["env"]
        if "secretKeyRef" in e.get("valueFrom", {})
    }
    names = ("DATABASE_URL", "S3_ACCESS_KEY", "S3_SECRET_KEY", "ADMIN_KEY", "SIGNING_KEY", "ENCRYPTION_KEY")
    assert {name: ref["name"] for name, ref in secret_refs.items()} == {
        f"ALIGND_{name}": "alignd-credentials" for name in names
    }
    assert not secret_refs["ALIGND_DATABASE_URL"].get("optional", False)
    assert secret_refs["ALIGND_ADMIN_KEY"]["optional"] is True
    # No credential is written into the pod spec or the ConfigMap.
    assert not [e for e in container["env"] if "value" in e and "KEY" in e["name"]]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "store=local"], "store=local keeps objects on the embedded volume"),
        (["--set", "secret.create=true,existingSecret=mine"], "not both"),
        (["--set", "secret.create=true"], "needs secret.databaseUrl"),
        (
            ["--set", "secret.create=true,secret.databaseUrl=postgresql+psycopg://db/alignd"],
            "needs secret.s3AccessKey and secret.s3SecretKey",
        ),
    ],
    ids=["local-store-external", "two-secrets", "no-database-url", "no-s3-keys"],
)
def test_inconsistent_values_fail_with_what_to_change(helm: list[str], args: list[str], message: str) -> None:
    result = template(helm, *args)

    assert result.returncode != 0
    assert message in result.stderr


def test_chart_made_secret_generates_keys_and_keeps_given_ones(helm: list[str]) -> None:
    manifests = render(
        helm, "-f", str(QUICKSTART), "--set", "store=s3,secret.s3AccessKey=AK,secret.s3SecretKey=SK"
    )
    secret = only(manifests, "Secret")
    data = {key: base64.b64decode(value).decode() for key, value in secret["data"].items()}

    assert set(data) == {"s3-access-key", "s3-secret-key", "admin-key", "signing-key", "encryption-key"}
    assert (data["s3-access-key"], data["s3-secret-key"]) == ("AK", "SK")
    assert re.fullmatch(r"sk-alignd-admin-[A-Za-z0-9]{40}", data["admin-key"])
    assert len(data["signing-key"]) == 64
    Settings(encryption_key=data["encryption-key"])  # a key the server accepts
    refs = {
        e["valueFrom"]["secretKeyRef"]["name"] for e in api_container(manifests)["env"] if "valueFrom" in e
    }
    assert refs == {secret["metadata"]["name"]}


def test_role_grants_exactly_what_the_launcher_uses(helm: list[str]) -> None:
    manifests = render(helm)
    role = only(manifests, "Role")
    granted = {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }

    assert granted == LAUNCHER_RULES
    # Nothing beyond groups, resources and verbs: no resourceNames, no nonResourceURLs.
    assert all(set(rule) == {"apiGroups", "resources", "verbs"} for rule in role["rules"])
    assert not [m for m in manifests if m["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    binding = only(manifests, "RoleBinding")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "alignd"}
    api_account = only(manifests, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": api_account, "namespace": NAMESPACE}]


def test_trainer_service_account_has_no_rbac_and_no_token(helm: list[str]) -> None:
    manifests = render(helm, "-f", str(PRODUCTION))
    accounts = {m["metadata"]["name"]: m for m in manifests if m["kind"] == "ServiceAccount"}
    trainer = only(manifests, "ConfigMap")["data"]["ALIGND_K8S_TRAINER_SERVICE_ACCOUNT"]
    api = only(manifests, "Deployment")["spec"]["template"]["spec"]

    assert set(accounts) == {api["serviceAccountName"], trainer}
    assert trainer != api["serviceAccountName"]
    assert accounts[trainer]["automountServiceAccountToken"] is False
    bound = {
        subject["name"]
        for m in manifests
        if m["kind"] in ("RoleBinding", "ClusterRoleBinding")
        for subject in m["subjects"]
    }
    assert trainer not in bound
    # Only the API pod asks for a token (it drives the Kubernetes API); its account does not hand one out.
    assert api["automountServiceAccountToken"] is True
    assert accounts[api["serviceAccountName"]]["automountServiceAccountToken"] is False


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_every_rendered_setting_is_a_settings_field_and_parses(
    helm: list[str], values: list[str], clean_alignd_env: pytest.MonkeyPatch
) -> None:
    """Catches drift: a renamed setting, a JSON value Settings can't read, a number in e-notation."""
    manifests = render(helm, *values)
    config = only(manifests, "ConfigMap")["data"]
    env_names = [e["name"] for e in api_container(manifests)["env"]]
    fields = {f"ALIGND_{name.upper()}" for name in Settings.model_fields}

    assert all(name.startswith("ALIGND_") for name in [*config, *env_names])
    assert set(config) - fields == set()
    assert set(env_names) - fields == set()
    assert not set(config) & set(env_names)

    for name, value in config.items():
        clean_alignd_env.setenv(name, value)
    for name in env_names:
        clean_alignd_env.setenv(name, generate_key() if name == "ALIGND_ENCRYPTION_KEY" else "placeholder")
    settings = Settings()

    assert settings.launcher == "kubernetes"
    assert launcher_class(settings.launcher).name == settings.launcher  # a registered backend
    assert settings.k8s_namespace == NAMESPACE
    assert settings.run_controller and settings.leader_election
    assert str(settings.data_dir) == "/var/lib/alignd"
    assert settings.max_upload_bytes >= 10 * 1024**3
    assert settings.k8s_trainer_service_account


def test_settings_from_the_production_example(helm: list[str], clean_alignd_env: pytest.MonkeyPatch) -> None:
    production = yaml.safe_load(PRODUCTION.read_text())
    for name, value in only(render(helm, "-f", str(PRODUCTION)), "ConfigMap")["data"].items():
        clean_alignd_env.setenv(name, value)
    settings = Settings()

    assert settings.k8s_gpu_profiles == {
        "a100": GpuProfile(
            node_selector={"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"},
            tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        ),
        "h100": GpuProfile(
            node_selector={"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3", "node-pool": "h100-spot"},
            tolerations=production["trainer"]["gpuProfiles"]["h100"]["tolerations"],
            resource_name="nvidia.com/gpu",
        ),
    }
    assert settings.k8s_image_pull_secrets == ["registry-example-com"]
    assert settings.k8s_trainer_image == "registry.example.com/ml/alignd-trainer:0.1.0"
    assert settings.k8s_labels == {"team": "ml-platform"}
    assert settings.k8s_pending_deadline_seconds == 1800
    assert settings.max_upload_bytes == 50 * 1024**3
    assert settings.default_quota_stored_bytes == 1024**4
    assert (settings.store, settings.s3_endpoint, settings.s3_bucket) == (
        "s3",
        "s3.us-east-1.amazonaws.com",
        "acme-alignd",
    )
    assert (settings.s3_region, settings.s3_secure) == ("us-east-1", True)
    # No Ingress URL is used for trainers unless asked: they reach the API inside the cluster.
    assert settings.public_url == f"http://alignd.{NAMESPACE}.svc:8000"


def test_public_url_can_be_overridden(helm: list[str]) -> None:
    config = only(render(helm, "--set", "publicUrl=https://alignd.example.com"), "ConfigMap")["data"]

    assert config["ALIGND_PUBLIC_URL"] == "https://alignd.example.com"


def test_images_match_the_dockerfiles_and_the_settings(helm: list[str]) -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    manifests = render(helm)
    config = only(manifests, "ConfigMap")["data"]

    assert chart["apiVersion"] == "v2"
    assert chart["appVersion"] == version == alignd.__version__
    assert api_container(manifests)["image"] == f"ghcr.io/alignd/alignd:{version}"
    assert config["ALIGND_K8S_TRAINER_IMAGE"] == Settings.model_fields["k8s_trainer_image"].default
    assert Settings.model_fields["k8s_trainer_image"].default == f"ghcr.io/alignd/alignd-trainer:{version}"


def test_api_pod_matches_the_api_image(helm: list[str]) -> None:
    """Port, user, command and data directory agree between the chart and the root Dockerfile."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    manifests = render(helm)
    container = api_container(manifests)
    pod = only(manifests, "Deployment")["spec"]["template"]["spec"]
    [port] = container["ports"]

    assert re.search(r"^FROM python:3\.11-slim", dockerfile, re.M)
    assert re.search(r"pip install -r requirements/server-image\.lock$", dockerfile, re.M)
    assert re.search(r"pip install --no-deps '\.\[server(,integrations)?\]'", dockerfile)
    assert "torch" not in dockerfile.lower().replace("pytorch", "")
    [user] = re.findall(r"^USER (\d+):(\d+)$", dockerfile, re.M)
    context = pod["securityContext"]
    assert (context["runAsUser"], context["runAsGroup"]) == tuple(map(int, user))
    assert re.findall(r"^EXPOSE (\d+)$", dockerfile, re.M) == [str(port["containerPort"])]
    [cmd] = re.findall(r"^CMD (\[.*\])$", dockerfile, re.M)
    assert yaml.safe_load(cmd) == container["args"] == ["serve", "--host", "0.0.0.0", "--port", "8000"]
    assert re.search(r'ENTRYPOINT \["alignd"\]', dockerfile)
    flags = {arg.removeprefix("--") for arg in container["args"] if arg.startswith("--")}
    assert flags <= set(inspect.signature(serve).parameters), "the chart passes a flag serve does not take"
    [data_dir] = re.findall(r"ALIGND_DATA_DIR=(\S+)", dockerfile)
    assert only(manifests, "ConfigMap")["data"]["ALIGND_DATA_DIR"] == data_dir


def test_api_pod_is_locked_down_and_probed(helm: list[str]) -> None:
    manifests = render(helm)
    container = api_container(manifests)
    pod = only(manifests, "Deployment")["spec"]["template"]["spec"]
    routes = {route.path for route in health.router.routes}  # type: ignore[attr-defined]

    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    # A Service named "alignd" would otherwise inject ALIGND_PORT=tcp://... and friends.
    assert pod["enableServiceLinks"] is False
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert {"/healthz", "/readyz"} <= routes
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]


def network_policies(manifests: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {m["metadata"]["name"]: m["spec"] for m in manifests if m["kind"] == "NetworkPolicy"}


def test_network_policy_opens_only_the_api_port(helm: list[str]) -> None:
    default = network_policies(render(helm))["alignd"]
    assert default["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "api"
    assert default["policyTypes"] == ["Ingress"]
    assert default["ingress"] == [{"ports": [{"port": "http", "protocol": "TCP"}]}]

    locked = network_policies(render(helm, "-f", str(PRODUCTION)))["alignd"]
    production = yaml.safe_load(PRODUCTION.read_text())["networkPolicy"]
    assert locked["policyTypes"] == ["Ingress", "Egress"]
    [rule] = locked["ingress"]
    assert rule["from"] == [{"podSelector": {}}, *production["extraIngressFrom"]]
    assert {"ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]} in locked["egress"]
    assert locked["egress"][-len(production["extraEgress"]) :] == production["extraEgress"]

    assert not network_policies(render(helm, "--set", "networkPolicy.enabled=false"))


def test_trainer_pods_accept_connections_only_from_trainer_pods(helm: list[str]) -> None:
    """The selector is the launcher's labels on this release's trainer pods (app.kubernetes.io/managed-by=
    alignd, app.kubernetes.io/component=trainer, alignd.dev/release=<release>); the API's own pods are
    labelled managed-by=Helm, component=api."""
    manifests = render(helm)
    trainers = network_policies(manifests)["alignd-trainers"]
    labels = {
        "app.kubernetes.io/managed-by": "alignd",
        "app.kubernetes.io/component": "trainer",
        "alignd.dev/release": RELEASE,
    }
    api_pod_labels = only(manifests, "Deployment")["spec"]["template"]["metadata"]["labels"]

    assert trainers["podSelector"] == {"matchLabels": labels}
    assert trainers["policyTypes"] == ["Ingress"]
    assert trainers["ingress"] == [{"from": [{"podSelector": {"matchLabels": labels}}]}]
    assert not labels.items() <= api_pod_labels.items()
    assert "alignd-trainers" not in network_policies(
        render(helm, "--set", "networkPolicy.isolateTrainers=false")
    )


def test_the_release_name_scopes_the_trainer_jobs(
    helm: list[str], clean_alignd_env: pytest.MonkeyPatch
) -> None:
    """Two releases in one namespace: each server is told its release name, so it names, labels, lists
    and reaps only its own trainer Jobs, and each network policy selects only its own trainers."""
    for release in ("team-a", "team-b"):
        result = run([*helm, "template", release, str(CHART), "--namespace", NAMESPACE])
        assert result.returncode == 0, result.stderr
        manifests = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
        config = only(manifests, "ConfigMap")["data"]
        assert config["ALIGND_K8S_RELEASE"] == release
        clean_alignd_env.setenv("ALIGND_K8S_RELEASE", config["ALIGND_K8S_RELEASE"])
        trainer_labels = selector(Settings().k8s_release)
        policy = network_policies(manifests)[f"{release}-alignd-trainers"]
        assert policy["podSelector"]["matchLabels"] == dict(
            term.split("=") for term in trainer_labels.split(",")
        )


def test_ingress_routes_to_the_api_service(helm: list[str]) -> None:
    manifests = render(helm, "-f", str(PRODUCTION))
    ingress, service = only(manifests, "Ingress"), only(manifests, "Service")
    [rule] = ingress["spec"]["rules"]
    [path] = rule["http"]["paths"]

    assert rule["host"] == "alignd.example.com"
    assert ingress["spec"]["tls"] == [{"secretName": "alignd-tls", "hosts": ["alignd.example.com"]}]
    assert path["backend"]["service"]["name"] == service["metadata"]["name"]
    assert path["backend"]["service"]["port"]["name"] in {p["name"] for p in service["spec"]["ports"]}
    assert not [m for m in render(helm) if m["kind"] == "Ingress"]


def test_notes_tell_how_to_create_the_secret(helm: list[str]) -> None:
    result = run([*helm, "install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--dry-run=client"])

    assert result.returncode == 0, result.stderr
    notes = result.stdout.split("NOTES:", 1)[1]
    assert f"kubectl -n {NAMESPACE} create secret generic alignd" in notes
    for key in ("database-url", "s3-access-key", "s3-secret-key", "admin-key"):
        assert f"--from-literal={key}=" in notes


def settings_from(manifests: list[dict[str, Any]], env: pytest.MonkeyPatch) -> Settings:
    """What the API server reads from the rendered ConfigMap (secrets as placeholders)."""
    for name, value in only(manifests, "ConfigMap")["data"].items():
        env.setenv(name, value)
    return Settings()


def test_gpu_cluster_trainer_jobs_pass_strict_validation_and_carry_the_cluster_settings(
    helm: list[str], clean_alignd_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The trainer Job the launcher builds from this chart's settings (Kueue, pod template, cache claim,
    profile requests) is what a 1.31 and a 1.35 API server accept."""
    values = yaml.safe_load(GPU_CLUSTER.read_text())["trainer"]
    manifests = render(helm, "-f", str(GPU_CLUSTER), "--set", "trainer.attention=sdpa")
    settings = settings_from(manifests, clean_alignd_env)
    spec = JobSpec(model="s3://b/m", training_file="f", resources={"gpus": 8, "nodes": 2, "gpu_type": "h100"})
    env = trainer_env(settings, "ftjob-1", "t")
    trainer = build(LaunchRequest("ftjob-1", 1, spec, env, run_id="run-1"), settings, NAMESPACE)
    pod = trainer.job["spec"]["template"]["spec"]
    container = pod["containers"][0]

    assert (
        trainer.job["spec"]["suspend"] is True
        and trainer.job["metadata"]["labels"][QUEUE_LABEL] == "ml-default"
    )
    assert settings.k8s_kueue_allowed_queues == ["ml-urgent"]
    assert container["image"] == f"{values['image']['repository']}@{values['image']['digest']}"
    assert container["imagePullPolicy"] == "IfNotPresent"
    assert container["resources"]["requests"] == {
        "cpu": "90",
        "memory": "900Gi",
        "ephemeral-storage": "500Gi",
    }
    assert (pod["runtimeClassName"], pod["priorityClassName"]) == ("nvidia", "ml-training")
    assert pod["affinity"] == values["podTemplate"]["affinity"]
    assert trainer.job["spec"]["template"]["metadata"]["annotations"]["karpenter.sh/do-not-disrupt"] == "true"
    assert {"name": "NCCL_SOCKET_IFNAME", "value": "eth0"} in container["env"]
    assert {"name": "ALIGND_TRAINER_ATTENTION", "value": "sdpa"} in container["env"]
    assert values["podTemplate"]["volumeMounts"][0] in container["volumeMounts"]
    cache = next(v for v in pod["volumes"] if v["name"] == "cache")
    assert cache["persistentVolumeClaim"]["claimName"] == "hf-model-cache"
    assert {"name": "cache", "mountPath": CACHE_DIR, "readOnly": False} in container["volumeMounts"]

    rendered = tmp_path / "trainer.yaml"
    rendered.write_text(
        yaml.safe_dump_all([trainer.job, *trainer.owned("8d3e0c1a-1111-2222-3333-444455556666")])
    )
    versions = [arg for version in KUBERNETES_VERSIONS for arg in ("-k", version)]
    check = run([sys.executable, "-m", "kubernetes_validate", "--strict", *versions, str(rendered)])
    assert check.returncode == 0, check.stdout + check.stderr


def test_workload_identity_replaces_the_s3_keys(
    helm: list[str], clean_alignd_env: pytest.MonkeyPatch
) -> None:
    manifests = render(helm, "-f", str(GPU_CLUSTER))
    container = api_container(manifests)
    account = only(render(helm, "-f", str(GPU_CLUSTER)), "Deployment")["spec"]["template"]["spec"]
    accounts = {m["metadata"]["name"]: m for m in manifests if m["kind"] == "ServiceAccount"}

    assert not [e for e in container["env"] if e["name"].startswith("ALIGND_S3_")]
    assert only(manifests, "Job")["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    annotations = accounts[account["serviceAccountName"]]["metadata"]["annotations"]
    assert annotations == {"eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/alignd-s3"}
    settings = settings_from(manifests, clean_alignd_env)
    assert settings.store == "s3" and settings.s3_access_key is None and settings.s3_secret_key is None
    # A chart-made Secret needs no S3 keys either.
    made = render(
        helm,
        "--set",
        "secret.create=true,secret.databaseUrl=postgresql+psycopg://db/alignd,s3.auth=workloadIdentity",
    )
    assert "s3-access-key" not in only(made, "Secret")["data"]


def test_existing_secret_key_names_reach_every_reference(helm: list[str]) -> None:
    names = {
        "databaseUrl": "uri",
        "s3AccessKey": "AWS_ACCESS_KEY_ID",
        "s3SecretKey": "AWS_SECRET_ACCESS_KEY",
        "encryptionKey": "fernet",
    }
    args = [f"existingSecretKeys.{key}={value}" for key, value in names.items()]
    manifests = render(helm, "--set", ",".join(["existingSecret=creds", *args]))
    refs = {
        e["name"]: e["valueFrom"]["secretKeyRef"]["key"]
        for e in api_container(manifests)["env"]
        if "valueFrom" in e
    }
    hook = only(manifests, "Job")["spec"]["template"]["spec"]["containers"][0]

    assert refs == {
        "ALIGND_DATABASE_URL": "uri",
        "ALIGND_S3_ACCESS_KEY": "AWS_ACCESS_KEY_ID",
        "ALIGND_S3_SECRET_KEY": "AWS_SECRET_ACCESS_KEY",
        "ALIGND_ADMIN_KEY": "admin-key",
        "ALIGND_SIGNING_KEY": "signing-key",
        "ALIGND_ENCRYPTION_KEY": "fernet",
    }
    assert hook["env"][1]["valueFrom"]["secretKeyRef"] == {"name": "creds", "key": "uri"}


def test_migrations_run_in_a_hook_job_with_the_new_image_before_the_pods(helm: list[str]) -> None:
    manifests = render(helm, "-f", str(PRODUCTION))
    hook = only(manifests, "Job")
    container = hook["spec"]["template"]["spec"]["containers"][0]

    assert hook["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert container["image"] == api_container(manifests)["image"]
    assert container["args"] == ["db", "upgrade"]
    assert {"name", "valueFrom"} == set(container["env"][1])
    assert container["env"][1]["valueFrom"]["secretKeyRef"]["name"] == "alignd-credentials"
    assert "initContainers" not in only(manifests, "Deployment")["spec"]["template"]["spec"]
    # Hook-less tools (and modes where a hook cannot reach the database) migrate in an init container.
    for args in (["-f", str(PRODUCTION), "--set", "migrations.mode=initContainer"], ["-f", str(QUICKSTART)]):
        rendered = render(helm, *args)
        assert not [m for m in rendered if m["kind"] == "Job"]
        [init] = only(rendered, "Deployment")["spec"]["template"]["spec"]["initContainers"]
        assert init["args"] == ["db", "upgrade"] and init["image"] == api_container(rendered)["image"]
    disabled = render(helm, "-f", str(PRODUCTION), "--set", "migrations.enabled=false")
    assert not [m for m in disabled if m["kind"] == "Job"]
    assert "initContainers" not in only(disabled, "Deployment")["spec"]["template"]["spec"]


def test_image_digests_pull_policy_and_probe_timings_come_from_values(helm: list[str]) -> None:
    digest = "sha256:" + "a" * 64
    manifests = render(
        helm,
        "--set",
        f"image.digest={digest},trainer.image.digest={digest},trainer.image.pullPolicy=Always",
        "--set",
        "probes.liveness.periodSeconds=30,probes.startup.failureThreshold=120",
    )
    container = api_container(manifests)
    config = only(manifests, "ConfigMap")["data"]

    assert container["image"] == f"ghcr.io/alignd/alignd@{digest}"
    assert config["ALIGND_K8S_TRAINER_IMAGE"] == f"ghcr.io/alignd/alignd-trainer@{digest}"
    assert config["ALIGND_K8S_TRAINER_IMAGE_PULL_POLICY"] == "Always"
    assert container["livenessProbe"]["periodSeconds"] == 30
    assert container["startupProbe"]["failureThreshold"] == 120
    assert template(helm, "--set", "image.digest=latest").returncode != 0


def test_no_autoscaler_and_the_values_say_why(helm: list[str]) -> None:
    assert not [m for m in render(helm) if m["kind"] == "HorizontalPodAutoscaler"]
    values = (CHART / "values.yaml").read_text()
    assert "no HorizontalPodAutoscaler on purpose" in values and "leader-elected controller" in values


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--set", "trainer.podTemplate.env[0].name=ALIGND_JOB_TOKEN"],
            "at '/trainer/podTemplate/env/0/name'",
        ),
        (["--set", "trainer.podTemplate.volumes[0].name=work"], "at '/trainer/podTemplate/volumes/0/name'"),
        (
            ["--set", "trainer.podTemplate.hostNetwork=true"],
            "additional properties 'hostNetwork' not allowed",
        ),
        (["--set", "trainer.kueue.queueName=Team_A"], "at '/trainer/kueue/queueName'"),
        (["--set", "s3.auth=iam"], "at '/s3/auth'"),
    ],
    ids=["alignd-env", "own-volume", "host-network", "queue-name", "s3-auth"],
)
def test_schema_rejects_a_pod_template_or_queue_alignd_cannot_run(
    helm: list[str], args: list[str], message: str
) -> None:
    result = template(helm, *args)

    assert result.returncode != 0
    assert message in result.stderr
