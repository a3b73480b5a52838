"""schemathesis against a live server, driven by the checked-in openapi/openapi.yaml.

Every operation (public, admin, internal trainer and signed-storage routes) gets generated valid and
invalid requests, with the right credential for its kind plus schemathesis's own probes without one.
The server must answer no 5xx, no status the spec does not list for that operation, and no body or
content type that breaks the spec. Seeded and derandomized, with few examples per operation, so a run is
the same every time and takes about a minute on two cores.
"""

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import schemathesis
from schemathesis import Case
from schemathesis.config import SchemathesisConfig
from schemathesis.core.parameters import ParameterLocation
from sqlmodel import Session, select

from alignd import auth
from alignd.config import Settings
from alignd.contract.eval_items import OutputItem
from alignd.db import make_engine
from alignd.evals import service as evals
from alignd.jobs.state import JobStatus, transition
from alignd.models import EvalOutputItemModel, EvalRunModel
from alignd.server import BackgroundServer, free_port
from alignd_trainer.synthetic import preference_rows
from tests.api.helpers import ADMIN_KEY, bearer

ROOT = Path(__file__).resolve().parents[2]
MAX_EXAMPLES = 8
EVAL = {
    "name": "fuzz",
    "data_source_config": {"type": "custom", "item_schema": {"type": "object", "properties": {}}},
    "testing_criteria": [{"type": "preference", "name": "prefers chosen"}],
}

CONFIG = SchemathesisConfig.from_dict(
    {
        "seed": 20240601,
        "generation": {"max-examples": MAX_EXAMPLES, "deterministic": True, "database": "none"},
        "phases": {"stateful": {"enabled": False}},
        "checks": {
            # A schema-valid request can still be refused with a documented 400 for what a schema cannot
            # say (a training_file id that does not exist, a data line that is not a preference pair).
            "positive_data_acceptance": {"enabled": False},
        },
    }
)
schema = schemathesis.openapi.from_path(ROOT / "openapi" / "openapi.yaml", config=CONFIG)


@dataclass(frozen=True)
class Target:
    url: str
    project_key: str
    job_token: str
    file_id: str
    job_id: str
    """A cancelled job of the project: every user-facing job route works on it, and `?stream=true`
    ends at once."""
    running_job_id: str
    """A running job whose token is `job_token`: the internal routes' subject."""
    project_id: str
    eval_id: str
    eval_run_id: str
    """An in-progress run of `eval_id` with one output item: neither can be deleted while it runs."""
    output_item_id: str

    def headers(self, case: Case) -> dict[str, str]:
        """The credential for the operation's kind; none for a case whose headers schemathesis made
        invalid on purpose (a missing or mangled Authorization), which must then be refused as sent."""
        if case.meta is not None and case.meta.is_negative_at(ParameterLocation.HEADER):
            return {}
        path, method = case.path, case.method.upper()
        if path.startswith("/internal/"):
            return bearer(self.job_token)
        if path.startswith("/v1/admin/") or (path == "/v1/models" and method == "POST"):
            return bearer(ADMIN_KEY)
        if path.startswith("/v1/"):
            return bearer(self.project_key)
        return {}

    def pin_ids(self, case: Case) -> None:
        """Point generated ids at real resources, so handlers run past their 404s."""
        parameters = case.path_parameters
        if not parameters:
            return
        if "job_id" in parameters:
            internal = case.path.startswith("/internal/")
            parameters["job_id"] = self.running_job_id if internal else self.job_id
        if "file_id" in parameters:
            parameters["file_id"] = self.file_id
        if "project_id" in parameters:
            parameters["project_id"] = self.project_id
        if "eval_id" in parameters:
            parameters["eval_id"] = self.eval_id
        if "run_id" in parameters:
            parameters["run_id"] = self.eval_run_id
        if "output_item_id" in parameters:
            parameters["output_item_id"] = self.output_item_id


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    root = tmp_path_factory.mktemp("fuzz")
    model_dir = root / "model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}")  # registration checks the directory; nothing trains
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    settings = Settings(
        data_dir=root / "alignd",
        admin_key=ADMIN_KEY,
        public_url=url,
        run_controller=False,
        auth_failure_limit=0,  # the fuzzer sends bad keys on purpose; a 429 would end the run's coverage
    )
    with BackgroundServer(settings, "127.0.0.1", port), httpx.Client(base_url=url, timeout=30) as client:
        admin = bearer(ADMIN_KEY)
        project = client.post("/v1/admin/projects", json={"name": "fuzz"}, headers=admin).json()
        key = client.post(f"/v1/admin/projects/{project['id']}/api_keys", json={}, headers=admin).json()
        assert client.post("/v1/models", json={"id": "m", "source": str(model_dir)}, headers=admin).is_success
        user = bearer(key["value"])
        data = "".join(json.dumps(row) + "\n" for row in preference_rows(8, seed=3))
        file = client.post(
            "/v1/files", files={"file": ("d.jsonl", data)}, data={"purpose": "fine-tune"}, headers=user
        ).json()
        body = {"model": "m", "training_file": file["id"], "alignd": {"resources": {"gpus": 0}}}
        jobs = [client.post("/v1/fine_tuning/jobs", json=body, headers=user).json() for _ in range(2)]
        assert client.post(f"/v1/fine_tuning/jobs/{jobs[0]['id']}/cancel", headers=user).is_success
        evaluation = client.post("/v1/evals", json=EVAL, headers=user).json()
        source = {"type": "completions", "model": "m", "source": {"type": "file_id", "id": file["id"]}}
        run = client.post(f"/v1/evals/{evaluation['id']}/runs", json={"data_source": source}, headers=user)
        engine = make_engine(settings.resolved_database_url())
        with Session(engine) as session:
            assert transition(session, jobs[1]["id"], to=JobStatus.running, event="started by the test")
            token = auth.issue_job_token(session, jobs[1]["id"])
            eval_run = session.get_one(EvalRunModel, run.json()["id"])
            assert evals.mark_in_progress(session, eval_run)
            evals.record_output_items(
                session, eval_run, [OutputItem(datasource_item_id=0, datasource_item={}, results=[])]
            )
            eval_run_id, item_id = eval_run.id, session.exec(select(EvalOutputItemModel.id)).one()
        engine.dispose()
        yield Target(
            url=url,
            project_key=key["value"],
            job_token=token,
            file_id=file["id"],
            job_id=jobs[0]["id"],
            running_job_id=jobs[1]["id"],
            project_id=project["id"],
            eval_id=evaluation["id"],
            eval_run_id=eval_run_id,
            output_item_id=item_id,
        )


@schema.parametrize()
def test_api_keeps_its_contract(case: Case, target: Target) -> None:
    target.pin_ids(case)
    case.call_and_validate(base_url=target.url, headers=target.headers(case), timeout=30)
