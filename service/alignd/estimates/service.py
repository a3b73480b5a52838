"""Estimate a job before it runs, and fill in what a job's model tells about its files.

`estimate_job` answers `POST /v1/fine_tuning/jobs/estimate` (and `alignd.dry_run`): it checks the request
exactly as job creation does (`jobs.service.check_request`), reads the files, tokenizes them with the
model's tokenizer through the trainer's own code, and returns pairs (conversations for a supervised job),
tokens, steps, truncation, the train/validation overlap and durations. It creates no job and launches nothing.

`analyse_created_job` runs after a job is created (a background task of the route, so the response does
not wait): it stores the truncation share at the job's `max_length` on each file's quality report and
records a warning event when the validation file overlaps the training file. It is best effort: a server
without the trainer extra, or a model whose tokenizer cannot load here, gets the overlap check only.

Both store the truncation they counted on the file's report (`truncation`, the latest count: it names
its model and `max_length`). No transaction is open while files are read or tokenized.
"""

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy.orm import sessionmaker
from sqlmodel import Session

from alignd.config import Settings
from alignd.contract import EventLevel, JobSpec, RowError, TrainingMethod
from alignd.contract.steps import pairs_per_epoch, steps_per_epoch, total_steps
from alignd.datasets.overlap import Overlap, find_overlap
from alignd.datasets.report import TruncationReport, count_truncated
from alignd.errors import AligndError, InvalidRequest
from alignd.estimates import tokens
from alignd.estimates.scan import ChatScan, FileScan, scan_chat_file, scan_file
from alignd.estimates.throughput import CPU_PROFILE
from alignd.estimates.wire import (
    ChatTokens,
    DurationEstimate,
    FileEstimate,
    JobEstimate,
    PairTokens,
    StepsEstimate,
    TokenStats,
    TruncationEstimate,
)
from alignd.files import get_file
from alignd.jobs.events import add_events
from alignd.jobs.service import check_request
from alignd.models import FileModel, JobEventModel, JobModel, ProjectModel
from alignd.schemas import DpoHyperparametersOut, JobCreate, SupervisedHyperparametersOut
from alignd.storage import ObjectStore

log = logging.getLogger("alignd.estimates")

ESTIMATE_JOB_ID = "estimate"
"""The job id in an estimate's resolved spec: no job exists."""


@dataclass(frozen=True)
class StoredFile:
    id: str
    key: str
    rows: int


def estimate_job(
    *, session: Session, settings: Settings, store: ObjectStore, project: ProjectModel, request: JobCreate
) -> JobEstimate:
    resolved = check_request(
        session=session, settings=settings, project=project, request=request, job_id=ESTIMATE_JOB_ID
    ).resolved
    spec = resolved.spec
    hyperparameters = resolved.hyperparameters
    training = _stored(get_file(session, project, request.training_file))
    validation = (
        _stored(get_file(session, project, request.validation_file)) if request.validation_file else None
    )
    session.rollback()  # nothing stays open while the files are read and tokenized
    tokenizer = tokens.load_tokenizer(spec.model)
    train_scan = _scan(store, settings, spec, training, "training_file")
    val_scan = _scan(store, settings, spec, validation, "validation_file") if validation else None
    train_estimate = _file_estimate(training, train_scan, spec, tokenizer, "training_file")
    val_estimate = (
        _file_estimate(validation, val_scan, spec, tokenizer, "validation_file")
        if validation and val_scan
        else None
    )
    overlap = find_overlap(train_scan.keys, val_scan.keys) if val_scan else None
    for file_estimate in (train_estimate, val_estimate):
        if file_estimate is not None:
            _record_truncation(session, request.model, file_estimate)
    return _job_estimate(
        settings,
        spec,
        model=request.model,
        training=train_estimate,
        validation=val_estimate,
        overlap=overlap,
        hyperparameters=hyperparameters,
    )


def analyse_created_job(
    *, sessions: sessionmaker[Session], settings: Settings, store: ObjectStore, job_id: str
) -> None:
    """Truncation onto the files' reports and an overlap event, for a job just created. Never raises:
    what fails is logged, the job is not affected."""
    try:
        _analyse_created_job(sessions, settings, store, job_id)
    except Exception:
        log.warning("could not analyse the files of job %s", job_id, exc_info=True)


