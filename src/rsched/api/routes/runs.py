"""Solver runs: queue one (idempotent, behind the backup guard), read it and its progress,
list the active ones, abort one, and follow its progress live (server-sent events).

The idempotency key travels in the ``Idempotency-Key`` header: the same key for the same
program answers the run it made (200) instead of queueing a second one (201 the first
time). Aborting is for coordinators and admins of the run's program; the abort is
recorded on the run (durable) before the control store is told, so a solver stops within
about a second and keeps its best schedule as a draft.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import anyio
from fastapi import APIRouter, Body, Depends, Header, Path, Query, Request, Response, status
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from rsched.api.deps import ActorDep, ProgramId, SessionDep, SettingsDep
from rsched.api.errors import backup_failed, problem, problem_responses
from rsched.config import Settings
from rsched.domain import NotFound
from rsched.services import ops, runs
from rsched.services.access import Actor
from rsched.services.backups import BackupFailed, service_for
from rsched.services.control import ControlStore, control_store
from rsched.solver.api import MAX_TIME_LIMIT

router = APIRouter(tags=["runs"], responses=problem_responses(401, 403, 404, 422))
log = logging.getLogger("rsched.api")

EVENT_STREAM = "text/event-stream"
POLL_SECONDS = 0.5
"""How often the event stream reads the run and its progress."""
HEARTBEAT_SECONDS = 15.0
"""A comment line after this much silence keeps proxies from closing the stream."""
SSE_EVENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "one server-sent event; `data` is JSON text",
    "properties": {
        "event": {"type": "string", "enum": ["progress", "end"]},
        "data": {"type": "string", "contentMediaType": "application/json"},
        "id": {"type": "string"},
        "retry": {"type": "integer", "minimum": 0},
    },
}
"""Each event of the stream (as OpenAPI 3.2 describes server-sent events)."""
RunId = Annotated[str, Path(min_length=1, max_length=64)]
IdempotencyKey = Annotated[
    str,
    Header(
        alias="Idempotency-Key",
        min_length=8,
        max_length=128,
        pattern=runs.KEY_PATTERN.pattern,
        description="8-128 of A-Z a-z 0-9 . _ : - ; the same key gives back the same run",
    ),
]


def _store(request: Request) -> ControlStore:
    """The control store of this process (Redis when configured, else the database),
    made on first use and kept on the app (a client and its connection pool)."""
    store: ControlStore | None = getattr(request.app.state, "control_store", None)
    if store is None:
        settings = request.app.state.settings
        store = control_store(settings.redis_url, request.app.state.engine)
        request.app.state.control_store = store
    return store


StoreDep = Annotated[ControlStore, Depends(_store)]


class RunCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    algorithm: Literal["cp_sat", "greedy", "mip"] = "cp_sat"
    time_limit: float = Field(default=60.0, gt=0, le=MAX_TIME_LIMIT, description="seconds")
    workers: int = Field(default=2, ge=1, le=64, description="solver threads")
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    max_attempts: int = Field(default=3, ge=1, le=10, description="claims before it fails")


class RunPublic(BaseModel):
    id: str
    program_id: str
    state: Literal["queued", "running", "succeeded", "failed", "aborted"]
    algorithm: str
    params: dict[str, Any]
    attempt: int
    max_attempts: int
    idempotency_key: str
    requested_by: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    progress: dict[str, Any]
    best_objective: float | None
    stop_reason: str | None
    failure_reason: str | None
    abort_reason: str | None
    result_version_id: str | None = Field(description="the draft schedule the run stored")

    @field_validator("created_at", "started_at", "finished_at")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        """Times are stored in UTC; SQLite hands them back without the offset."""
        return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value

    @classmethod
    def of(cls, view: runs.RunView) -> RunPublic:
        return cls.model_validate({name: getattr(view, name) for name in cls.model_fields})


class RunProgress(BaseModel):
    run_id: str
    state: str
    attempt: int
    source: Literal["control_store", "database", "none"] = Field(
        description="live from the control store while active, else as stored with the run"
    )
    progress: dict[str, Any] | None
    best_objective: float | None
    time_limit: float | None


class AbortBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: Annotated[str, Field(min_length=1, max_length=500)]


def _progress(view: runs.RunView, store: ControlStore) -> RunProgress:
    found, source = ops.progress_of(view, store)
    limit = view.params.get("time_limit") if isinstance(view.params, dict) else None
    return RunProgress(
        run_id=view.id,
        state=view.state,
        attempt=view.attempt,
        source=source,  # type: ignore[arg-type]
        progress=found,
        best_objective=view.best_objective,
        time_limit=float(limit) if isinstance(limit, int | float) else None,
    )


def backup_guard(settings: Settings, program_id: str) -> Callable[[], None]:
    """The backup guard of writes that queue runs: a recent verified backup exists, or
    one is made (BackupFailed otherwise, which refuses the write)."""

    def guard() -> None:
        with service_for(settings) as backups:
            backups.ensure_recent(program_id=program_id, reason="run")

    return guard


@router.post(
    "/programs/{program_id}/runs",
    status_code=status.HTTP_201_CREATED,
    response_model=RunPublic,
    responses={
        200: {"model": RunPublic, "description": "a run with this key exists: that run"},
        **problem_responses(503),
    },
)
def create_run(
    program_id: ProgramId,
    idempotency_key: IdempotencyKey,
    request: Request,
    response: Response,
    session: SessionDep,
    actor: ActorDep,
    settings: SettingsDep,
    body: Annotated[RunCreate | None, Body()] = None,
) -> Any:
    """Queue a solve of the program (coordinators and admins). A recent verified backup
    must exist first (one is made when none does; 503 when that fails); a key already
    used for this program answers 200 with its run and queues nothing."""
    data = body or RunCreate()
    try:
        view, created = ops.queue_run(
            session,
            actor=actor,
            program_id=program_id,
            idempotency_key=idempotency_key,
            algorithm=data.algorithm,
            params={"time_limit": data.time_limit, "workers": data.workers, "seed": data.seed},
            max_attempts=data.max_attempts,
            guard=backup_guard(settings, program_id),
        )
    except BackupFailed as exc:
        return backup_failed(request, exc)
    if not created:
        response.status_code = status.HTTP_200_OK
    return RunPublic.of(view)


@router.get("/runs/active")
def list_active_runs(
    session: SessionDep,
    actor: ActorDep,
    program_id: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
) -> list[RunPublic]:
    """Queued and running runs, oldest first: of one program, or of every program the
    caller sees (an admin: all)."""
    return [RunPublic.of(v) for v in runs.list_active(session, actor=actor, program_id=program_id)]


@router.get("/runs/{run_id}")
def get_run(run_id: RunId, session: SessionDep, actor: ActorDep) -> RunPublic:
    return RunPublic.of(runs.get_run(session, actor=actor, run_id=run_id))


@router.get("/runs/{run_id}/progress")
def get_run_progress(
    run_id: RunId, session: SessionDep, actor: ActorDep, store: StoreDep
) -> RunProgress:
    """The latest progress: live from the control store while the run is queued or
    running, else the last progress stored with the run."""
    return _progress(runs.get_run(session, actor=actor, run_id=run_id), store)


@router.post("/runs/{run_id}/abort", response_model=RunPublic, responses=problem_responses(409))
def abort_run(
    run_id: RunId,
    body: AbortBody,
    request: Request,
    session: SessionDep,
    actor: ActorDep,
    store: StoreDep,
) -> Any:
    """Abort a queued or running run (coordinators and admins of its program), with a
    reason; audited. A running solve stops within about a second and its best schedule is
    stored as a draft. A finished run answers 409, another program's run 404; both are
    audited and change nothing."""
    try:
        view = runs.request_abort(session, actor=actor, run_id=run_id, reason=body.reason)
    except runs.RunConflict as exc:
        session.commit()  # keep the refusal's audit row
        return problem(request, 409, kind="conflict", title="Conflict", detail=str(exc))
    except NotFound:
        session.commit()  # a foreign run's refusal is audited too
        raise
    session.commit()  # durable first: the run row is the record of the abort
    if view.state == "running":
        try:
            store.request_abort(view.id, body.reason)
        except Exception as exc:  # the worker still sees the durable flag at its heartbeat
            log.warning(
                "control store unreachable: the abort reaches the solver at its next heartbeat",
                extra={"run_id": view.id, "error": type(exc).__name__},
            )
    return RunPublic.of(view)


# ------------------------------------------------------------------- event stream


@dataclass(frozen=True, slots=True)
class _Snapshot:
    state: str | None
    """None: the run is gone (or no longer visible)."""
    progress: RunProgress | None
    end: dict[str, Any] | None


def _snapshot(
    factory: sessionmaker[Session], store: ControlStore, actor: Actor, run_id: str
) -> _Snapshot:
    with factory() as session:  # read-only: closed without a commit
        try:
            view = runs.get_run(session, actor=actor, run_id=run_id)
        except NotFound:
            return _Snapshot(None, None, {"run_id": run_id, "state": None})
    progress = _progress(view, store)
    end = None
    if view.state not in runs.ACTIVE:
        end = {
            "run_id": view.id,
            "state": view.state,
            "stop_reason": view.stop_reason,
            "failure_reason": view.failure_reason,
            "abort_reason": view.abort_reason,
            "best_objective": view.best_objective,
            "result_version_id": view.result_version_id,
        }
    return _Snapshot(view.state, progress, end)


def sse(event: str, data: dict[str, Any]) -> str:
    """One server-sent event (JSON data on one line)."""
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'), default=str)}\n\n"


async def _events(
    request: Request,
    factory: sessionmaker[Session],
    store: ControlStore,
    actor: Actor,
    run_id: str,
) -> AsyncIterator[str]:
    why = "the client left"
    try:
        yield f"retry: {int(POLL_SECONDS * 4000)}\n: progress of run {run_id}\n\n"
        last: dict[str, Any] | None = None
        quiet_since = time.monotonic()
        while not await request.is_disconnected():
            snap = await run_in_threadpool(_snapshot, factory, store, actor, run_id)
            if snap.progress is not None:
                doc = snap.progress.model_dump(mode="json")
                if doc != last:
                    last = doc
                    quiet_since = time.monotonic()
                    yield sse("progress", doc)
            if snap.end is not None:
                why = "the run ended"
                yield sse("end", snap.end)
                return
            if time.monotonic() - quiet_since >= HEARTBEAT_SECONDS:
                quiet_since = time.monotonic()
                yield ": heartbeat\n\n"
            await anyio.sleep(POLL_SECONDS)
    finally:
        log.info("event stream closed: %s", why, extra={"run_id": run_id})


@router.get(
    "/runs/{run_id}/events",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": (
                "text/event-stream: `event: progress` (JSON like GET …/progress) whenever "
                "it changes, `event: end` (the final state and result) when the run leaves "
                "queued/running, a `: heartbeat` comment after 15 s of silence"
            ),
            "content": {EVENT_STREAM: {"schema": SSE_EVENT_SCHEMA}},
        }
    },
)
def run_events(
    run_id: RunId, request: Request, session: SessionDep, actor: ActorDep, store: StoreDep
) -> StreamingResponse:
    """Live progress as server-sent events until the run finishes or the client leaves.
    The run is read every 0.5 s; the stream ends after the `end` event."""
    runs.get_run(session, actor=actor, run_id=run_id)  # 404 before the stream starts
    factory: sessionmaker[Session] = request.app.state.sessionmaker
    return StreamingResponse(
        _events(request, factory, store, actor, run_id),
        media_type=EVENT_STREAM,
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
