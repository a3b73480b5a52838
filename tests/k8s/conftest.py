from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kubernetes.client import ApiClient
from sqlalchemy.engine import Engine
from sqlmodel import Session

from alignd import db
from alignd.config import GpuProfile, Settings
from alignd.controller import Controller
from alignd.db import session_factory
from alignd.launchers.kubernetes import KubernetesLauncher
from alignd.storage.local import LocalStore
from alignd.storage.signing import UrlSigner
from tests.k8s.cluster import EmulatorThread, Kubelet, PodScript

NAMESPACE = "alignd-test"
RELEASE = "team-a"
Scripts = dict[str, list[PodScript]]
"""Job name -> what its first, second, ... pod does (the last entry repeats)."""


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    """SQLite only: the controller's database behaviour runs on both backends in tests/controller and
    tests/db; these tests are about the cluster side."""
    engine = db.make_engine(f"sqlite:///{tmp_path_factory.mktemp('k8s-db') / 'alignd.db'}")
    db.upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    with db.session_factory(engine)() as session:
        yield session


@pytest.fixture
def cluster() -> Iterator[EmulatorThread]:
    thread = EmulatorThread()
    thread.start()
    assert thread.ready.wait(10), "the kmock emulator did not start"
    yield thread
    thread.stop()


@pytest.fixture
def api(cluster: EmulatorThread) -> ApiClient:
    return cluster.api_client()


@pytest.fixture
def scripts() -> Scripts:
    return {}


@pytest.fixture
def kubelet(cluster: EmulatorThread, scripts: Scripts, tmp_path: Path) -> Iterator[Kubelet]:
    def script(job_name: str, number: int) -> PodScript:
        plan = scripts.get(job_name) or [PodScript("hold")]
        return plan[min(number, len(plan) - 1)]

    assert cluster.emulator is not None
    kubelet = Kubelet(cluster.api_client(), NAMESPACE, cluster.emulator, script, workdir=tmp_path / "pods")
    kubelet.start()
    yield kubelet
    kubelet.stop()
    assert not kubelet.errors, kubelet.errors


@pytest.fixture
def k8s_settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path,
        launcher="kubernetes",
        k8s_namespace=NAMESPACE,
        k8s_release=RELEASE,
        k8s_trainer_image="ghcr.io/alignd/alignd-trainer:test",
        k8s_gpu_profiles={"h100": GpuProfile(node_selector={"gpu": "h100"})},
        k8s_pending_deadline_seconds=6.0,
        cancel_grace_seconds=1.0,
    )


@pytest.fixture
def make_launcher(api: ApiClient, k8s_settings: Settings) -> Iterator[Callable[[], KubernetesLauncher]]:
    made: list[KubernetesLauncher] = []

    def make() -> KubernetesLauncher:
        launcher = KubernetesLauncher(k8s_settings, api, watch_seconds=2)
        made.append(launcher)
        return launcher

    yield make
    for launcher in made:
        launcher.close()


@pytest.fixture
def make_controller(
    engine: Engine, k8s_settings: Settings, make_launcher: Callable[[], KubernetesLauncher], tmp_path: Path
) -> Callable[[], Controller]:
    """A fresh controller and launcher each call: calling it again is a server restart."""
    store = LocalStore(tmp_path / "store", signer=UrlSigner(b"k"), public_url="http://127.0.0.1:1")

    def make() -> Controller:
        return Controller(
            sessions=session_factory(engine), launcher=make_launcher(), store=store, settings=k8s_settings
        )

    return make