def _analyse_created_job(
    sessions: sessionmaker[Session], settings: Settings, store: ObjectStore, job_id: str
) -> None:
    with sessions() as session:
        job = session.get(JobModel, job_id)
        if job is None:
            return
        spec = JobSpec.model_validate(job.spec)
        model = job.model
        named = {"training_file": spec.training_file, "validation_file": spec.validation_file}
        rows = {param: session.get(FileModel, file_id) for param, file_id in named.items() if file_id}
        files = {param: _stored(row) for param, row in rows.items() if row is not None}
    tokenizer = _tokenizer_if_possible(spec.model, job_id)
    scans = {param: _scan(store, settings, spec, file, param) for param, file in files.items()}
    with sessions() as session:
        if tokenizer is not None:
            for param, scan in scans.items():
                _record_truncation(session, model, _file_estimate(files[param], scan, spec, tokenizer, param))
        if len(scans) == 2:
            overlap = find_overlap(scans["training_file"].keys, scans["validation_file"].keys)
            if overlap.found:
                event = JobEventModel(
                    job_id=job_id,
                    level=EventLevel.warn.value,
                    message=_overlap_message(overlap, spec.method),
                    data={"overlap": overlap.model_dump(mode="json")},
                )
                add_events(session, job_id, [event])
                session.commit()


def _tokenizer_if_possible(location: str, job_id: str) -> Any:
    if not tokens.trainer_installed():
        log.info("job %s: no truncation share on its files' reports: %s", job_id, tokens.TRAINER_EXTRA)
        return None
    try:
        return tokens.load_tokenizer(location)
    except AligndError as exc:
        log.info("job %s: no truncation share on its files' reports: %s", job_id, exc.message)
        return None


def _stored(row: FileModel) -> StoredFile:
    return StoredFile(id=row.id, key=row.storage_key, rows=row.rows)


def _scan(
    store: ObjectStore, settings: Settings, spec: JobSpec, file: StoredFile, param: str
) -> FileScan | ChatScan:
    """Reads the whole file: about the CPU its upload's validation took. A supervised job's files hold
    chat rows (job creation checked it), a DPO job's preference pairs."""
    scan = scan_chat_file if spec.method is TrainingMethod.supervised else scan_file
    kind = "chat data" if spec.method is TrainingMethod.supervised else "preference data"
    try:
        return scan(
            store.iter_bytes(file.key),
            rows=file.rows,
            max_rows=settings.estimate_max_rows,
            max_line_bytes=settings.max_line_bytes,
        )
    except RowError as error:
        raise InvalidRequest(
            f"file {file.id} is not {kind}, which a {spec.method} job's estimate counts: {error}", param=param
        ) from None


def _file_estimate(
    file: StoredFile, scan: FileScan | ChatScan, spec: JobSpec, tokenizer: Any, param: str
) -> FileEstimate:
    if isinstance(scan, ChatScan):
        return _chat_file_estimate(file, scan, spec, tokenizer, param)
    hp = spec.hyperparameters
    counts = tokens.count_tokens(
        tokenizer,
        scan.examples,
        max_length=hp.max_length,
        truncation_mode=hp.truncation_mode,
        agreement_threshold=spec.agreement_threshold,
        param=param,
    )
    scale = scan.rows / len(scan.examples) if scan.examples else 0.0
    prompt, chosen, rejected = (
        np.asarray(c, dtype=np.int64) for c in (counts.prompt, counts.chosen, counts.rejected)
    )
    truncated, _ = count_truncated(
        zip(counts.prompt, counts.chosen, counts.rejected, strict=True), hp.max_length
    )
    truncated += counts.dropped_prompt_too_long
    considered = len(prompt) + counts.dropped_prompt_too_long
    # What truncate_sequence leaves of each of the pair's two sequences: the tokens a step runs.
    trained = np.minimum(prompt + chosen, hp.max_length) + np.minimum(prompt + rejected, hp.max_length)
    pair_tokens = (
        PairTokens(
            prompt=_stats(prompt, scale),
            chosen=_stats(chosen, scale),
            rejected=_stats(rejected, scale),
            trained_per_epoch=round(int(trained.sum()) * scale),
        )
        if len(prompt)
        else None
    )
    return FileEstimate(
        file_id=file.id,
        rows=scan.rows,
        pairs_tokenized=len(scan.examples),
        sampled=scan.sampled,
        usable_pairs=round(len(prompt) * scale),
        dropped_low_agreement=round(counts.dropped_low_agreement * scale),
        tokens=pair_tokens,
        truncation=TruncationEstimate(
            max_length=hp.max_length,
            truncation_mode=hp.truncation_mode,
            truncated_pairs=round(truncated * scale),
            truncated_share=truncated / considered if considered else 0.0,
            prompt_fills_max_length=round(counts.dropped_prompt_too_long * scale),
        ),
    )


