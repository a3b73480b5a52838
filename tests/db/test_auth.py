"""alignd/auth.py: projects, API keys (hashed, revocable, admin bootstrap) and job tokens."""

import hashlib
import re

import pytest
from sqlalchemy import Engine, inspect, select
from sqlmodel import Session, col

from alignd import auth, db
from alignd.errors import Conflict, NotFound, Unauthenticated
from alignd.jobs.lifecycle import RunKind
from alignd.jobs.state import JobStatus, transition
from alignd.models import ApiKeyModel, ProjectModel, RunModel
from alignd.runs import current_run

from .factories import make_job, make_project


def test_project_names_are_unique(session: Session) -> None:
    project = auth.create_project(session, "research-unique-1", quota_gpus=2)
    assert (
        project.id.startswith("proj_") and project.quota_gpus == 2 and project.quota_concurrent_jobs is None
    )

    with pytest.raises(Conflict, match="a project named 'research-unique-1' already exists"):
        auth.create_project(session, "research-unique-1")


def test_api_key_is_shown_once_and_stored_hashed(session: Session) -> None:
    project = make_project(session)

    key, plaintext = auth.create_api_key(session, project.id, name="ci")

    assert re.fullmatch(r"sk-alignd-[A-Za-z0-9_-]{43}", plaintext)
    assert key.id.startswith("key_") and (key.project_id, key.is_admin, key.name) == (project.id, False, "ci")
    assert key.key_hash == hashlib.sha256(plaintext.encode()).hexdigest()
    assert key.key_prefix == plaintext[:12]
    assert plaintext not in repr(key.model_dump())
    assert auth.authenticate(session, plaintext).id == key.id


def test_unknown_and_revoked_keys_fail_alike(session: Session) -> None:
    project = make_project(session)
    key, plaintext = auth.create_api_key(session, project.id, name="laptop")

    with pytest.raises(Unauthenticated) as unknown:
        auth.authenticate(session, plaintext[:-1] + ("A" if plaintext[-1] != "A" else "B"))
    revoked = auth.revoke_api_key(session, key.id, project_id=project.id)
    assert revoked.revoked_at is not None
    assert auth.revoke_api_key(session, key.id).revoked_at == revoked.revoked_at  # idempotent
    with pytest.raises(Unauthenticated) as after_revoke:
        auth.authenticate(session, plaintext)

    assert unknown.value.message == after_revoke.value.message
    assert unknown.value.status_code == 401


def test_keys_belong_to_an_existing_project(session: Session) -> None:
    project, other = make_project(session), make_project(session)
    key, _ = auth.create_api_key(session, project.id, name="k")

    with pytest.raises(NotFound):
        auth.create_api_key(session, "proj_missing", name="k")
    with pytest.raises(NotFound):  # another project's key looks absent
        auth.revoke_api_key(session, key.id, project_id=other.id)
    with pytest.raises(ValueError, match="needs a project_id"):
        auth.create_api_key(session, None, name="k")


def test_admin_key_bootstrap_is_idempotent(session: Session) -> None:
    plaintext = "admin-" + make_project(session).id  # any unique string, as an operator would configure

    first = auth.ensure_admin_key(session, plaintext)
    second = auth.ensure_admin_key(session, plaintext)

    assert first.id == second.id and (first.is_admin, first.project_id) == (True, None)
    assert first.key_prefix == plaintext[:4]
    rows = session.execute(
        select(ApiKeyModel).where(col(ApiKeyModel.key_hash) == auth.hash_secret(plaintext))
    ).scalars()
    assert len(list(rows)) == 1
    assert auth.authenticate(session, plaintext).is_admin

    _, project_key = auth.create_api_key(session, make_project(session).id, name="k")
    with pytest.raises(Conflict, match="is a project's API key"):
        auth.ensure_admin_key(session, project_key)


def test_job_token_is_valid_for_its_job_while_it_runs(session: Session) -> None:
    job, other = make_job(session, status=JobStatus.running), make_job(session, status=JobStatus.running)
    queued = make_job(session, status=JobStatus.queued)
    token = auth.issue_job_token(session, job.id)
    other_token = auth.issue_job_token(session, other.id)
    queued_token = auth.issue_job_token(session, queued.id)

    assert auth.authenticate_job_token(session, job.id, token).id == job.id
    for job_id, wrong in [
        (job.id, other_token),
        (other.id, token),
        (job.id, token + "x"),
        ("ftjob-none", token),
    ]:
        with pytest.raises(Unauthenticated, match="invalid job token"):
            auth.authenticate_job_token(session, job_id, wrong)
    with pytest.raises(Unauthenticated):  # not running yet
        auth.authenticate_job_token(session, queued.id, queued_token)

    transition(session, job.id, to=JobStatus.pausing, event="pause requested")
    assert auth.authenticate_job_token(session, job.id, token).status == JobStatus.pausing
    transition(session, job.id, to=JobStatus.paused, event="paused")
    with pytest.raises(Unauthenticated):  # the run is over
        auth.authenticate_job_token(session, job.id, token)

    transition(session, other.id, to=JobStatus.succeeded, event="done")
    with pytest.raises(Unauthenticated):
        auth.authenticate_job_token(session, other.id, other_token)


