"""Who is calling: projects, API keys, and job tokens.

API keys look like `sk-alignd-<43 url-safe characters>` (256 random bits) and are stored only as their
SHA-256; a key belongs to one project, or to none if it is an admin key. The admin key from
`ALIGND_ADMIN_KEY` is registered at start (`ensure_admin_key`). Job tokens are what a trainer presents
on the internal API: random, hashed on the job's latest run row, valid for that one job while it runs or
pauses.
Unknown, revoked and mismatched credentials all fail the same way, so a caller learns nothing about
which part was wrong.

Request authentication goes through `identify`, which remembers a live key and its project in a
`CallerCache` for a few seconds (`ALIGND_AUTH_CACHE_SECONDS`), so a busy client's reads do not each pay
a database lookup. A revocation therefore takes effect at once in the server process that revoked the
key and within that many seconds in every other process and replica.
"""

import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import sessionmaker
from sqlmodel import Session, col

from alignd.db import detached_row
from alignd.errors import Conflict, NotFound, Unauthenticated
from alignd.jobs.lifecycle import RunKind
from alignd.models import ApiKeyModel, JobModel, ProjectModel, RunModel, unix_now
from alignd.runs import current_run

API_KEY_PREFIX = "sk-alignd-"
JOB_TOKEN_PREFIX = "ajt-"
DISPLAY_PREFIX_CHARS = 12
"""How much of a key listings show: "sk-alignd-ab", two random characters, enough to tell keys apart."""

_BAD_KEY = "Incorrect API key provided. Pass a valid key as `Authorization: Bearer <key>`."
_BAD_JOB_TOKEN = "invalid job token"


def hash_secret(plaintext: str) -> str:
    """SHA-256 hex: keys and tokens are high-entropy random strings, so a fast hash is enough."""
    return hashlib.sha256(plaintext.encode()).hexdigest()


def generate_api_key() -> str:
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def display_prefix(plaintext: str) -> str:
    """The part of a key safe to show. Keys not made by alignd (an admin key from the environment) may be
    short or structured, so only their first 4 characters are kept."""
    return plaintext[:DISPLAY_PREFIX_CHARS] if plaintext.startswith(API_KEY_PREFIX) else plaintext[:4]


# ---- projects and API keys -----------------------------------------------------------------------------


def create_project(
    session: Session,
    name: str,
    *,
    quota_concurrent_jobs: int | None = None,
    quota_gpus: int | None = None,
    quota_stored_bytes: int | None = None,
) -> ProjectModel:
    """Create a project; Conflict when the name is taken. Quotas left None follow the settings."""
    project = ProjectModel(
        name=name,
        quota_concurrent_jobs=quota_concurrent_jobs,
        quota_gpus=quota_gpus,
        quota_stored_bytes=quota_stored_bytes,
    )
    session.add(project)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise Conflict(f"a project named {name!r} already exists", param="name") from None
    return project


def create_api_key(
    session: Session, project_id: str | None, *, name: str, is_admin: bool = False
) -> tuple[ApiKeyModel, str]:
    """Create a key for a project (or an admin key, with no project). Returns the row and the plaintext,
    which is shown once and never stored."""
    if project_id is None and not is_admin:
        raise ValueError("a project key needs a project_id; only admin keys have none")
    if project_id is not None and session.get(ProjectModel, project_id) is None:
        raise NotFound(f"project {project_id} not found", param="project_id")
    plaintext = generate_api_key()
    key = ApiKeyModel(
        project_id=project_id,
        is_admin=is_admin,
        name=name,
        key_hash=hash_secret(plaintext),
        key_prefix=display_prefix(plaintext),
    )
    session.add(key)
    session.commit()
    return key, plaintext


def revoke_api_key(
    session: Session, key_id: str, *, project_id: str | None = None, cache: "CallerCache | None" = None
) -> ApiKeyModel:
    """Revoke a key (idempotent). With `project_id`, only that project's keys are found (NotFound else).
    With `cache`, the key is dropped from it, so this process refuses the key from the next request on."""
    key = session.get(ApiKeyModel, key_id)
    if key is None or (project_id is not None and key.project_id != project_id):
        raise NotFound(f"API key {key_id} not found", param="key_id")
    if key.revoked_at is None:
        key.revoked_at = unix_now()
        session.add(key)
        session.commit()
    if cache is not None:
        cache.forget(key.key_hash)
    return key


