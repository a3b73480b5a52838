"""Evals a job runs when it succeeds (`alignd.evals` in the job request): each named eval gets two runs
over the job's validation file, one on the fine-tuned model and one on its base model as the baseline,
so the two sit side by side with the same graders on the same held-out items. The job's events link to
the runs.

Checked at job creation (the evals exist in the project, the job has a validation file); the runs are
created once, by the controller that moved the job to succeeded. A run that cannot be created then (the
eval was deleted meanwhile, the project is at its eval-run quota) becomes a warning event on the job.
"""

import logging
from collections.abc import Sequence
from typing import Any

from sqlmodel import Session

from alignd.config import Settings
from alignd.errors import AligndError, InvalidRequest, NotFound
from alignd.evals import service
from alignd.evals.schemas import CompletionsDataSource, FileIdSource, RunCreate
from alignd.jobs.state import record_event
from alignd.models import JobModel, ProjectModel
from alignd.schemas import AfterTrainingEval
from alignd.storage import ObjectStore

log = logging.getLogger("alignd.evals.after_training")
REQUEST_KEY = "evals"
"""Where a job's `alignd.evals` is kept in `JobModel.request`."""


def normalise(entries: Sequence[str | AfterTrainingEval]) -> list[AfterTrainingEval]:
    return [AfterTrainingEval(eval_id=e) if isinstance(e, str) else e for e in entries]


def check_request(
    session: Session, project: ProjectModel, entries: list[AfterTrainingEval], *, validation_file: str | None
) -> list[dict[str, Any]]:
    """Refuse (400, naming the field) evals the project does not have, or evals without held-out items
    to run on; returns what the job keeps."""
    if entries and validation_file is None:
        raise InvalidRequest(
            "alignd.evals runs the evals on the job's held-out pairs: give a validation_file",
            param="validation_file",
        )
    for index, entry in enumerate(entries):
        try:
            service.get_eval(session, project, entry.eval_id)
        except NotFound:
            raise InvalidRequest(
                f"no eval with id {entry.eval_id!r} in this project; create it with POST /v1/evals first",
                param=f"alignd.evals.{index}.eval_id",
                code="eval_not_found",
            ) from None
    return [entry.model_dump(mode="json", exclude_none=True) for entry in entries]


def start_runs(
    *, session: Session, settings: Settings, store: ObjectStore, job: JobModel
) -> list[dict[str, str]]:
    """Create the runs of a succeeded job's evals (tuned, then base), record an event linking to them,
    and return the links; a run that cannot be created is a warning event instead."""
    entries = [AfterTrainingEval.model_validate(e) for e in (job.request or {}).get(REQUEST_KEY, [])]
    if not entries or job.fine_tuned_model is None or job.validation_file is None:
        return []
    project = session.get_one(ProjectModel, job.project_id)
    links: list[dict[str, str]] = []
    for entry in entries:
        for role, model in (("tuned", job.fine_tuned_model), ("base", job.model)):
            request = RunCreate(
                name=f"{job.id} {role}",
                metadata={"fine_tuning_job": job.id, "role": role},
                data_source=CompletionsDataSource(
                    type="completions",
                    model=model,
                    source=FileIdSource(type="file_id", id=job.validation_file),
                    input_messages=entry.input_messages,
                    sampling_params=entry.sampling_params,
                ),
            )
            try:
                run = service.create_run(
                    session=session,
                    settings=settings,
                    store=store,
                    project=project,
                    eval_id=entry.eval_id,
                    request=request,
                )
            except AligndError as exc:
                session.rollback()
                record_event(
                    session,
                    job.id,
                    f"Could not start the {role} run of eval {entry.eval_id}: {exc.message}",
                    level="warn",
                    type="evals",
                )
                continue
            links.append({"eval_id": entry.eval_id, "run_id": run.id, "model": model, "role": role})
    if links:
        record_event(
            session,
            job.id,
            "Evaluation runs started: "
            + ", ".join(f"{link['run_id']} ({link['role']}, eval {link['eval_id']})" for link in links),
            type="evals",
            data={"eval_runs": links},
        )
    return links
