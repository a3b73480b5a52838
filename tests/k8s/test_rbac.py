"""The Helm chart's Role grants exactly LAUNCHER_RULES (tests/helm); here every request the launcher
really makes through a run's life is checked against that set, so a new API call cannot ship with
a Role that forbids it."""

from collections.abc import Callable

from sqlmodel import Session

from alignd.controller import Controller
from alignd.jobs.service import cancel_job
from alignd.launchers.k8s_manifests import job_name
from alignd.models import ProjectModel
from tests.db.factories import make_job
from tests.k8s.cluster import EmulatorThread, Kubelet, PodScript, wait_for
from tests.k8s.conftest import RELEASE, Scripts
from tests.k8s.helpers import LAUNCHER_RULES, drive, pods_of

VERBS = {
    "list": "list",
    "watch": "watch",
    "fetch": "get",
    "create": "create",
    "update": "patch",
    "delete": "delete",
}
MULTI_NODE = {"model": "/models/tiny", "training_file": "file-test", "resources": {"gpus": 1, "nodes": 2}}


def test_the_launcher_uses_only_what_the_role_grants(
    cluster: EmulatorThread,
    make_controller: Callable[[], Controller],
    session: Session,
    scripts: Scripts,
    kubelet: Kubelet,
) -> None:
    done, cancelled = make_job(session, spec=MULTI_NODE), make_job(session, spec=MULTI_NODE)
    scripts[job_name(done.id, 1, RELEASE)] = [PodScript("succeed")]
    controller = make_controller()
    drive(controller, session, done.id, {"succeeded"})
    drive(controller, session, cancelled.id, {"running"})
    wait_for(lambda: bool(pods_of(kubelet.api, job_name(cancelled.id, 1, RELEASE))), 10, "a pod")
    project = session.get(ProjectModel, cancelled.project_id)
    assert project is not None
    cancel_job(session, project, cancelled.id)
    controller.reconcile_once()

    assert cluster.emulator is not None
    used = set()
    for request in list(cluster.emulator._requests):
        if request.resource is None or request.headers.get("User-Agent") == Kubelet.USER_AGENT:
            continue
        resource = request.resource.plural + (f"/{request.subresource}" if request.subresource else "")
        used.add((request.resource.group or "", resource, VERBS[str(request.action.value).lower()]))
    assert {("", "services", "create"), ("", "pods/log", "get"), ("batch", "jobs", "delete")} <= used
    assert used <= LAUNCHER_RULES, f"the Role lacks: {used - LAUNCHER_RULES}"