def list_projects(session: Session, *, after: str | None, limit: int) -> tuple[list[ProjectModel], bool]:
    """Oldest first, as OpenAI's admin API lists projects; `after` is the last id of the previous page."""
    query = select(ProjectModel)
    if after is not None:
        anchor = session.get(ProjectModel, after)
        if anchor is None:
            raise NotFound(f"no project with id {after!r}", param="after")
        query = query.where(_after(ProjectModel, anchor.created_at, anchor.id))
    query = query.order_by(col(ProjectModel.created_at), col(ProjectModel.id))
    rows = list(session.scalars(query.limit(limit + 1)))
    return rows[:limit], len(rows) > limit


def list_api_keys(
    session: Session, project_id: str, *, after: str | None, limit: int
) -> tuple[list[ApiKeyModel], bool]:
    """A project's keys, revoked ones included (marked so), oldest first."""
    if session.get(ProjectModel, project_id) is None:
        raise NotFound(f"no project with id {project_id!r}", param="project_id")
    query = select(ApiKeyModel).where(col(ApiKeyModel.project_id) == project_id)
    if after is not None:
        anchor = session.get(ApiKeyModel, after)
        if anchor is None or anchor.project_id != project_id:
            raise NotFound(f"no API key {after!r} in project {project_id}", param="after")
        query = query.where(_after(ApiKeyModel, anchor.created_at, anchor.id))
    query = query.order_by(col(ApiKeyModel.created_at), col(ApiKeyModel.id))
    rows = list(session.scalars(query.limit(limit + 1)))
    return rows[:limit], len(rows) > limit


def _after(table: type[ProjectModel] | type[ApiKeyModel], created_at: int, row_id: str) -> Any:
    """Rows past (created_at, id): seconds alone would not order rows made in the same second."""
    made, ident = col(table.created_at), col(table.id)
    return (made > created_at) | ((made == created_at) & (ident > row_id))


def authenticate(session: Session, plaintext: str) -> ApiKeyModel:
    """The live key with this plaintext; Unauthenticated for unknown and revoked keys alike."""
    key = session.execute(
        select(ApiKeyModel).where(col(ApiKeyModel.key_hash) == hash_secret(plaintext))
    ).scalar_one_or_none()
    if key is None or key.revoked_at is not None:
        raise Unauthenticated(_BAD_KEY)
    return key


@dataclass(frozen=True)
class Caller:
    """Who sent a request: the column values of its live API key and of the key's project (None for
    admin keys, and for a key whose project no longer exists).

    Rows are handed out as fresh detached instances on each call, so no ORM object is ever shared
    between requests or threads, and only the rows a request asks for are built.
    """

    key_columns: dict[str, Any]
    project_columns: dict[str, Any] | None

    @property
    def project_id(self) -> str | None:
        project_id: str | None = self.key_columns["project_id"]
        return project_id

    def key(self) -> ApiKeyModel:
        return detached_row(ApiKeyModel, self.key_columns)

    def project(self) -> ProjectModel | None:
        return None if self.project_columns is None else detached_row(ProjectModel, self.project_columns)


