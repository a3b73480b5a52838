"""An eval run's status: one enum, stored as its value, that knows which statuses are final."""

from enum import StrEnum


class EvalRunStatus(StrEnum):
    queued = "queued"
    """Created; waiting for the controller to launch it."""
    in_progress = "in_progress"
    """Launched; the evaluator is generating and grading."""
    completed = "completed"
    failed = "failed"
    canceled = "canceled"
    """OpenAI's spelling for eval runs (fine-tuning jobs say "cancelled")."""

    @property
    def is_terminal(self) -> bool:
        return self in (EvalRunStatus.completed, EvalRunStatus.failed, EvalRunStatus.canceled)

    @property
    def is_active(self) -> bool:
        """Queued or in progress: what counts against the project's quota."""
        return not self.is_terminal

    @classmethod
    def active(cls) -> list["EvalRunStatus"]:
        return [status for status in cls if status.is_active]


class OutputItemStatus(StrEnum):
    passed = "pass"
    failed = "fail"
    errored = "error"
    """The sample or a grader failed: the item is counted in `result_counts.errored`."""