def _chat_file_estimate(
    file: StoredFile, scan: ChatScan, spec: JobSpec, tokenizer: Any, param: str
) -> FileEstimate:
    """A chat file as the SFT trainer reads it: conversations kept, cut and dropped by its rules."""
    hp = spec.hyperparameters
    counts = tokens.count_chat_tokens(
        tokenizer, scan.examples, max_length=hp.max_length, truncation_mode=hp.truncation_mode, param=param
    )
    scale = scan.rows / len(scan.examples) if scan.examples else 0.0
    conversation, trained = (np.asarray(c, dtype=np.int64) for c in (counts.tokens, counts.trained))
    considered = len(scan.examples)
    chat_tokens = (
        ChatTokens(
            conversation=_stats(conversation, scale),
            trained=_stats(trained, scale),
            trained_per_epoch=round(sum(counts.kept_tokens) * scale),
            loss_tokens_per_epoch=round(sum(counts.kept_trained) * scale),
        )
        if len(conversation)
        else None
    )
    return FileEstimate(
        file_id=file.id,
        rows=scan.rows,
        pairs_tokenized=considered,
        sampled=scan.sampled,
        usable_pairs=round(len(conversation) * scale),
        dropped_low_agreement=0,
        tokens=None,
        chat_tokens=chat_tokens,
        dropped_untrained=round(counts.dropped_untrained * scale),
        truncation=TruncationEstimate(
            max_length=hp.max_length,
            truncation_mode=hp.truncation_mode,
            truncated_pairs=round(counts.truncated * scale),
            truncated_share=counts.truncated / considered if considered else 0.0,
            prompt_fills_max_length=round(counts.dropped_by_truncation * scale),
        ),
    )


def _stats(values: np.ndarray, scale: float) -> TokenStats:
    return TokenStats(
        total=round(int(values.sum()) * scale),
        mean=float(values.mean()),
        p50=float(np.percentile(values, 50)),
        p95=float(np.percentile(values, 95)),
        max=int(values.max()),
    )


def _record_truncation(session: Session, model: str, estimate: FileEstimate) -> None:
    """The file's quality report gets this count as its `truncation` (the latest count wins)."""
    row = session.get(FileModel, estimate.file_id)
    if row is None or row.report is None:
        return
    truncation = estimate.truncation
    report = TruncationReport(
        model=model,
        max_length=truncation.max_length,
        truncated_share=truncation.truncated_share,
        truncation_mode=truncation.truncation_mode,
        truncated_pairs=truncation.truncated_pairs,
        sampled=estimate.sampled,
    )
    row.report = {**row.report, "truncation": report.model_dump(mode="json")}
    session.add(row)
    session.commit()


def _job_estimate(
    settings: Settings,
    spec: JobSpec,
    *,
    model: str,
    training: FileEstimate,
    validation: FileEstimate | None,
    overlap: Overlap | None,
    hyperparameters: DpoHyperparametersOut | SupervisedHyperparametersOut,
) -> JobEstimate:
    hp = spec.hyperparameters
    resources = spec.resources
    devices = max(1, resources.gpus * resources.nodes)
    shards = devices * hp.gradient_accumulation_steps
    usable = training.usable_pairs
    per_epoch = steps_per_epoch(usable, batch_size=hp.batch_size, shards=shards)
    steps = total_steps(per_epoch, n_epochs=hp.n_epochs, max_steps=hp.max_steps)
    per_epoch_tokens = (
        training.tokens.trained_per_epoch
        if training.tokens
        else training.chat_tokens.trained_per_epoch
        if training.chat_tokens
        else 0
    )
    trained_share = (
        pairs_per_epoch(usable, batch_size=hp.batch_size, shards=shards) / usable if usable else 0.0
    )
    trained_tokens = round(per_epoch_tokens * trained_share * steps / per_epoch) if per_epoch else 0
    parameters = tokens.model_parameters(spec.model)
    durations, notes = _durations(settings, spec, trained_tokens, parameters, devices)
    return JobEstimate(
        model=model,
        training_type=spec.training_type,
        method=spec.method,
        hyperparameters=hyperparameters,
        training=training,
        validation=validation,
        overlap=overlap,
        steps=StepsEstimate(
            batch_size=hp.batch_size,
            n_epochs=hp.n_epochs,
            shards=shards,
            max_steps=hp.max_steps,
            per_epoch=per_epoch,
            total=steps,
        ),
        trained_tokens=trained_tokens,
        model_parameters=parameters,
        durations=durations,
        assumptions=_assumptions(spec, training, validation, parameters) + notes,
        warnings=_warnings(spec, training, validation, overlap, per_epoch, shards),
    )


