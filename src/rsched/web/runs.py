"""Runs: start one (program, solver, time limit; the program's horizon is the range),
watch its live progress from a server-sent event stream, abort it with a reason, and
read the result's report.

A start form carries its own idempotency key (made when the form is shown), so sending
it twice queues one run: :func:`rsched.services.ops.queue_run` answers the run the key
already made, and a new run waits for a recent verified backup (made when none exists),
as through the API. An abort is recorded on the run first (durable), then told to the
control store; a second abort of the same run (a double submit) does nothing more.
"""

from __future__ import annotations

import asyncio
import json
import math
import secrets
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from rsched.config import Settings
from rsched.domain import NotFound, ScheduleStatus
from rsched.domain.errors import InvalidInput
from rsched.services import catalog, ops, runs, schedules
from rsched.services.access import Actor
from rsched.services.backups import BackupFailed, service_for
from rsched.services.control import ControlStore, control_store
from rsched.solver.api import MAX_TIME_LIMIT
from rsched.web.core import PAGE_HEADERS, Ctx, authenticate, field_errors, route
from rsched.web.pages import program_context
from rsched.web.report import report_view

ALGORITHMS = (
    ("cp_sat", "CP-SAT (optimal, proves a bound)"),
    ("greedy", "Greedy (fast, no bound)"),
    ("mip", "MIP (HiGHS)"),
)
DEFAULT_TIME_LIMIT = 60
MAX_WORKERS = 16
POLL_SECONDS = 0.5
STREAM_SECONDS = 300.0
"""An event stream ends after this long; the browser reconnects (and re-authenticates)."""
HEARTBEAT_SECONDS = 15.0


def store_of(app_state: Any, settings: Settings) -> ControlStore:
    """The app's control store (made once, shared with the API routes)."""
    store: ControlStore | None = getattr(app_state, "control_store", None)
    if store is None:
        store = control_store(settings.redis_url, app_state.engine)
        app_state.control_store = store
    return store


def _backup_guard(settings: Settings, program_id: str) -> Callable[[], None]:
    def guard() -> None:
        with service_for(settings) as backups:
            backups.ensure_recent(program_id=program_id, reason="run")

    return guard


def _managed_programs(ctx: Ctx) -> list[tuple[str, str]]:
    items = catalog.list_programs(ctx.session, actor=ctx.actor, limit=500).items
    return [
        (p.id, f"{p.name} ({p.horizon_start} to {p.horizon_end})")
        for p in items
        if ctx.manages(p.id)
    ]


def _form_values(ctx: Ctx, pid: str) -> dict[str, str]:
    return {
        "program": pid,
        "algorithm": "cp_sat",
        "time_limit": str(DEFAULT_TIME_LIMIT),
        "workers": "2",
        "seed": "0",
        "key": f"web-{secrets.token_urlsafe(18)}",
    }


def _runs_page(
    ctx: Ctx, pid: str, values: dict[str, str], errors: dict[str, str], status: int = 200
) -> Response:
    base = program_context(ctx, pid)
    if not base["manages"]:
        raise NotFound("runs are for the program's coordinators")
    active = runs.list_active(ctx.session, actor=ctx.actor, program_id=pid)
    store = store_of(ctx.request.app.state, ctx.settings)
    live = [(r, ops.progress_of(r, store)[0] or {}) for r in active]
    versions = schedules.list_versions(ctx.session, actor=ctx.actor, program_id=pid, limit=20)
    results = [v for v in versions.items if v.run_id is not None]
    if status == 422:
        ctx.rollback = True
    return ctx.render(
        "runs.html",
        status=status,
        **base,
        values=values,
        errors=errors,
        programs=_managed_programs(ctx),
        algorithms=ALGORITHMS,
        active=live,
        results=results,
        max_time_limit=int(MAX_TIME_LIMIT),
    )


def runs_page(ctx: Ctx) -> Response:
    pid = ctx.path("program_id")
    return _runs_page(ctx, pid, _form_values(ctx, pid), {})


def _number(
    raw: str, field: str, errors: dict[str, str], *, low: float, high: float, whole: bool
) -> float:
    try:
        value = float(raw)
    except ValueError:
        errors[field] = "Enter a number."
        return 0.0
    if not math.isfinite(value) or (whole and value != int(value)):
        errors[field] = "Enter a whole number." if whole else "Enter a number."
    elif not low <= value <= high:
        errors[field] = f"Enter a number from {low:g} to {high:g}."
    return value