class CallerCache:
    """Key hash -> the `Caller` it identified, kept for `ttl_seconds` (0 turns caching off).

    Only successful lookups are kept: an unknown key always reaches the database, so a key created on
    another replica works at once and garbage keys cannot fill the cache.
    """

    def __init__(
        self, ttl_seconds: float, *, max_entries: int = 10_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl_seconds = ttl_seconds
        self.max_entries = max_entries
        self._clock = clock
        self._entries: dict[str, tuple[float, Caller]] = {}
        self._lock = threading.Lock()

    def get(self, plaintext: str) -> Caller | None:
        entry = self._entries.get(hash_secret(plaintext))
        if entry is None or entry[0] <= self._clock():
            return None
        return entry[1]

    def put(self, key_hash: str, caller: Caller) -> None:
        if self.ttl_seconds <= 0:
            return
        with self._lock:
            if len(self._entries) >= self.max_entries:
                self._entries.clear()  # more live keys than entries: they are simply looked up again
            self._entries[key_hash] = (self._clock() + self.ttl_seconds, caller)

    def forget(self, key_hash: str) -> None:
        with self._lock:
            self._entries.pop(key_hash, None)


def identify(sessions: sessionmaker[Session], plaintext: str, cache: CallerCache) -> Caller:
    """The caller behind an API key, from `cache` when it has it, else from the database (then cached).
    Unauthenticated for unknown and revoked keys, as `authenticate`."""
    cached = cache.get(plaintext)
    if cached is not None:
        return cached
    with sessions() as session:
        key = authenticate(session, plaintext)
        project = None if key.project_id is None else session.get(ProjectModel, key.project_id)
        caller = Caller(
            key_columns=key.model_dump(), project_columns=None if project is None else project.model_dump()
        )
    cache.put(key.key_hash, caller)
    return caller


def ensure_admin_key(
    session: Session, plaintext: str, *, name: str = "admin (ALIGND_ADMIN_KEY)"
) -> ApiKeyModel:
    """Register the configured admin key, once: a restart finds the existing row and changes nothing.

    A revoked admin key stays revoked (rotate by configuring a new one). Conflict if the plaintext is
    already a project's key.
    """
    key_hash = hash_secret(plaintext)
    existing = _key_by_hash(session, key_hash)
    if existing is None:
        session.add(
            ApiKeyModel(
                project_id=None,
                is_admin=True,
                name=name,
                key_hash=key_hash,
                key_prefix=display_prefix(plaintext),
            )
        )
        try:
            session.commit()
        except IntegrityError:  # another server registered it first
            session.rollback()
        existing = _key_by_hash(session, key_hash)
        if existing is None:
            raise RuntimeError("the admin key vanished while it was being registered")
    if not existing.is_admin:
        raise Conflict("ALIGND_ADMIN_KEY is a project's API key; configure a different admin key")
    return existing


def _key_by_hash(session: Session, key_hash: str) -> ApiKeyModel | None:
    return session.execute(
        select(ApiKeyModel).where(col(ApiKeyModel.key_hash) == key_hash)
    ).scalar_one_or_none()


# ---- job tokens ----------------------------------------------------------------------------------------


def new_job_token() -> tuple[str, str]:
    """A fresh job token and its hash, for callers that store the hash within a status transition."""
    plaintext = JOB_TOKEN_PREFIX + secrets.token_urlsafe(32)
    return plaintext, hash_secret(plaintext)


def issue_job_token(session: Session, job_id: str) -> str:
    """Give job `job_id`'s latest run a new token (replacing any earlier one) and return its plaintext. A
    job with no run yet gets the row of its first, as a start would make it."""
    job = session.get(JobModel, job_id, populate_existing=True)
    if job is None:
        raise NotFound(f"job {job_id} not found", param="job_id")
    plaintext, token_hash = new_job_token()
    run = current_run(session, job)
    if run is None:
        job.attempt = max(job.attempt, 1)
        run = RunModel(kind=RunKind.train, job_id=job.id, attempt=job.attempt)
    run.token_hash = token_hash
    session.add_all([job, run])
    session.commit()
    return plaintext


def authenticate_job_token(session: Session, job_id: str, plaintext: str) -> JobModel:
    """The job, if `plaintext` is its latest run's token and the job is running or pausing;
    Unauthenticated otherwise (whatever the reason)."""
    job = session.get(JobModel, job_id, populate_existing=True)
    if job is None or not job.status.is_active:
        raise Unauthenticated(_BAD_JOB_TOKEN)
    run = current_run(session, job)
    if run is None or run.token_hash is None:
        raise Unauthenticated(_BAD_JOB_TOKEN)
    if not hmac.compare_digest(run.token_hash, hash_secret(plaintext)):
        raise Unauthenticated(_BAD_JOB_TOKEN)
    return job