def test_a_new_token_replaces_the_old_one(session: Session) -> None:
    job = make_job(session, status=JobStatus.running)
    old = auth.issue_job_token(session, job.id)
    new = auth.issue_job_token(session, job.id)

    assert auth.authenticate_job_token(session, job.id, new).id == job.id
    with pytest.raises(Unauthenticated):
        auth.authenticate_job_token(session, job.id, old)
    with pytest.raises(NotFound):
        auth.issue_job_token(session, "ftjob-none")


def test_token_hash_can_be_set_with_the_start(session: Session) -> None:
    """The controller's start: the run row with the token's hash commits with the move to running."""
    job = make_job(session, status=JobStatus.queued)
    plaintext, token_hash = auth.new_job_token()
    run = RunModel(kind=RunKind.train, job_id=job.id, attempt=1, token_hash=token_hash)

    started = transition(
        session, job.id, to=JobStatus.running, event="started", fields={"attempt": 1}, rows=[run]
    )

    assert started is not None and current_run(session, started) == run and run.token_hash != plaintext
    assert auth.authenticate_job_token(session, job.id, plaintext).id == job.id


def test_a_start_that_loses_the_race_leaves_no_run(session: Session) -> None:
    job = make_job(session, status=JobStatus.queued)
    run = RunModel(kind=RunKind.train, job_id=job.id, attempt=1, token_hash="x")

    moved = transition(
        session, job.id, to=JobStatus.running, expected_lock="stale", event="started", rows=[run]
    )

    assert moved is None and session.get(RunModel, run.id) is None


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_identify_remembers_a_live_key_for_the_ttl_only(engine: Engine, session: Session) -> None:
    project = make_project(session)
    key, plaintext = auth.create_api_key(session, project.id, name="poller")
    sessions = db.session_factory(engine)
    clock = FakeClock()
    cache = auth.CallerCache(5.0, clock=clock)

    caller = auth.identify(sessions, plaintext, cache)
    assert caller.key().id == key.id and caller.project() == project
    # Revoked in the database behind the cache's back (another process): still known until the TTL ends.
    auth.revoke_api_key(session, key.id)
    assert auth.identify(sessions, plaintext, cache).key().id == key.id
    clock.now += 5.0
    with pytest.raises(Unauthenticated):
        auth.identify(sessions, plaintext, cache)


def test_revoking_through_the_cache_takes_effect_at_once(engine: Engine, session: Session) -> None:
    project = make_project(session)
    key, plaintext = auth.create_api_key(session, project.id, name="leaked")
    sessions = db.session_factory(engine)
    cache = auth.CallerCache(3600.0)
    auth.identify(sessions, plaintext, cache)

    auth.revoke_api_key(session, key.id, cache=cache)

    with pytest.raises(Unauthenticated):
        auth.identify(sessions, plaintext, cache)


def test_unknown_keys_are_not_cached_and_a_zero_ttl_caches_nothing(engine: Engine, session: Session) -> None:
    sessions = db.session_factory(engine)
    cache = auth.CallerCache(0.0)
    project = make_project(session)
    _, plaintext = auth.create_api_key(session, project.id, name="new")
    auth.identify(sessions, plaintext, cache)
    assert cache.get(plaintext) is None
    cached = auth.CallerCache(60.0)
    with pytest.raises(Unauthenticated):
        auth.identify(sessions, "sk-alignd-unknown", cached)
    assert cached.get("sk-alignd-unknown") is None


def test_cached_rows_are_fresh_detached_copies(engine: Engine, session: Session) -> None:
    """Each request gets its own instances: nothing is shared between threads, and adding one to a
    session updates the row instead of inserting a second one."""
    project = make_project(session)
    _, plaintext = auth.create_api_key(session, project.id, name="copies")
    caller = auth.identify(db.session_factory(engine), plaintext, auth.CallerCache(60.0))
    first, second = caller.project(), caller.project()
    assert first is not second and first == second
    assert inspect(first).detached
    with db.session_factory(engine)() as other:
        other.add(first)
        other.commit()
        assert other.get(ProjectModel, project.id) is first