def start_run(ctx: Ctx) -> Response:
    pid = ctx.path("program_id")
    values = {k: ctx.field(k) for k in ("program", "algorithm", "time_limit", "workers", "seed")}
    values["key"] = ctx.field("key")
    errors: dict[str, str] = {}
    managed = dict(_managed_programs(ctx))
    if values["program"] not in managed:
        errors["program"] = "Choose one of the programs you coordinate."
    if values["algorithm"] not in dict(ALGORITHMS):
        errors["algorithm"] = "Choose a solver from the list."
    limit = _number(
        values["time_limit"], "time_limit", errors, low=1, high=MAX_TIME_LIMIT, whole=False
    )
    workers = _number(values["workers"], "workers", errors, low=1, high=MAX_WORKERS, whole=True)
    seed = _number(values["seed"], "seed", errors, low=0, high=2**31 - 1, whole=True)
    if not runs.KEY_PATTERN.match(values["key"]):
        values["key"] = f"web-{secrets.token_urlsafe(18)}"
        errors["form"] = "The form was damaged; check the values and start again."
    if errors:
        return _runs_page(ctx, pid, values, errors, status=422)
    target = values["program"]
    try:
        view, _created = ops.queue_run(
            ctx.session,
            actor=ctx.actor,
            program_id=target,
            idempotency_key=values["key"],
            algorithm=values["algorithm"],
            params={"time_limit": limit, "workers": int(workers), "seed": int(seed)},
            guard=_backup_guard(ctx.settings, target),
        )
    except InvalidInput as exc:
        names = {"params": "time_limit", "time_limit": "time_limit", "workers": "workers"}
        names |= {"seed": "seed", "algorithm": "algorithm", "idempotency_key": "form"}
        return _runs_page(ctx, pid, values, field_errors(exc, names), status=422)
    except BackupFailed:
        ctx.rollback = True
        return ctx.render(
            "error.html",
            status=503,
            title="No backup could be made",
            detail="A run starts only after a recent verified backup exists; making one "
            "failed, so nothing was queued. Tell the operator (see the server log).",
        )
    return ctx.redirect(f"/app/runs/{view.id}", msg="run_started")


# ----------------------------------------------------------------------- one run


def _elapsed(view: runs.RunView, progress: dict[str, Any]) -> float | None:
    value = progress.get("elapsed")
    if isinstance(value, int | float):
        return float(value)
    if view.started_at is not None:
        started = view.started_at if view.started_at.tzinfo else view.started_at.replace(tzinfo=UTC)
        finished = view.finished_at or datetime.now(UTC)
        finished = finished if finished.tzinfo else finished.replace(tzinfo=UTC)
        return max(0.0, (finished - started).total_seconds())
    return None


def snapshot(
    view: runs.RunView, store: ControlStore, result: dict[str, Any] | None = None
) -> dict[str, Any]:
    """What the progress panel shows (and the event stream sends): the live progress, and
    for a finished run the figures of its result where the progress has none."""
    progress, source = ops.progress_of(view, store)
    progress = dict(progress or {})
    final = result or {}

    def pick(key: str, final_key: str, *fallbacks: Any) -> Any:
        order = [progress.get(key), final.get(final_key)]
        if view.state not in runs.ACTIVE:
            order.reverse()  # a finished run: its result's own figures first
        for value in (*order, *fallbacks):
            if value is not None:
                return value
        return None

    return {
        "state": view.state,
        "objective": pick("objective", "objective", view.best_objective),
        "bound": pick("bound", "bound"),
        "gap": pick("gap", "gap"),
        "elapsed": pick("elapsed", "wall_seconds", _elapsed(view, {})),
        "solutions": pick("solutions", "solutions"),
        "phase": progress.get("phase"),
        "attempt": view.attempt,
        "source": source,
        "finished": view.state not in runs.ACTIVE,
        "result_version_id": view.result_version_id,
    }


def _run_page(
    ctx: Ctx, run_id: str, errors: dict[str, str] | None = None, reason: str = ""
) -> Response:
    view = runs.get_run(ctx.session, actor=ctx.actor, run_id=run_id)
    base = program_context(ctx, view.program_id)
    if not base["manages"]:
        raise NotFound(f"run {run_id!r} not found")
    store = store_of(ctx.request.app.state, ctx.settings)
    result = None
    report = None
    if view.result_version_id is not None:
        result = schedules.get_version(
            ctx.session,
            actor=ctx.actor,
            program_id=view.program_id,
            version_id=view.result_version_id,
        )
        report = report_view(result.report)
    status = 422 if errors else 200
    if errors:
        ctx.rollback = True
    return ctx.render(
        "run.html",
        status=status,
        **base,
        run=view,
        live=snapshot(view, store, result.report if result is not None else None),
        result=result,
        report=report,
        errors=errors or {},
        reason=reason,
        active=view.state in runs.ACTIVE,
        draft=ScheduleStatus.DRAFT,
    )


