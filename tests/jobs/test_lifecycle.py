"""alignd/jobs/lifecycle.py: every status answers every question, and every run-end reason has a code.

These enumerate the members, so a status or reason added without its answers fails here (mypy's
exhaustiveness check on the `match` statements catches the same at type-check time)."""

import pytest

from alignd.jobs.lifecycle import ALLOWED, JobStatus, RunEndReason, error_code

S = JobStatus
WIRE = {
    S.validating_files: "validating_files",
    S.queued: "queued",
    S.running: "running",
    S.pausing: "running",
    S.paused: "queued",
    S.succeeded: "succeeded",
    S.failed: "failed",
    S.cancelled: "cancelled",
}
"""What the openai SDK sees: OpenAI's six statuses; pausing and paused read as running and queued."""


@pytest.mark.parametrize("status", list(JobStatus))
def test_every_status_answers_every_question(status: JobStatus) -> None:
    assert status.wire == WIRE[status]
    assert isinstance(status.is_terminal, bool) and isinstance(status.is_active, bool)
    assert isinstance(status.counts_for_quota, bool) and status.verb
    assert status in ALLOWED
    if status.is_terminal:
        assert not ALLOWED[status] and not status.is_active and not status.counts_for_quota


def test_status_sets() -> None:
    assert JobStatus.terminal() == {S.succeeded, S.failed, S.cancelled}
    assert JobStatus.active() == {S.running, S.pausing}
    assert JobStatus.in_quota() == {S.queued, S.running, S.pausing}


def test_run_end_reasons_map_to_the_error_codes_users_see() -> None:
    assert error_code(RunEndReason.oom_killed) == "oomkilled"
    assert error_code("BadInput") == "badinput"
    assert error_code(RunEndReason.launch_failed) == "launch_failed"
    assert error_code(RunEndReason.trainer_silent) == "trainer_silent"
    assert error_code(RunEndReason.max_runtime) == "max_runtime_exceeded"
    assert error_code("BackoffLimitExceeded") == "backofflimitexceeded"
    assert error_code(None) == "failed"
    assert all(reason.error_code == reason.error_code.lower() for reason in RunEndReason)
    assert [r for r in RunEndReason if r.retriable] == [RunEndReason.lost]