def _durations(
    settings: Settings, spec: JobSpec, trained_tokens: int, parameters: int | None, devices: int
) -> tuple[list[DurationEstimate], list[str]]:
    resources = spec.resources
    selected = CPU_PROFILE if resources.gpus == 0 else resources.gpu_type
    out = []
    for profile, entry in settings.estimate_throughput.items():
        scale = entry.params / parameters if parameters else 1.0
        profile_devices = 1 if profile == CPU_PROFILE else devices
        rate = entry.tokens_per_second(spec.training_type) * scale * profile_devices
        out.append(
            DurationEstimate(
                profile=profile,
                selected=profile == selected,
                tokens_per_second=rate,
                devices=profile_devices,
                seconds=trained_tokens / rate,
                source=entry.source,
            )
        )
    notes = []
    if selected is None:
        notes.append("no alignd.resources.gpu_type: every profile of the table is listed, none selected")
    elif selected not in settings.estimate_throughput:
        notes.append(
            f"the profile {selected!r} has no entry in the throughput table (ALIGND_ESTIMATE_THROUGHPUT); "
            "the other profiles are listed"
        )
    return out, notes


def _assumptions(
    spec: JobSpec, training: FileEstimate, validation: FileEstimate | None, parameters: int | None
) -> list[str]:
    out = [
        "durations: trained_tokens / (the profile's tokens/s × its params / this model's P × devices): "
        "throughput falls linearly with the model's size and grows linearly with devices",
        "the table's figures are for a per-step reference forward and alignd's packed batches; "
        "precompute_ref_log_probs replaces the per-step reference forward with one pass before training",
        "not counted: loading the model, tokenizing, evaluation passes over the validation file, "
        "checkpoints, and time queued",
        "steps and trained_tokens follow the trainer's schedule (alignd.contract.steps) on the usable "
        "training pairs",
    ]
    if spec.method is TrainingMethod.supervised:
        out.append(
            "supervised: pairs are conversations, and the DPO table is used as it is; SFT runs no reference "
            "forward and pads its batches, so the durations are rough, likely on the long side"
        )
    if parameters is None:
        out.append("the model's config could not be built here, so the table's figures are used unscaled")
    for name, estimate in (("training", training), ("validation", validation)):
        if estimate is not None and estimate.sampled:
            out.append(
                f"the {name} file has {estimate.rows} rows; {estimate.pairs_tokenized} of them, evenly "
                "spaced, were tokenized (ALIGND_ESTIMATE_MAX_ROWS): totals and counts are extrapolated, "
                "p50/p95/max come from the sample"
            )
    return out


def _warnings(
    spec: JobSpec,
    training: FileEstimate,
    validation: FileEstimate | None,
    overlap: Overlap | None,
    per_epoch: int,
    shards: int,
) -> list[str]:
    hp = spec.hyperparameters
    chat = spec.method is TrainingMethod.supervised
    items = "conversations" if chat else "pairs"
    out = []
    for name, estimate in (("training", training), ("validation", validation)):
        if estimate is None:
            continue
        truncation = estimate.truncation
        if truncation.truncated_pairs:
            out.append(
                f"{truncation.truncated_share:.1%} of the {name} {items} ({truncation.truncated_pairs}) are "
                f"longer than max_length={hp.max_length} tokens and get truncated ({hp.truncation_mode}); "
                f"raise method.{spec.method}.hyperparameters.max_length or shorten them"
            )
        if truncation.prompt_fills_max_length:
            cause = "truncation cuts off every trained token at" if chat else "the prompt alone fills"
            out.append(
                f"{truncation.prompt_fills_max_length} {name} {items} are dropped: {cause} "
                f"max_length={hp.max_length}"
            )
        if chat and estimate.dropped_untrained > truncation.prompt_fills_max_length:
            out.append(
                f"{estimate.dropped_untrained - truncation.prompt_fills_max_length} {name} conversations "
                "are skipped: no assistant turn with weight 1"
            )
    if overlap is not None and overlap.found:
        out.append(_overlap_message(overlap, spec.method))
    if hp.batch_size < shards:
        out.append(
            f"batch_size {hp.batch_size} is smaller than GPUs × gradient_accumulation_steps ({shards}): the "
            "trainer refuses this job"
        )
    elif per_epoch == 0:
        out.append(
            f"{training.usable_pairs} usable training pairs are too few for one step: the trainer fails"
        )
    return out


def _overlap_message(overlap: Overlap, method: TrainingMethod = TrainingMethod.dpo) -> str:
    items, metric = (
        ("conversations", "validation loss")
        if method is TrainingMethod.supervised
        else ("pairs", "validation loss and reward accuracy")
    )
    return (
        f"{overlap.same_prompt.count} of {overlap.validation_rows} validation {items} share a prompt with "
        f"the training file ({overlap.same_pair.count} are identical {items}; validation lines "
        f"{', '.join(map(str, overlap.same_prompt.example_lines))}): {metric} "
        "will look better than they are"
    )