def run_page(ctx: Ctx) -> Response:
    return _run_page(ctx, ctx.path("run_id"))


def abort_run(ctx: Ctx) -> Response:
    run_id = ctx.path("run_id")
    reason = ctx.field("reason")
    view = runs.get_run(ctx.session, actor=ctx.actor, run_id=run_id)
    if view.abort_reason is not None or view.state not in runs.ACTIVE:
        return ctx.redirect(f"/app/runs/{run_id}", msg="abort_already")  # acts once
    if not reason:
        return _run_page(ctx, run_id, {"reason": "Say why the run is stopped."}, reason)
    if len(reason) > 500:
        return _run_page(ctx, run_id, {"reason": "At most 500 characters."}, reason)
    try:
        view = runs.request_abort(ctx.session, actor=ctx.actor, run_id=run_id, reason=reason)
    except runs.RunConflict:
        ctx.commit_now()  # keep the refusal's audit row
        return ctx.redirect(f"/app/runs/{run_id}", msg="abort_already")
    ctx.commit_now()  # durable first: the run row is the record of the abort
    if view.state == "running":
        try:
            store_of(ctx.request.app.state, ctx.settings).request_abort(view.id, reason)
        except Exception:  # the worker still sees the durable flag at its next heartbeat
            pass
    return ctx.redirect(f"/app/runs/{run_id}", msg="abort_sent")


# ----------------------------------------------------------------------- the stream


def _sse(event: str, data: dict[str, Any]) -> str:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'), default=str)}\n\n"


def _read(
    factory: sessionmaker[Session], store: ControlStore, actor: Actor, run_id: str
) -> dict[str, Any] | None:
    with factory() as session:  # read-only: closed without a commit
        try:
            view = runs.get_run(session, actor=actor, run_id=run_id)
        except NotFound:
            return None
    return snapshot(view, store)


async def run_events(request: Request) -> Response:
    """``text/event-stream``: ``progress`` whenever the figures change, ``done`` when the
    run has finished. Signed-in coordinators of the run's program only; no refresh here
    (401: the page reloads, which renews the session)."""
    run_id = str(request.path_params["run_id"])
    settings: Settings = request.app.state.settings
    factory: sessionmaker[Session] = request.app.state.sessionmaker

    def who() -> Actor | None:
        with factory() as session:
            actor = authenticate(session, settings, request, refresh=False).actor
            if actor is not None:
                view = runs.get_run(session, actor=actor, run_id=run_id)
                if not ops_visible(actor, view.program_id):
                    raise NotFound(f"run {run_id!r} not found")
            return actor

    try:
        actor = await run_in_threadpool(who)
    except NotFound:
        return PlainTextResponse("not found", status_code=404, headers=PAGE_HEADERS)
    if actor is None:
        return PlainTextResponse("sign in again", status_code=401, headers=PAGE_HEADERS)
    store = store_of(request.app.state, settings)

    async def stream() -> AsyncIterator[str]:
        yield "retry: 2000\n\n"
        started = time.monotonic()
        quiet = started
        last: dict[str, Any] | None = None
        while not await request.is_disconnected():
            snap = await run_in_threadpool(_read, factory, store, actor, run_id)
            if snap is None:
                yield _sse("done", {"state": None})
                return
            if snap != last:
                last = snap
                quiet = time.monotonic()
                yield _sse("progress", snap)
            if snap["finished"]:
                yield _sse("done", snap)
                return
            now = time.monotonic()
            if now - started > STREAM_SECONDS:
                return  # the browser reconnects after `retry`
            if now - quiet > HEARTBEAT_SECONDS:
                quiet = now
                yield ": heartbeat\n\n"
            await asyncio.sleep(POLL_SECONDS)

    headers = {**PAGE_HEADERS, "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)


def ops_visible(actor: Actor, program_id: str) -> bool:
    role = actor.role_in(program_id)
    return role is not None and role.value in ("admin", "coordinator")


ROUTES = [
    route("/app/p/{program_id}/runs", runs_page),
    route("/app/p/{program_id}/runs", start_run, methods=("POST",)),
    route("/app/runs/{run_id}", run_page),
    route("/app/runs/{run_id}/abort", abort_run, methods=("POST",)),
    Route("/app/runs/{run_id}/events", run_events, methods=["GET"], include_in_schema=False),
]
