"""The FastAPI application factory: routers, error envelope, and the lifespan that opens the
database (migrating an empty one), the object store and the admin key."""

import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from alignd import __version__, auth
from alignd.api import (
    admin,
    chat,
    errors,
    evals,
    files,
    health,
    integrations,
    internal,
    jobs,
    models,
    storage,
    webhooks,
)
from alignd.api.access_log import redact_signatures
from alignd.api.fast_path import JobStatusFastPath
from alignd.api.limits import RequestLimits
from alignd.api.ratelimit import FailedAuthGuard
from alignd.api.spec import AligndAPI
from alignd.chat.models import LoadedModels
from alignd.config import Settings, get_settings
from alignd.controller import Controller
from alignd.db import check_schema, loop_read_engine, make_engine, make_private_dir, session_factory
from alignd.deps import AppState
from alignd.integrations.worker import start_worker
from alignd.launchers import Launcher
from alignd.launchers.registry import build_launcher
from alignd.leader import Lease
from alignd.metrics import Metrics, RequestMetrics
from alignd.readiness import readiness_from_settings
from alignd.storage import store_from_settings
from alignd.sweeper import Sweeper
from alignd.webhooks.dispatcher import start_dispatcher


def build_state(settings: Settings) -> AppState:
    make_private_dir(settings.resolved_data_dir())
    engine = make_engine(settings.resolved_database_url())
    check_schema(engine)
    sessions = session_factory(engine)
    if settings.admin_key is not None:
        with sessions() as session:
            auth.ensure_admin_key(session, settings.admin_key.get_secret_value())
    store = store_from_settings(settings)
    return AppState(
        settings=settings,
        engine=engine,
        sessions=sessions,
        store=store,
        metrics=Metrics(sessions),
        callers=auth.CallerCache(settings.auth_cache_seconds),
        readiness=readiness_from_settings(settings, engine=engine, store=store),
        chat_models=LoadedModels(settings.chat_loaded_models),
        loop_reads=loop_read_engine(settings.resolved_database_url()),
    )


def build_controller(state: AppState, launcher: Launcher | None = None) -> Controller:
    settings = state.settings
    return Controller(
        sessions=state.sessions,
        launcher=launcher or build_launcher(settings),
        store=state.store,
        settings=settings,
        pass_seconds=state.metrics.controller_seconds,
        lease=Lease(state.sessions, settings.leader_lease_seconds) if settings.leader_election else None,
        sweeper=Sweeper(
            state.sessions, state.store, settings.sweeper_grace_seconds, removed=state.metrics.swept
        ),
    )


def create_app(settings: Settings | None = None) -> FastAPI:
    resolved = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        redact_signatures()
        state = build_state(resolved)
        app.state.alignd = state
        stop = threading.Event()
        loop = None
        if resolved.run_controller:
            loop = threading.Thread(
                target=build_controller(state).run, args=(stop,), name="alignd-controller", daemon=True
            )
            loop.start()
        # Webhooks go out from every replica that runs a controller: claims keep two from sending one attempt.
        dispatcher = (
            start_dispatcher(state.sessions, resolved, stop, state.metrics.webhook_deliveries)
            if resolved.run_controller
            else None
        )
        # Integrations too: each run is claimed before a worker feeds it.
        mirror = start_worker(state.sessions, resolved, stop) if resolved.run_controller else None
        try:
            yield
        finally:
            stop.set()
            if loop is not None:
                loop.join(timeout=10)
            if dispatcher is not None:
                dispatcher.join(timeout=resolved.webhook_timeout_seconds + 5)
            if mirror is not None:
                mirror.join(timeout=resolved.integrations_timeout_seconds + 5)
            state.engine.dispose()
            if state.loop_reads is not None:
                state.loop_reads.dispose()

    app = AligndAPI(
        title="alignd",
        version=__version__,
        lifespan=lifespan,
        description="Self-hosted DPO alignment with an OpenAI-compatible fine-tuning API.",
    )
    errors.install(app)
    # Outermost last. The fast path answers inside the limits (so it never sees unstorable ids or a
    # blocked address); RequestMetrics counts every answer, the limits' refusals too.
    if resolved.status_fast_path:
        app.add_middleware(JobStatusFastPath)
    app.add_middleware(RequestLimits, max_json_body_bytes=resolved.max_json_body_bytes)
    app.add_middleware(
        FailedAuthGuard,
        limit=resolved.auth_failure_limit,
        window_seconds=resolved.auth_failure_window_seconds,
    )
    app.add_middleware(RequestMetrics)

    for router in (
        health.router,
        files.router,
        jobs.router,
        models.router,
        chat.router,
        admin.router,
        internal.router,
        storage.router,
        webhooks.router,
        integrations.router,
        evals.router,
    ):
        app.include_router(router)
    return app
