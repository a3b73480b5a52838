"""A Kubernetes API for tests: kmock's emulator over real HTTP, plus a small kubelet.

kmock stores objects and serves list/watch/get/create/patch/delete but runs no controllers and
assigns no server-side fields. `Emulator` adds what the launcher relies on from a real API server
(uid, resourceVersion, creationTimestamp, label selectors, pod logs, an expired watch). `Kubelet`
plays the Job controller, the scheduler, the kubelet and the garbage collector, following a
script per pod, and can run a pod's command on this machine for end-to-end runs. A suspended Job
gets no pods (the Job controller's rule); a test plays Kueue by unsuspending it (`admit`).
"""

import asyncio
import base64
import contextlib
import itertools
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import aiohttp.web
import attrs
import kmock
import yaml
from kmock._internal import enums, rendering
from kubernetes import client
from kubernetes.client import ApiClient, Configuration
from kubernetes.client.exceptions import ApiException

Obj = dict[str, Any]
RESOURCES = ("batch/v1/jobs", "v1/pods", "v1/secrets", "v1/services", "v1/events")


def now_rfc3339(clock: Callable[[], float] = time.time) -> str:
    return datetime.fromtimestamp(clock(), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _selected(obj: Obj, selector: str | None) -> bool:
    """Label selectors' equality (`key=value`) and absence (`!key`) terms, as the launcher uses them."""
    if not selector:
        return True
    labels = (obj.get("metadata") or {}).get("labels") or {}
    for term in selector.split(","):
        if term.startswith("!"):
            if term[1:] in labels:
                return False
            continue
        key, _, value = term.partition("=")
        if labels.get(key) != value:
            return False
    return True


@attrs.define(kw_only=True)
class Emulator(kmock.KubernetesEmulator):
    pod_logs: dict[str, str] = attrs.field(factory=dict)
    expire_next_watches: int = 0
    expiring: tuple[str, str] | None = None
    """(resource plural, label selector): only such watches expire; None: any watch."""
    watches_expired: int = 0
    _versions: Iterator[int] = attrs.field(factory=lambda: itertools.count(1))

    async def _handle(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        if request.subresource == "log" and request.name is not None:
            text = self.pod_logs.get(request.name)
            if text is None:
                return await self._render_error(kmock.KubernetesObjectNotFoundError())
            return aiohttp.web.Response(text=text)
        if request.action in (enums.action.CREATE, enums.action.UPDATE) and isinstance(request.data, dict):
            metadata = request.data.setdefault("metadata", {})
            metadata["resourceVersion"] = str(next(self._versions))
            if request.action == enums.action.CREATE:
                metadata.setdefault("uid", str(uuid.uuid4()))
                metadata.setdefault("creationTimestamp", now_rfc3339())
                if request.data.get("kind") == "Secret" and "stringData" in request.data:
                    plain = request.data.pop("stringData")
                    request.data["data"] = {
                        k: base64.b64encode(v.encode()).decode() for k, v in plain.items()
                    }
        return await super()._handle(request)

    async def _serve_list(self, request: rendering.Request) -> rendering.Payload:
        listing: Obj = await super()._serve_list(request)  # type: ignore[assignment]
        selector = request.params.get("labelSelector")
        listing["items"] = [obj for obj in listing["items"] if _selected(obj, selector)]
        listing["metadata"] = {"resourceVersion": str(next(self._versions))}
        return listing

    async def _serve_watch(self, request: rendering.Request) -> AsyncIterator[rendering.Payload]:
        selector = request.params.get("labelSelector")
        wanted = request.resource is not None and (request.resource.plural, selector) == self.expiring
        if self.expire_next_watches > 0 and (self.expiring is None or wanted):
            self.expire_next_watches -= 1
            self.watches_expired += 1
            yield b""
            yield {
                "type": "ERROR",
                "object": {
                    "kind": "Status",
                    "code": 410,
                    "reason": "Expired",
                    "message": "too old resource version",
                },
            }
            return
        async for event in super()._serve_watch(request):
            if not isinstance(event, dict) or _selected(event.get("object") or {}, selector):
                yield event


class EmulatorThread(threading.Thread):
    """The emulator's aiohttp server on its own event loop, so sync clients can call it."""

    def __init__(self) -> None:
        super().__init__(name="kmock", daemon=True)
        self.ready = threading.Event()
        self.url = ""
        self.emulator: Emulator | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._shutdown: asyncio.Event | None = None

    def run(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        self._shutdown = asyncio.Event()
        async with Emulator() as emulator, kmock.Server(emulator) as server:
            for resource in RESOURCES:
                emulator.resources[resource] = kmock.ResourceInfo(namespaced=True)
            self.emulator, self.url = emulator, str(server.url).rstrip("/")
            self.ready.set()
            await self._shutdown.wait()

    def stop(self) -> None:
        if self._loop is not None and self._shutdown is not None:
            self._loop.call_soon_threadsafe(self._shutdown.set)
        self.join(timeout=10)

    def api_client(self) -> ApiClient:
        configuration = Configuration()
        configuration.host = self.url
        return ApiClient(configuration)


# ---- the kubelet ---------------------------------------------------------------------------------------


@dataclass
class PodScript:
    """What happens to one pod: `outcome` is succeed, fail, oom, preempt, unschedulable, imagepull, hold,
    or exec (run the container's command here)."""

    outcome: str
    exit_code: int = 0
    termination_message: str = ""
    logs: str = "trainer output\n"


@dataclass
class Kubelet:
    api: ApiClient
    namespace: str
    emulator: Emulator
    scripts: Callable[[str, int], PodScript]
    """(Job name, pod number within the Job) -> what that pod does."""
    workdir: Path | None = None
    tick_seconds: float = 0.05
    env_overrides: dict[str, str] = field(default_factory=dict)
    clock: Callable[[], float] = time.time
    """The cluster's time, for the timestamps the Job controller writes (a resumed Job's condition)."""
    _stop: threading.Event = field(default_factory=threading.Event)
    _procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _thread: threading.Thread | None = None
    errors: list[str] = field(default_factory=list)
    preempted: set[str] = field(default_factory=set)

    USER_AGENT: ClassVar[str] = "alignd-test-kubelet"

    def __post_init__(self) -> None:
        self.api.user_agent = self.USER_AGENT
        self.batch = client.BatchV1Api(self.api)
        self.core = client.CoreV1Api(self.api)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="test-kubelet", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        for proc in self._procs.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)

    def preempt(self, pod_name: str) -> None:
        """What the scheduler does to make room: SIGTERM the pod, then mark it a disruption target."""
        self.preempted.add(pod_name)
        self._stop_process(pod_name)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception as exc:
                self.errors.append(repr(exc))
            self._stop.wait(self.tick_seconds)

    # ---- one pass ------------------------------------------------------------------------------------

    def tick(self) -> None:
        self._collect_garbage()
        jobs = {j["metadata"]["name"]: j for j in self._list(self.batch.list_namespaced_job)}
        pods = self._list(self.core.list_namespaced_pod)
        for name, job in jobs.items():
            own = [p for p in pods if p["metadata"].get("labels", {}).get("alignd.dev/run") == name]
            self._sync_job(job, own)

    def _list(self, list_fn: Callable[..., Any]) -> list[Obj]:
        result: list[Obj] = self.api.sanitize_for_serialization(list_fn(self.namespace).items)
        return result

    def _collect_garbage(self) -> None:
        """Pods, Secrets and Services whose owning Job is gone are deleted; their processes stopped.

        Dependents are listed before the Jobs, so an owner created in between is never missed.
        """
        dependents = [
            *((p, self.core.delete_namespaced_pod) for p in self._list(self.core.list_namespaced_pod)),
            *((s, self.core.delete_namespaced_secret) for s in self._list(self.core.list_namespaced_secret)),
            *(
                (s, self.core.delete_namespaced_service)
                for s in self._list(self.core.list_namespaced_service)
            ),
        ]
        live_uids = {j["metadata"].get("uid") for j in self._list(self.batch.list_namespaced_job)}
        for obj, delete in dependents:
            owners = obj["metadata"].get("ownerReferences") or []
            if owners and not any(o.get("uid") in live_uids for o in owners):
                name = obj["metadata"]["name"]
                self._stop_process(name)
                with contextlib.suppress(ApiException):
                    delete(name, self.namespace)

    def admit(self, job_name: str) -> None:
        """What Kueue does when the Job's queue has room: unsuspend it."""
        self.batch.patch_namespaced_job(job_name, self.namespace, {"spec": {"suspend": False}})

    def _sync_job(self, job: Obj, pods: list[Obj]) -> None:
        status = job.get("status") or {}
        conditions = {c.get("type"): c for c in status.get("conditions") or [] if c.get("status") == "True"}
        if "Complete" in conditions or "Failed" in conditions:
            return
        if job["spec"].get("suspend"):
            if "Suspended" not in conditions:
                self._set_job_condition(job, "Suspended", "True", "JobSuspended")
            return
        if "Suspended" in conditions:
            self._set_job_condition(job, "Suspended", "False", "JobResumed")
        for pod in pods:
            self._advance(pod)
        pods = [self.core.read_namespaced_pod(p["metadata"]["name"], self.namespace) for p in pods]
        pods = [self.api.sanitize_for_serialization(p) for p in pods]
        phases = [(p.get("status") or {}).get("phase") for p in pods]
        if "Succeeded" in phases:
            self._finish_job(job, "Complete", "Completed", "")
            return
        counted = [p for p in pods if p["status"].get("phase") == "Failed" and not _disrupted(p)]
        for pod in counted:
            code = _exit_code(pod)
            rules = job["spec"].get("podFailurePolicy", {}).get("rules", [])
            fail_now = [r for r in rules if r["action"] == "FailJob" and code in r["onExitCodes"]["values"]]
            if fail_now:
                self._finish_job(job, "Failed", "PodFailurePolicy", f"container trainer exited with {code}")
                return
        if len(counted) > job["spec"].get("backoffLimit", 6):
            self._finish_job(
                job, "Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit"
            )
            return
        if all(phase == "Failed" for phase in phases):
            self._create_pod(job, len(pods))

    def _set_job_condition(self, job: Obj, kind: str, status: str, reason: str) -> None:
        condition = {
            "type": kind,
            "status": status,
            "reason": reason,
            "lastTransitionTime": now_rfc3339(self.clock),
        }
        body: Obj = {"status": {"conditions": [condition]}}
        if status == "False":
            body["status"]["startTime"] = condition["lastTransitionTime"]
        self.batch.patch_namespaced_job_status(job["metadata"]["name"], self.namespace, body)

    def _finish_job(self, job: Obj, condition: str, reason: str, message: str) -> None:
        body = {
            "status": {
                "conditions": [{"type": condition, "status": "True", "reason": reason, "message": message}]
            }
        }
        self.batch.patch_namespaced_job_status(job["metadata"]["name"], self.namespace, body)

    def _create_pod(self, job: Obj, number: int) -> None:
        template = job["spec"]["template"]
        name = f"{job['metadata']['name']}-{secrets.token_hex(3)}"
        owner = {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "name": job["metadata"]["name"],
            "uid": job["metadata"]["uid"],
        }
        metadata = template["metadata"] | {
            "name": name,
            "namespace": self.namespace,
            "ownerReferences": [owner],
            "creationTimestamp": now_rfc3339(self.clock),
            "annotations": (template["metadata"].get("annotations") or {}) | {"test/number": str(number)},
        }
        self.core.create_namespaced_pod(self.namespace, {"metadata": metadata, "spec": template["spec"]})

    # ---- pods ----------------------------------------------------------------------------------------

    def _advance(self, pod: Obj) -> None:
        phase = (pod.get("status") or {}).get("phase")
        if phase in ("Succeeded", "Failed"):
            return
        name = pod["metadata"]["name"]
        job_name = pod["metadata"]["labels"]["alignd.dev/run"]
        script = self.scripts(job_name, int(pod["metadata"]["annotations"]["test/number"]))
        if script.outcome == "exec":
            self._exec(pod, script)
            return
        if phase is None:
            self._set_status(name, _initial_status(script))
            return
        if script.outcome in ("unschedulable", "imagepull", "hold"):
            return
        self.emulator.pod_logs[name] = script.logs
        self._set_status(name, _final_status(script))

    def _set_status(self, name: str, status: Obj) -> None:
        with contextlib.suppress(ApiException):
            self.core.patch_namespaced_pod_status(name, self.namespace, {"status": status})

    def _exec(self, pod: Obj, script: PodScript) -> None:
        name = pod["metadata"]["name"]
        proc = self._procs.get(name)
        if proc is None:
            self._start_process(pod)
            self._set_status(name, {"phase": "Running", "containerStatuses": [_container({"running": {}})]})
            return
        if proc.poll() is None:
            return
        run_dir = self._run_dir(name)
        self.emulator.pod_logs[name] = (run_dir / "output.log").read_text(errors="replace")
        message_file = run_dir / "termination-log"
        message = message_file.read_text() if message_file.exists() else ""
        code = proc.returncode if proc.returncode >= 0 else 128 - proc.returncode
        terminated = {
            "terminated": {
                "exitCode": code,
                "reason": "Completed" if code == 0 else "Error",
                "message": message,
            }
        }
        status: Obj = {
            "phase": "Succeeded" if code == 0 else "Failed",
            "containerStatuses": [_container(terminated)],
        }
        if name in self.preempted:
            status["conditions"] = [_disruption()]
        self._set_status(name, status)

    def _run_dir(self, pod_name: str) -> Path:
        assert self.workdir is not None, "exec pods need a workdir"
        path = self.workdir / pod_name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def claim_dir(self, claim: str) -> Path:
        """The directory standing for a PersistentVolumeClaim: one per claim, shared by every pod."""
        assert self.workdir is not None, "exec pods need a workdir"
        return self.workdir / "claims" / claim

    def _host_paths(self, pod: Obj, run_dir: Path) -> dict[str, Path]:
        """Where each of the container's mounts lives here (mount path -> directory); /dev/shm and /tmp
        are this machine's own."""
        volumes = {v["name"]: v for v in pod["spec"].get("volumes") or []}
        paths = {}
        for mount in pod["spec"]["containers"][0].get("volumeMounts") or []:
            if mount["mountPath"] in ("/dev/shm", "/tmp"):
                continue
            claim = (volumes.get(mount["name"], {}).get("persistentVolumeClaim") or {}).get("claimName")
            host = self.claim_dir(claim) if claim else run_dir / "volumes" / mount["name"]
            host.mkdir(parents=True, exist_ok=True)
            paths[mount["mountPath"]] = host
        return paths

    def _start_process(self, pod: Obj) -> None:
        container = pod["spec"]["containers"][0]
        run_dir = self._run_dir(pod["metadata"]["name"])
        env = {k: v for k, v in os.environ.items() if not k.startswith("ALIGND_")}
        mounts = self._host_paths(pod, run_dir)
        for item in container.get("env") or []:
            env[item["name"]] = _on_host(self._env_value(item), mounts)
        env |= {"ALIGND_TERMINATION_LOG": str(run_dir / "termination-log"), "HOME": str(run_dir)}
        env |= self.env_overrides
        command = [sys.executable if part == "python" else part for part in container["command"]]
        with open(run_dir / "output.log", "wb") as out:
            self._procs[pod["metadata"]["name"]] = subprocess.Popen(
                command, cwd=run_dir, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    def _env_value(self, item: Obj) -> str:
        if "value" in item:
            return str(item["value"])
        ref = item["valueFrom"]["secretKeyRef"]
        secret = self.core.read_namespaced_secret(ref["name"], self.namespace)
        data = self.api.sanitize_for_serialization(secret)
        return base64.b64decode(data["data"][ref["key"]]).decode()

    def _stop_process(self, pod_name: str) -> None:
        proc = self._procs.get(pod_name)
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)


def _on_host(value: str, mounts: dict[str, Path]) -> str:
    """A path in the pod (`/cache/huggingface`) as the directory that stands for it here."""
    for mount_path, host in mounts.items():
        if value == mount_path or value.startswith(mount_path + "/"):
            return str(host) + value[len(mount_path) :]
    return value


def _container(state: Obj) -> Obj:
    return {
        "name": "trainer",
        "state": state,
        "image": "ghcr.io/alignd/alignd-trainer:test",
        "imageID": "",
        "ready": "running" in state,
        "restartCount": 0,
    }


def _initial_status(script: PodScript) -> Obj:
    if script.outcome == "unschedulable":
        condition = {
            "type": "PodScheduled",
            "status": "False",
            "reason": "Unschedulable",
            "message": "0/4 nodes are available: 4 Insufficient nvidia.com/gpu.",
        }
        return {"phase": "Pending", "conditions": [condition]}
    if script.outcome == "imagepull":
        waiting = {
            "waiting": {"reason": "ImagePullBackOff", "message": 'Back-off pulling image "ghcr.io/x/nope"'}
        }
        return {"phase": "Pending", "containerStatuses": [_container(waiting)]}
    return {"phase": "Running", "containerStatuses": [_container({"running": {}})]}


def _final_status(script: PodScript) -> Obj:
    if script.outcome == "succeed":
        return {"phase": "Succeeded", "containerStatuses": [_container({"terminated": {"exitCode": 0}})]}
    if script.outcome == "oom":
        return {
            "phase": "Failed",
            "containerStatuses": [_container({"terminated": {"exitCode": 137, "reason": "OOMKilled"}})],
        }
    terminated = {"exitCode": script.exit_code, "reason": "Error", "message": script.termination_message}
    status: Obj = {"phase": "Failed", "containerStatuses": [_container({"terminated": terminated})]}
    if script.outcome == "preempt":
        status["conditions"] = [_disruption()]
    return status


def _disruption() -> Obj:
    return {
        "type": "DisruptionTarget",
        "status": "True",
        "reason": "PreemptionByScheduler",
        "message": "preempted",
    }


def _disrupted(pod: Obj) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "DisruptionTarget" and c.get("status") == "True" for c in conditions)


def _exit_code(pod: Obj) -> int:
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        terminated = (status.get("state") or {}).get("terminated")
        if terminated:
            return int(terminated.get("exitCode", 0))
    return 0


def summary_json(exit_code: int, reason: str, message: str) -> str:
    return json.dumps({"exit_code": exit_code, "reason": reason, "message": message})


def wait_for(predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def write_kubeconfig(path: Path, server: str, namespace: str = "default") -> Path:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "kmock", "cluster": {"server": server}}],
        "users": [{"name": "alignd", "user": {"token": "unused-by-the-emulator"}}],
        "contexts": [
            {"name": "kmock", "context": {"cluster": "kmock", "user": "alignd", "namespace": namespace}}
        ],
        "current-context": "kmock",
    }
    path.write_text(yaml.safe_dump(config))
    return path
