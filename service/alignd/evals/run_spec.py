"""An eval run as the evaluator receives it (`contract.evals.EvalRunSpec`), built each time an attempt asks.

Built at the ask, not at creation, because it holds presigned URLs (the data file, the weights of an
`ft:` model or of a base model kept in object storage) that must be fresh for each attempt; everything
else comes from what `create_run` checked and stored (`EvalRunModel.resolved`, the eval's criteria).
The judge endpoint and its key are the admin's settings, handed only to the run's own token holder.
"""

from sqlmodel import Session

from alignd import registry
from alignd.config import Settings
from alignd.contract import JobSpec, ModelFile
from alignd.contract.evals import (
    DataRow,
    EvalModel,
    EvalRunSpec,
    JudgeEndpoint,
    JudgeSampling,
    LabelModelGrader,
    MessageTemplate,
    ModelSource,
    PreferenceGrader,
    Sampling,
    ScoreModelGrader,
    StringCheckGrader,
    TextSimilarityGrader,
)
from alignd.contract.evals import Grader as SpecGrader
from alignd.errors import InvalidRequest, NotFound
from alignd.evals import schemas, wire
from alignd.evals.resolve import ModelRef, ResolvedRun
from alignd.jobs.artifacts import adapter_prefix
from alignd.models import BaseModelModel, EvalRunModel, FileModel, JobModel
from alignd.models import EvalModel as EvalRow
from alignd.storage import ObjectStore

ADAPTER = "adapter"


def build_spec(
    session: Session, store: ObjectStore, settings: Settings, run: EvalRunModel, *, expires_seconds: int
) -> EvalRunSpec:
    evaluation = session.get_one(EvalRow, run.eval_id)
    resolved = ResolvedRun.model_validate(run.resolved)
    source = wire.data_source(run)
    items, items_url = _items(session, store, source.source, resolved, expires_seconds)
    model = input_messages = None
    sampling = Sampling()
    if isinstance(source, schemas.CompletionsDataSource):
        if resolved.model is not None:
            model = eval_model(session, store, resolved.model, expires_seconds=expires_seconds)
        if source.input_messages is not None:
            input_messages = [
                MessageTemplate(role=m.role, content=m.content) for m in source.input_messages.template
            ]
        sampling = _sampling(source.sampling_params)
    graders = [
        _grader(grader, session, store, resolved, expires_seconds) for grader in wire.criteria(evaluation)
    ]
    return EvalRunSpec(
        run_id=run.id,
        eval_id=run.eval_id,
        items=items,
        items_url=items_url,
        input_messages=input_messages,
        model=model,
        sampling=sampling,
        graders=graders,
        judge=judge_endpoint(settings) if any(_judged(g) for g in graders) else None,
        batch_size=settings.eval_batch_size,
    )


def judge_endpoint(settings: Settings) -> JudgeEndpoint:
    if settings.eval_judge_base_url is None:
        raise InvalidRequest(
            "score_model and label_model graders need a judge endpoint, and none is configured: an admin "
            "sets ALIGND_EVAL_JUDGE_BASE_URL (and ALIGND_EVAL_JUDGE_API_KEY)",
            param="testing_criteria",
        )
    key = settings.eval_judge_api_key
    return JudgeEndpoint(
        base_url=settings.eval_judge_base_url,
        api_key=key.get_secret_value() if key is not None else None,
        timeout_seconds=settings.eval_judge_timeout_seconds,
    )


def _judged(grader: SpecGrader) -> bool:
    return isinstance(grader, ScoreModelGrader | LabelModelGrader)


def _items(
    session: Session,
    store: ObjectStore,
    source: schemas.FileIdSource | schemas.FileContentSource,
    resolved: ResolvedRun,
    expires_seconds: int,
) -> tuple[list[DataRow] | None, str | None]:
    if isinstance(source, schemas.FileContentSource):
        return [DataRow(item=row.item, sample=row.sample) for row in source.content], None
    file = session.get(FileModel, resolved.file_id or source.id)
    if file is None:
        raise NotFound(f"the run's data file {source.id} was deleted", param="data_source.source.id")
    return None, store.presigned_get_url(file.storage_key, expires_seconds)


