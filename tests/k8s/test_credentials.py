"""How the server finds its cluster: a kubeconfig when configured, else the pod's service account;
with neither, starting the Kubernetes launcher fails saying what to set."""

from pathlib import Path

import pytest

from alignd.config import Settings
from alignd.launchers.kubernetes import KubernetesConfigError, api_client_from_settings, default_namespace
from tests.k8s.cluster import write_kubeconfig


def test_a_kubeconfig_points_the_client_at_its_server(tmp_path: Path) -> None:
    config = write_kubeconfig(tmp_path / "kubeconfig", "https://k8s.example:6443")
    api = api_client_from_settings(Settings(launcher="kubernetes", k8s_kubeconfig=config))
    assert api.configuration.host == "https://k8s.example:6443"


def test_outside_a_cluster_without_a_kubeconfig_the_error_says_what_to_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(KubernetesConfigError, match="ALIGND_K8S_KUBECONFIG"):
        api_client_from_settings(Settings(launcher="kubernetes"))


def test_the_namespace_setting_wins() -> None:
    assert default_namespace(Settings(k8s_namespace="ml-jobs")) == "ml-jobs"
