"""The results file of a succeeded job: its metric series as CSV, like OpenAI's fine-tuning results file.

OpenAI's has `step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy`; for DPO the useful
accuracy is the reward accuracy (share of pairs whose chosen response out-scores the rejected one) and the
reward margin, so ours has one row per step with:

    step,epoch,train_loss,train_rewards_margin,train_rewards_accuracy,valid_loss,valid_rewards_margin,
    valid_rewards_accuracy

`valid_*` is filled at the steps where the trainer evaluated, empty elsewhere. It is a file object with
purpose "fine-tune-results", owned by the job's project, listed in the job's `result_files`.

Written once, when the controller records success: the object goes to a key derived from the job id,
and the file row is inserted in the transaction that moves the job to succeeded. Writing it again after
a crash overwrites the same object, and the row exists only if the success was recorded. (A success
that loses its race, to a cancel say, leaves the small object without a row; it is not deleted, since
a controller that won the same race may be pointing its row at the same key.)
"""

import csv
import hashlib
import io

from sqlmodel import Session

from alignd.files import RESULTS_PURPOSE
from alignd.jobs.artifacts import metrics
from alignd.models import FileModel, JobModel, unix_now_us
from alignd.storage import ObjectStore

COLUMNS = (
    "step",
    "epoch",
    "train_loss",
    "train_rewards_margin",
    "train_rewards_accuracy",
    "valid_loss",
    "valid_rewards_margin",
    "valid_rewards_accuracy",
)
SOURCES = {
    "train_loss": ("train", "loss"),
    "train_rewards_margin": ("train", "rewards/margins"),
    "train_rewards_accuracy": ("train", "rewards/accuracies"),
    "valid_loss": ("eval", "eval_loss"),
    "valid_rewards_margin": ("eval", "eval_rewards/margins"),
    "valid_rewards_accuracy": ("eval", "eval_rewards/accuracies"),
}
"""Column -> (split, TRL metric name) of the points we store."""


def results_file_id(job_id: str) -> str:
    """The same id whenever it is computed for a job, so a repeated write cannot make a second file."""
    return "file-" + hashlib.sha256(f"results:{job_id}".encode()).hexdigest()[:24]


def results_csv(session: Session, job: JobModel) -> bytes:
    """One row per step. A step reported twice (a run retried from a checkpoint) keeps its last value."""
    rows: dict[int, dict[str, object]] = {}
    for point in metrics(session, job):
        row = rows.setdefault(point.step, {"step": point.step})
        if point.split == "train":
            row["epoch"] = point.epoch
        for column, (split, name) in SOURCES.items():
            if split == point.split and name in point.values:
                row[column] = point.values[name]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows[step] for step in sorted(rows))
    return out.getvalue().encode()


def store_results_file(store: ObjectStore, job: JobModel, data: bytes) -> FileModel:
    """Put the results CSV in the store and return its file row, not yet added: the caller adds it in
    the transaction that records the success, so the file exists exactly when the success does."""
    file_id = results_file_id(job.id)
    key = f"files/{file_id}"
    store.put_bytes(key, data, content_type="text/csv")
    now_us = unix_now_us()
    return FileModel(
        id=file_id,
        project_id=job.project_id,
        filename=f"{job.id}-results.csv",
        purpose=RESULTS_PURPOSE,
        bytes=len(data),
        rows=data.count(b"\n") - 1,
        sha256=hashlib.sha256(data).hexdigest(),
        storage_key=key,
        created_at=now_us // 1_000_000,
        created_at_us=now_us,
    )