def _sampling(params: schemas.SamplingParams | None) -> Sampling:
    if params is None:
        return Sampling()
    values = params.model_dump(exclude_none=True)
    return Sampling.model_validate(values)


def _grader(
    grader: schemas.Grader, session: Session, store: ObjectStore, resolved: ResolvedRun, expires: int
) -> SpecGrader:
    match grader:
        case schemas.StringCheckGrader():
            return StringCheckGrader.model_validate(grader.model_dump())
        case schemas.TextSimilarityGrader():
            return TextSimilarityGrader.model_validate(grader.model_dump())
        case schemas.ScoreModelGrader():
            low, high = grader.range or (0.0, 1.0)
            return ScoreModelGrader(
                name=grader.name,
                model=grader.model,
                input=[MessageTemplate(role=m.role, content=m.content) for m in grader.input],
                range=(low, high),
                pass_threshold=grader.pass_threshold,
                sampling_params=JudgeSampling.model_validate(grader.sampling_params.model_dump())
                if grader.sampling_params
                else None,
            )
        case schemas.LabelModelGrader():
            return LabelModelGrader(
                name=grader.name,
                model=grader.model,
                input=[MessageTemplate(role=m.role, content=m.content) for m in grader.input],
                labels=grader.labels,
                passing_labels=grader.passing_labels,
            )
        case schemas.PreferenceGrader():
            reference = resolved.references.get(grader.name)
            model = resolved.model
            same_base = (
                reference is not None
                and reference.job_id is None
                and model is not None
                and reference.base_model == model.base_model
            )
            return PreferenceGrader(
                name=grader.name,
                beta=grader.beta,
                # The base of the run's model needs no second copy: the evaluator disables the adapter.
                reference=None
                if reference is None or same_base
                else eval_model(session, store, reference, expires_seconds=expires),
            )


def eval_model(session: Session, store: ObjectStore, ref: ModelRef, *, expires_seconds: int) -> EvalModel:
    """Where the evaluator finds a model's files: the base model's location, and for an `ft:` model its
    job's adapter (LoRA) or full weights, as presigned URLs."""
    if ref.job_id is None:
        base = session.get(BaseModelModel, ref.base_model)
        if base is None:
            raise NotFound(f"the base model {ref.base_model!r} is no longer registered", param="model")
        return EvalModel(name=ref.name, base=_base_source(store, base.location, expires_seconds))
    job = session.get(JobModel, ref.job_id)
    if job is None:
        raise NotFound(f"the fine-tuning job {ref.job_id} of {ref.name} was deleted", param="model")
    # The location the job trained from, as its frozen spec has it (a registered model's, or a hub id).
    base_source = _base_source(store, JobSpec.model_validate(job.spec).model, expires_seconds)
    prefix = adapter_prefix(store, job)
    weights = ModelSource(location=prefix, files=_store_files(store, prefix, expires_seconds))
    if prefix.rsplit("/", 1)[-1] == ADAPTER:
        return EvalModel(name=ref.name, base=base_source, adapter=weights)
    return EvalModel(name=ref.name, base=weights)


def _base_source(store: ObjectStore, location: str, expires_seconds: int) -> ModelSource:
    if location.startswith(registry.S3_SCHEME):
        listing = registry.model_files(store, location, expires_seconds=expires_seconds)
        return ModelSource(location=location, files=listing.files)
    return ModelSource(location=location)


def _store_files(store: ObjectStore, prefix: str, expires_seconds: int) -> list[ModelFile]:
    """Presigned GETs of every object under `prefix/` (its paths relative to the prefix)."""
    root = f"{prefix.rstrip('/')}/"
    files = []
    for key in store.list(root):
        size = store.size(key)
        files.append(
            ModelFile(
                path=key[len(root) :],
                url=store.presigned_get_url(key, expires_seconds),
                size=size,
                etag=f"{key}:{size}",
            )
        )
    return files
