"""The MCP server: tools and a resource for agents, each calling the same service
functions as the HTTP API (ARCHITECTURE.md: one way to do each thing).

Who the caller is comes from an :data:`ActorSource`, asked on every call: over stdio (and
in tests) the user of an API token, resolved on each call so a revoked token stops at
once; over HTTP the actor the bearer check in front of the app resolved for this request
(:mod:`rsched.mcp.transport`). Every service authorizes that actor itself, so a resident
gets ``forbidden`` from coordinator tools and another program's objects answer
``not-found`` exactly like objects that do not exist.

Results are pydantic models (structured content, with an output schema per tool).
Every failure is a tool error result (``isError``) with structured content
``{"error": {"kind", "message", "errors": [{"path", "message"}], "detail"}}`` and the
same text, never a traceback:

| cause | kind |
|---|---|
| an argument missing or of the wrong type (before the tool runs) | ``invalid-input`` |
| ``InvalidInput`` from a service | ``invalid-input`` |
| ``NotFound`` (also another program's object) | ``not-found`` |
| ``Forbidden`` (the role may not do this) | ``forbidden`` |
| ``Unauthenticated`` (revoked, expired or unknown API token) | ``unauthenticated`` |
| ``RunConflict``, ``PublishRefused`` (report in ``detail``), ``RestoreRefused`` | ``conflict`` |
| ``BackupFailed`` (the write was refused because no backup could be made) | ``backup-failed`` |
| ``RateLimited`` | ``rate-limited`` |
| ``Infeasible`` | ``infeasible`` |
| anything else | ``internal``: a generic message and an error id; the traceback goes to the log |

``invalid-input`` names each bad field in ``errors`` (arguments are checked against the
tool's input schema before it runs, so a bad call changes nothing).

Every tool works in its own unit of work: reads are rolled back, writes committed only
when the tool succeeds (refusals that services audit are committed too, as the API does).
Database work runs in a worker thread, so a slow query never blocks the event loop of
the API process the HTTP transport is mounted in.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal, Protocol, TypeVar

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import (
    ResourceError,
    ResourceNotFoundError,
    ToolError,
    UnexpectedToolError,
)
from mcp_types import CallToolResult, InputRequiredResult, TextContent, ToolAnnotations
from pydantic import BaseModel, Field, ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from rsched import __version__
from rsched.config import Settings
from rsched.db.mapping import load_program_data
from rsched.domain import Assignment, AssignmentSource, ScheduleStatus
from rsched.domain.errors import FieldError, Infeasible, InvalidInput, NotFound, RschedError
from rsched.rules.report import ValidationReport, validate
from rsched.services import audit, ops, publishing, runs, schedules, swaps
from rsched.services.access import Actor, Forbidden, Unauthenticated
from rsched.services.api_tokens import actor_from_api_token
from rsched.services.auth import RateLimited
from rsched.services.backups import (
    REASON_MAX,
    BackupFailed,
    BackupRecord,
    BackupService,
    RestoreRefused,
)
from rsched.services.backups import service_for as backup_service_for
from rsched.services.control import ControlStore
from rsched.services.schemas import VersionPublic
from rsched.solver.api import MAX_TIME_LIMIT

log = logging.getLogger("rsched.mcp")

Ctx = Context[Any, Any]
T = TypeVar("T")

SERVER_NAME = "rsched"
PROGRESS_URI = "solver://runs/{run_id}/progress"
POLL_SECONDS = 0.5
MAX_WAIT_SECONDS = 3600.0
PAGE = 500
"""Assignments read per page when a tool validates a stored version."""
MAX_CONFLICTS = 1000

INSTRUCTIONS = (
    "Residency scheduling (rsched). Generate schedules with generate_schedule (it queues a "
    "solver run behind a recent backup; pass wait_seconds to follow it with progress "
    "notifications, or read solver://runs/{run_id}/progress). Check a stored version with "
    "validate_schedule, detect_conflicts and get_constraint_metrics. Publishing needs a "
    "one-time publish token that a coordinator obtains for the draft; swaps go through "
    "analyze_swap_candidates then execute_swap. Errors are tool results with "
    "structuredContent.error = {kind, message, errors[{path, message}]}."
)


# --------------------------------------------------------------------- the caller


class ActorSource(Protocol):
    """Who is calling: asked once per tool call or resource read, with the call's own
    database session. Raises ``Unauthenticated`` when nobody valid is."""

    def __call__(self, session: Session, ctx: Ctx) -> Actor: ...


def token_actor(token: str) -> ActorSource:
    """The user of an API token, read from the database on every call (stdio, tests)."""

    def source(session: Session, ctx: Ctx) -> Actor:
        return actor_from_api_token(session, token)

    return source


# --------------------------------------------------------------------- dependencies


@dataclass(frozen=True, kw_only=True)
class McpDeps:
    """What the tools need; no other state (the HTTP app may run in many processes)."""

    settings: Settings
    factory: sessionmaker[Session]
    store: ControlStore
    actor_of: ActorSource
    backups: Callable[[], BackupService] | None = None
    """Makes the backup service (default: the configured database's, in data_dir)."""
    poll_seconds: float = POLL_SECONDS

    def backup_service(self) -> BackupService:
        return self.backups() if self.backups is not None else backup_service_for(self.settings)


class _Guard:
    """The publishing ``BackupGuard`` over a fresh backup service (closed after use)."""

    def __init__(self, deps: McpDeps) -> None:
        self._deps = deps

    def ensure_recent(self, *, program_id: str, reason: str) -> str:
        with self._deps.backup_service() as service:
            return service.ensure_recent(program_id=program_id, reason=reason)


# ---------------------------------------------------------------------- results


class FieldProblem(BaseModel):
    path: str = Field(description="the argument (or the field inside it) that is wrong")
    message: str


ProblemKind = Literal[
    "invalid-input",
    "not-found",
    "forbidden",
    "unauthenticated",
    "conflict",
    "backup-failed",
    "rate-limited",
    "infeasible",
    "unknown-tool",
    "internal",
]


class ToolProblem(BaseModel):
    """The ``error`` of a tool error result."""

    kind: ProblemKind
    message: str
    errors: list[FieldProblem] = Field(default_factory=list)
    detail: dict[str, Any] | None = None


class RunInfo(BaseModel):
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
    best_objective: float | None
    stop_reason: str | None
    failure_reason: str | None
    abort_reason: str | None
    result_version_id: str | None = Field(description="the draft schedule the run stored")

    @classmethod
    def of(cls, view: runs.RunView) -> RunInfo:
        return cls.model_validate({name: getattr(view, name) for name in cls.model_fields})


class RunProgress(BaseModel):
    run_id: str
    state: str
    attempt: int
    source: Literal["control_store", "database", "none"] = Field(
        description="live from the control store while active, else as stored with the run"
    )
    progress: dict[str, Any] | None = Field(
        description="elapsed, solutions, objective, bound, gap, iterations, phase"
    )
    best_objective: float | None
    time_limit: float | None
    finished: bool
    result_version_id: str | None


class GenerateResult(BaseModel):
    run: RunInfo
    created: bool = Field(description="False: a run with this idempotency key existed")
    backup_checked: bool = Field(
        description="the backup guard ran: a recent verified backup existed or was made "
        "before the run was queued (False when a run with this key existed already)"
    )
    progress: RunProgress = Field(description="as it was when the tool returned")
    waited_seconds: float
    note: str


class ActiveSolver(BaseModel):
    run: RunInfo
    progress: RunProgress


class ActiveSolvers(BaseModel):
    runs: list[ActiveSolver]
    total: int


class AbortResult(BaseModel):
    run: RunInfo
    solver_signalled: bool = Field(
        description="the control store was told at once (else the worker sees the durable "
        "abort at its next heartbeat)"
    )


class Conflict(BaseModel):
    rule: str
    severity: str
    message: str
    person: str | None
    slot: str | None
    start: str | None
    end: str | None
    value: float | None
    limit: float | None


class ValidationResult(BaseModel):
    program_id: str
    version_id: str
    status: str
    assignments: int
    ok: bool = Field(description="no hard violation")
    violations: int
    warnings: int
    coverage: float
    required_positions: int
    staffed_positions: int
    objective: int
    violations_by_rule: dict[str, int]
    warnings_by_rule: dict[str, int]
    penalties: dict[str, int]


class ConflictReport(BaseModel):
    program_id: str
    version_id: str
    total: int = Field(description="hard violations (and warnings when asked) found")
    by_rule: dict[str, int]
    conflicts: list[Conflict]
    truncated: bool = Field(description="more than `limit` were found; the first are listed")


class RuleMetric(BaseModel):
    rule: str
    violations: int
    warnings: int
    seconds: float = Field(description="time the validator spent on the rule")


class FairnessSpread(BaseModel):
    category: str
    pgy: int | None
    min: int
    max: int
    spread: int


class ConstraintMetrics(BaseModel):
    program_id: str
    version_id: str
    status: str
    coverage: float
    objective: int
    penalties: dict[str, int]
    rules: list[RuleMetric]
    fairness: list[FairnessSpread]


class HealthResult(BaseModel):
    status: Literal["ok", "degraded"]
    version: str
    database: Literal["ok", "unreachable"]
    control_store: Literal["ok", "unreachable"]


class BackupInfo(BaseModel):
    id: str
    program_id: str | None
    name: str
    reason: str
    sha256: str
    size_bytes: int
    encrypted: bool
    protected: bool
    created_at: datetime
    verified_at: datetime | None

    @classmethod
    def of(cls, record: BackupRecord) -> BackupInfo:
        return cls(
            id=record.id,
            program_id=record.program_id,
            name=record.name,
            reason=record.reason,
            sha256=record.sha256,
            size_bytes=record.size_bytes,
            encrypted=record.encrypted,
            protected=record.protected,
            created_at=record.created_at,
            verified_at=record.verified_at,
        )


class BackupList(BaseModel):
    backups: list[BackupInfo]
    total: int


class PublishResult(BaseModel):
    program_id: str
    version_id: str
    staging_id: str
    superseded: list[str]
    diff: dict[str, Any]
    gate: dict[str, Any]


class RollbackResult(BaseModel):
    program_id: str
    restored_version_id: str | None = Field(
        description="the version active again (None: nothing was active before)"
    )


# ---------------------------------------------------------------- argument types

ProgramId = Annotated[str, Field(min_length=1, max_length=64, description="the program's id")]
ObjectId = Annotated[str, Field(min_length=1, max_length=64)]
Reason = Annotated[str, Field(min_length=1, max_length=500, description="why (audited)")]


# ------------------------------------------------------------------ error mapping


def _field_problems(exc: ValidationError) -> list[FieldProblem]:
    """Each bad argument by name, without echoing the values given."""
    out: list[FieldProblem] = []
    for err in exc.errors(include_url=False, include_input=False):
        path = ""
        for part in err.get("loc", ()):
            path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
        out.append(FieldProblem(path=path or "arguments", message=str(err.get("msg", "invalid"))))
    return out


def problem_of(exc: BaseException) -> ToolProblem:
    """The tool error for an exception (the one mapping of every tool)."""
    if isinstance(exc, ValidationError):
        found = _field_problems(exc)
        return ToolProblem(
            kind="invalid-input",
            message=f"{len(found)} problem{'s' if len(found) != 1 else ''} with the arguments: "
            + "; ".join(f"{p.path}: {p.message}" for p in found),
            errors=found,
        )
    if isinstance(exc, InvalidInput):
        found = [FieldProblem(path=e.path, message=e.message) for e in exc.errors]
        return ToolProblem(
            kind="invalid-input",
            message=f"{len(found)} problem{'s' if len(found) != 1 else ''} with the input: "
            + "; ".join(f"{p.path}: {p.message}" for p in found),
            errors=found,
        )
    if isinstance(exc, NotFound):
        return ToolProblem(kind="not-found", message=str(exc))
    if isinstance(exc, Forbidden):
        return ToolProblem(kind="forbidden", message=str(exc))
    if isinstance(exc, Unauthenticated):
        return ToolProblem(kind="unauthenticated", message=str(exc))
    if isinstance(exc, publishing.PublishRefused):
        return ToolProblem(kind="conflict", message=str(exc), detail=dict(exc.report))
    if isinstance(exc, runs.RunConflict | RestoreRefused):
        return ToolProblem(kind="conflict", message=str(exc))
    if isinstance(exc, BackupFailed):
        return ToolProblem(
            kind="backup-failed",
            message="no recent backup could be made or verified, so nothing was changed",
        )
    if isinstance(exc, RateLimited):
        return ToolProblem(
            kind="rate-limited", message=str(exc), detail={"retry_after": exc.retry_after}
        )
    if isinstance(exc, Infeasible):
        return ToolProblem(kind="infeasible", message=str(exc), detail={"reasons": exc.reasons})
    return internal(exc)


def internal(exc: BaseException) -> ToolProblem:
    """A fault of ours: logged with its traceback under an error id, never sent."""
    error_id = uuid.uuid4().hex[:12]
    log.error("tool failed unexpectedly", exc_info=exc, extra={"error_id": error_id})
    return ToolProblem(
        kind="internal",
        message=f"an unexpected error occurred; quote error id {error_id} when reporting it",
    )


def tool_problem(exc: ToolError) -> ToolProblem:
    """The tool error behind one of the SDK's ``ToolError`` wrappers: the arguments
    failing the input schema (a plain ``ToolError`` from a ``ValidationError``), a
    service error the tool raised (an ``UnexpectedToolError`` from it), an unknown tool
    (no cause), or anything else (internal, logged)."""
    cause = exc.__cause__
    if cause is None:
        if not isinstance(exc, UnexpectedToolError) and str(exc).startswith("Unknown tool"):
            return ToolProblem(kind="unknown-tool", message=str(exc))
        return internal(exc)
    if isinstance(cause, ValidationError) and not isinstance(exc, UnexpectedToolError):
        return problem_of(cause)  # the caller's arguments
    seen: BaseException | None = cause
    while seen is not None:  # through the SDK's wrappers of nested failures
        if isinstance(seen, RschedError):
            return problem_of(seen)
        if not isinstance(seen, ToolError):
            break
        seen = seen.__cause__
    return internal(cause)


def error_result(problem: ToolProblem) -> CallToolResult:
    lines = [f"{problem.kind}: {problem.message}"]
    return CallToolResult(
        content=[TextContent(type="text", text="\n".join(lines))],
        structured_content={"error": problem.model_dump(mode="json")},
        is_error=True,
    )


class RschedMCP(MCPServer[Any]):
    """``MCPServer`` whose tool failures all go through :func:`problem_of`."""

    async def call_tool(
        self, name: str, arguments: dict[str, Any], context: Ctx | None = None
    ) -> CallToolResult | InputRequiredResult:
        try:
            return await super().call_tool(name, arguments, context)
        except ToolError as exc:
            return error_result(tool_problem(exc))


# ------------------------------------------------------------------------ helpers


def _sorted_counts(values: dict[str, int]) -> dict[str, int]:
    return dict(sorted(values.items()))


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
        finished=view.state not in runs.ACTIVE,
        result_version_id=view.result_version_id,
    )


def _version_assignments(
    session: Session, actor: Actor, program_id: str, version_id: str
) -> tuple[VersionPublic, list[Assignment]]:
    """A stored version the actor may read (drafts: coordinators) and its assignments."""
    version = schedules.get_version(
        session, actor=actor, program_id=program_id, version_id=version_id
    )
    chosen: list[Assignment] = []
    offset = 0
    while True:
        page = schedules.assignments_list(
            session,
            actor=actor,
            program_id=program_id,
            version_id=version_id,
            limit=PAGE,
            offset=offset,
        )
        chosen.extend(
            Assignment(person_id=a.person_id, slot_id=a.slot_id, source=AssignmentSource(a.source))
            for a in page.items
        )
        offset += len(page.items)
        if not page.items or offset >= page.total:
            return version, chosen


def _validated(
    session: Session, actor: Actor, program_id: str, version_id: str
) -> tuple[VersionPublic, int, ValidationReport]:
    version, chosen = _version_assignments(session, actor, program_id, version_id)
    report = validate(load_program_data(session, program_id), chosen)
    return version, len(chosen), report


def _newest_active(session: Session, actor: Actor, program_id: str) -> str:
    found = schedules.list_versions(
        session, actor=actor, program_id=program_id, limit=1, status=ScheduleStatus.ACTIVE
    )
    if not found.items:
        raise NotFound(f"program {program_id!r} has no active schedule")
    return found.items[0].id


def _global_admin(actor: Actor) -> None:
    """Backups hold every program: admins only (not an admin's token scoped to some), as
    the API's /backups routes."""
    if not actor.is_admin or actor.scopes is not None:
        raise Forbidden("only an admin may manage backups")


def _progress_message(p: RunProgress) -> str:
    doc = p.progress or {}
    if p.state == "queued":
        return f"run {p.run_id} queued: waiting for a worker"
    parts = [f"run {p.run_id} {p.state}"]
    for key in ("phase", "solutions", "objective", "bound", "gap", "elapsed"):
        value = doc.get(key)
        if value is not None:
            parts.append(f"{key} {value:.3g}" if isinstance(value, float) else f"{key} {value}")
    if p.finished and p.result_version_id:
        parts.append(f"draft {p.result_version_id}")
    return ", ".join(parts)


# ------------------------------------------------------------------------- server


def build_server(deps: McpDeps) -> RschedMCP:
    """The MCP server over ``deps``: every tool, and the progress resource."""
    server = RschedMCP(SERVER_NAME, instructions=INSTRUCTIONS, version=__version__)

    async def in_session(ctx: Ctx, work: Callable[[Session, Actor], T], *, write: bool) -> T:
        """``work(session, actor)`` in a worker thread, in one unit of work: committed
        when it is a write and it succeeds, rolled back otherwise."""

        def job() -> T:
            with deps.factory() as session:
                try:
                    actor = deps.actor_of(session, ctx)
                    result = work(session, actor)
                    if write:
                        session.commit()
                    else:
                        session.rollback()
                    return result
                except BaseException:
                    session.rollback()
                    raise

        return await anyio.to_thread.run_sync(job)

    async def as_actor(ctx: Ctx, work: Callable[[Actor], T]) -> T:
        """``work(actor)`` in a worker thread, for services that open their own sessions."""

        def job() -> T:
            with deps.factory() as session:
                actor = deps.actor_of(session, ctx)
                session.rollback()
            return work(actor)

        return await anyio.to_thread.run_sync(job)

    async def read_progress(ctx: Ctx, run_id: str) -> RunProgress:
        return await in_session(
            ctx,
            lambda s, a: _progress(runs.get_run(s, actor=a, run_id=run_id), deps.store),
            write=False,
        )

    # ------------------------------------------------------------------ runs

    @server.tool(
        title="Generate a schedule",
        annotations=ToolAnnotations(destructive_hint=False),
    )
    async def generate_schedule(
        program_id: ProgramId,
        ctx: Ctx,
        idempotency_key: Annotated[
            str | None,
            Field(
                min_length=8,
                max_length=128,
                pattern=runs.KEY_PATTERN.pattern,
                description="the same key for the same program gives back the same run "
                "(default: a new key, so a new run)",
            ),
        ] = None,
        algorithm: Literal["cp_sat", "greedy", "mip"] = "cp_sat",
        time_limit: Annotated[
            float, Field(gt=0, le=MAX_TIME_LIMIT, description="seconds of search")
        ] = 60.0,
        workers: Annotated[int, Field(ge=1, le=64, description="solver threads")] = 2,
        seed: Annotated[int, Field(ge=0, le=2**31 - 1)] = 0,
        wait_seconds: Annotated[
            float,
            Field(
                ge=0,
                le=MAX_WAIT_SECONDS,
                description="follow the run this long (progress notifications), returning "
                "early when it finishes; 0: return once it is queued",
            ),
        ] = 0.0,
    ) -> GenerateResult:
        """Queue a solver run for a program (coordinators and admins), like POST
        /programs/{id}/runs: a recent verified backup must exist first (one is made when
        none does; the run is refused when that fails). The result is stored as a draft
        schedule version. With wait_seconds, progress notifications are sent while the
        run is queued and solving; the run goes on after the tool returns (read
        solver://runs/{run_id}/progress or call get_solver_progress)."""
        key = idempotency_key or f"mcp-{uuid.uuid4().hex}"
        checked = {"backup": False}

        def queue(session: Session, actor: Actor) -> tuple[runs.RunView, bool]:
            def guard() -> None:
                _Guard(deps).ensure_recent(program_id=program_id, reason="run")
                checked["backup"] = True

            return ops.queue_run(
                session,
                actor=actor,
                program_id=program_id,
                idempotency_key=key,
                algorithm=algorithm,
                params={"time_limit": time_limit, "workers": workers, "seed": seed},
                guard=guard,
            )

        view, created = await in_session(ctx, queue, write=True)
        started = anyio.current_time()
        current = await anyio.to_thread.run_sync(_progress, view, deps.store)
        last_value = -1.0
        last_message = ""

        async def tell(p: RunProgress) -> None:
            nonlocal last_value, last_message
            message = _progress_message(p)
            elapsed = float((p.progress or {}).get("elapsed") or 0.0)
            # the total is reached when the run has finished, not before
            value = time_limit if p.finished else min(elapsed, time_limit * 0.99)
            if value <= last_value:
                if message == last_message:
                    return
                value = last_value + 1e-3  # progress must increase with each notification
            last_value, last_message = value, message
            await ctx.report_progress(value, time_limit, message)

        await tell(current)
        while not current.finished and anyio.current_time() - started < wait_seconds:
            remaining = wait_seconds - (anyio.current_time() - started)
            await anyio.sleep(max(0.0, min(deps.poll_seconds, remaining)))
            current = await read_progress(ctx, view.id)
            await tell(current)
        run_now = await in_session(
            ctx, lambda s, a: runs.get_run(s, actor=a, run_id=view.id), write=False
        )
        waited = round(anyio.current_time() - started, 3) if wait_seconds else 0.0
        note = f"run {view.id} {'queued' if created else 'already existed with this key'}" + (
            f"; {current.state} after {waited:g} s" if wait_seconds else ""
        )
        return GenerateResult(
            run=RunInfo.of(run_now),
            created=created,
            backup_checked=checked["backup"],
            progress=current,
            waited_seconds=waited,
            note=note,
        )

    @server.tool(title="Solver progress", annotations=ToolAnnotations(read_only_hint=True))
    async def get_solver_progress(run_id: ObjectId, ctx: Ctx) -> RunProgress:
        """The latest progress of a run: live from the control store while it is queued
        or running, else as stored with the run (and the draft it produced)."""
        return await read_progress(ctx, run_id)

    @server.tool(title="Active solver runs", annotations=ToolAnnotations(read_only_hint=True))
    async def list_active_solvers(
        ctx: Ctx,
        program_id: Annotated[
            str | None,
            Field(min_length=1, max_length=64, description="only this program's runs"),
        ] = None,
    ) -> ActiveSolvers:
        """Queued and running runs, oldest first, with their progress: of one program,
        or of every program the caller sees."""

        def work(session: Session, actor: Actor) -> ActiveSolvers:
            views = runs.list_active(session, actor=actor, program_id=program_id)
            items = [
                ActiveSolver(run=RunInfo.of(v), progress=_progress(v, deps.store)) for v in views
            ]
            return ActiveSolvers(runs=items, total=len(items))

        return await in_session(ctx, work, write=False)

    @server.tool(title="Abort a solver run", annotations=ToolAnnotations(destructive_hint=True))
    async def abort_solver(run_id: ObjectId, reason: Reason, ctx: Ctx) -> AbortResult:
        """Abort a queued or running run (coordinators and admins of its program), with a
        reason; audited. A running solve stops within about a second and keeps its best
        schedule as a draft. A finished run is a conflict; another program's run is not
        found. Both are audited and change nothing."""

        def work(session: Session, actor: Actor) -> runs.RunView:
            try:
                return runs.request_abort(session, actor=actor, run_id=run_id, reason=reason)
            except (runs.RunConflict, NotFound):
                session.commit()  # keep the refusal's audit row
                raise

        view = await in_session(ctx, work, write=True)
        signalled = False
        if view.state == "running":
            try:
                await anyio.to_thread.run_sync(deps.store.request_abort, view.id, reason)
                signalled = True
            except Exception as exc:  # the worker still sees the durable flag
                log.warning(
                    "control store unreachable: the abort reaches the solver at its heartbeat",
                    extra={"run_id": view.id, "error": type(exc).__name__},
                )
        return AbortResult(run=RunInfo.of(view), solver_signalled=signalled)

    # ------------------------------------------------------------ validation

    @server.tool(title="Validate a schedule", annotations=ToolAnnotations(read_only_hint=True))
    async def validate_schedule(
        program_id: ProgramId, version_id: ObjectId, ctx: Ctx
    ) -> ValidationResult:
        """Run every rule of the independent validator on a stored schedule version (a
        draft: coordinators only) against the program as it is now: hard violations,
        warnings, coverage and the objective."""

        def work(session: Session, actor: Actor) -> ValidationResult:
            version, count, report = _validated(session, actor, program_id, version_id)
            summary = report.summary()
            return ValidationResult(
                program_id=program_id,
                version_id=version.id,
                status=str(version.status),
                assignments=count,
                ok=report.ok,
                violations=len(report.violations),
                warnings=len(report.warnings),
                coverage=round(report.coverage, 6),
                required_positions=report.required_positions,
                staffed_positions=report.staffed_positions,
                objective=report.objective,
                violations_by_rule=summary["violations_by_rule"],  # type: ignore[arg-type]
                warnings_by_rule=summary["warnings_by_rule"],  # type: ignore[arg-type]
                penalties=_sorted_counts(report.penalties),
            )

        return await in_session(ctx, work, write=False)

    @server.tool(title="Detect conflicts", annotations=ToolAnnotations(read_only_hint=True))
    async def detect_conflicts(
        program_id: ProgramId,
        version_id: ObjectId,
        ctx: Ctx,
        include_warnings: bool = False,
        limit: Annotated[
            int, Field(ge=1, le=MAX_CONFLICTS, description="list at most this many")
        ] = 100,
    ) -> ConflictReport:
        """Every hard-rule violation of a stored schedule version (and warnings when
        asked), each with its rule, person, slot, window, value and limit."""

        def work(session: Session, actor: Actor) -> ConflictReport:
            version, _, report = _validated(session, actor, program_id, version_id)
            found = list(report.violations) + (list(report.warnings) if include_warnings else [])
            by_rule: dict[str, int] = {}
            for v in found:
                by_rule[v.rule] = by_rule.get(v.rule, 0) + 1
            return ConflictReport(
                program_id=program_id,
                version_id=version.id,
                total=len(found),
                by_rule=_sorted_counts(by_rule),
                conflicts=[Conflict.model_validate(v.to_dict()) for v in found[:limit]],
                truncated=len(found) > limit,
            )

        return await in_session(ctx, work, write=False)

    @server.tool(title="Constraint metrics", annotations=ToolAnnotations(read_only_hint=True))
    async def get_constraint_metrics(
        program_id: ProgramId,
        ctx: Ctx,
        version_id: Annotated[
            str | None,
            Field(
                min_length=1,
                max_length=64,
                description="default: the program's newest active version",
            ),
        ] = None,
    ) -> ConstraintMetrics:
        """Per rule: violations, warnings and the validator's time; the soft penalty of
        each named term, the objective, coverage and the fairness spreads by PGY."""

        def work(session: Session, actor: Actor) -> ConstraintMetrics:
            chosen = version_id or _newest_active(session, actor, program_id)
            version, _, report = _validated(session, actor, program_id, chosen)
            counts: dict[str, list[int]] = {}
            for v in report.violations:
                counts.setdefault(v.rule, [0, 0])[0] += 1
            for v in report.warnings:
                counts.setdefault(v.rule, [0, 0])[1] += 1
            rules = sorted(set(report.seconds_by_rule) | set(counts))
            return ConstraintMetrics(
                program_id=program_id,
                version_id=version.id,
                status=str(version.status),
                coverage=round(report.coverage, 6),
                objective=report.objective,
                penalties=_sorted_counts(report.penalties),
                rules=[
                    RuleMetric(
                        rule=rule,
                        violations=counts.get(rule, [0, 0])[0],
                        warnings=counts.get(rule, [0, 0])[1],
                        seconds=round(report.seconds_by_rule.get(rule, 0.0), 6),
                    )
                    for rule in rules
                ],
                fairness=[
                    FairnessSpread(
                        category=f.category, pgy=f.pgy, min=f.min, max=f.max, spread=f.spread
                    )
                    for f in report.fairness
                ],
            )

        return await in_session(ctx, work, write=False)

    # ------------------------------------------------------------------ swaps

    @server.tool(title="Swap candidates", annotations=ToolAnnotations(read_only_hint=True))
    async def analyze_swap_candidates(
        program_id: ProgramId,
        person_id: ObjectId,
        slot_id: ObjectId,
        ctx: Ctx,
        limit: Annotated[int, Field(ge=1, le=swaps.MAX_CANDIDATES)] = 20,
    ) -> swaps.SwapCandidates:
        """Who could take person_id's shift slot_id of the active schedule (a give-away),
        or trade one of theirs for it, without adding a hard violation; best for fairness
        first. The person themselves and coordinators may ask."""
        return await in_session(
            ctx,
            lambda s, a: swaps.candidates(
                s, actor=a, program_id=program_id, person_id=person_id, slot_id=slot_id, limit=limit
            ),
            write=False,
        )

    @server.tool(title="Execute a swap", annotations=ToolAnnotations(destructive_hint=True))
    async def execute_swap(
        program_id: ProgramId,
        ctx: Ctx,
        swap_id: Annotated[
            str | None,
            Field(min_length=1, max_length=64, description="an existing swap request"),
        ] = None,
        person_id: Annotated[
            str | None, Field(min_length=1, max_length=64, description="who gives the shift")
        ] = None,
        slot_id: Annotated[
            str | None, Field(min_length=1, max_length=64, description="the shift given")
        ] = None,
        taker_id: Annotated[
            str | None, Field(min_length=1, max_length=64, description="who takes it")
        ] = None,
        taker_slot_id: Annotated[
            str | None,
            Field(min_length=1, max_length=64, description="in a trade, the shift given back"),
        ] = None,
        note: Annotated[str, Field(max_length=swaps.NOTE_MAX)] = "",
    ) -> swaps.SwapExecuted:
        """Make a swap of the active schedule: an existing request (swap_id), or a new one
        (person_id, slot_id, taker_id and for a trade taker_slot_id; requested and then
        executed). The change is re-checked against the hard rules and published like any
        publish (gate, diff guard, backup, audit); a coordinator, or the taker, executes."""
        if swap_id is None:
            missing = [
                name
                for name, value in (
                    ("person_id", person_id),
                    ("slot_id", slot_id),
                    ("taker_id", taker_id),
                )
                if value is None
            ]
            if missing:
                raise InvalidInput(
                    [FieldError(name, "required when swap_id is not given") for name in missing]
                )
        elif any(v is not None for v in (person_id, slot_id, taker_id, taker_slot_id)):
            raise InvalidInput(FieldError("swap_id", "give either swap_id or the change, not both"))

        def request(session: Session, actor: Actor) -> str:
            assert person_id is not None and slot_id is not None and taker_id is not None
            return swaps.request_swap(
                session,
                actor=actor,
                program_id=program_id,
                person_id=person_id,
                slot_id=slot_id,
                taker_id=taker_id,
                taker_slot_id=taker_slot_id,
                note=note,
            ).id

        chosen = swap_id if swap_id is not None else await in_session(ctx, request, write=True)
        return await as_actor(
            ctx,
            lambda a: swaps.execute_swap(
                deps.factory,
                actor=a,
                program_id=program_id,
                swap_id=chosen,
                backups=_Guard(deps),
            ),
        )

    # ------------------------------------------------------------ publishing

    @server.tool(title="Publish a draft", annotations=ToolAnnotations(destructive_hint=True))
    async def publish_draft(
        program_id: ProgramId,
        version_id: ObjectId,
        publish_token: Annotated[
            str,
            Field(
                min_length=1,
                max_length=256,
                description="the one-time publish token a coordinator obtained for this "
                "draft (bound to the draft and the user; it expires and is used up)",
            ),
        ],
        ctx: Ctx,
        override_reason: Annotated[
            str | None,
            Field(
                min_length=1,
                max_length=1000,
                description="publish above the diff guard's churn limit: needs an approved "
                "publish_override approval; audited",
            ),
        ] = None,
    ) -> PublishResult:
        """Make a draft the active schedule (coordinators and admins): the one-time token
        is used up, the draft is re-validated (gate) and compared with the active
        schedule (diff guard), a recent backup is ensured, then it is staged and
        activated at once. A refusal says why in error.detail and changes nothing."""
        result = await as_actor(
            ctx,
            lambda a: publishing.publish(
                deps.factory,
                actor=a,
                program_id=program_id,
                version_id=version_id,
                token=publish_token,
                backups=_Guard(deps),
                override_reason=override_reason,
            ),
        )
        return PublishResult(
            program_id=program_id,
            version_id=result.version_id,
            staging_id=result.staging_id,
            superseded=list(result.superseded),
            diff=result.diff.to_dict(),
            gate=result.gate,
        )

    @server.tool(
        title="Roll back the last publish", annotations=ToolAnnotations(destructive_hint=True)
    )
    async def rollback(program_id: ProgramId, reason: Reason, ctx: Ctx) -> RollbackResult:
        """Restore the schedule that was active before the program's last publish
        (coordinators and admins), after ensuring a recent backup; audited."""
        restored = await as_actor(
            ctx,
            lambda a: publishing.rollback(
                deps.factory, actor=a, program_id=program_id, reason=reason, backups=_Guard(deps)
            ),
        )
        return RollbackResult(program_id=program_id, restored_version_id=restored or None)

    # -------------------------------------------------------------- backups

    @server.tool(title="Create a backup", annotations=ToolAnnotations(destructive_hint=False))
    async def create_backup(
        ctx: Ctx,
        reason: Annotated[
            str, Field(min_length=1, max_length=REASON_MAX, description="why (in the file name)")
        ] = "mcp",
    ) -> BackupInfo:
        """Back up the whole database now (pg_dump custom format, or the SQLite online
        backup) and record its SHA-256; audited. Admins only (a backup holds every
        program), with a token not limited to programs."""
        await in_session(ctx, lambda s, a: _global_admin(a), write=False)

        def make() -> BackupRecord:
            with deps.backup_service() as service:
                return service.create(reason=reason)

        record = await anyio.to_thread.run_sync(make)

        def log_it(session: Session, actor: Actor) -> None:
            audit.record(session, actor=actor, action="backup.create", target=record.id)

        await in_session(ctx, log_it, write=True)
        return BackupInfo.of(record)

    @server.tool(title="List backups", annotations=ToolAnnotations(read_only_hint=True))
    async def list_backups(
        ctx: Ctx,
        limit: Annotated[int, Field(ge=1, le=500)] = 100,
        offset: Annotated[int, Field(ge=0, le=2**31 - 1)] = 0,
    ) -> BackupList:
        """The backups, newest first (deleted ones left out). Admins only."""
        await in_session(ctx, lambda s, a: _global_admin(a), write=False)

        def listing() -> list[BackupRecord]:
            with deps.backup_service() as service:
                return service.list()

        found = await anyio.to_thread.run_sync(listing)
        return BackupList(
            backups=[BackupInfo.of(r) for r in found[offset : offset + limit]], total=len(found)
        )

    # ------------------------------------------------------------ operations

    @server.tool(title="Situation report", annotations=ToolAnnotations(read_only_hint=True))
    async def sitrep(
        ctx: Ctx,
        program_id: Annotated[
            str | None,
            Field(min_length=1, max_length=64, description="one program (default: all yours)"),
        ] = None,
    ) -> ops.Sitrep:
        """The situation report of the programs the caller runs (coordinators and
        admins): runs by state, recent failures with their reasons, active runs with
        progress, health of the database, control store and workers, each program's
        active schedule, and the actions those call for. Every figure is counted."""
        return await in_session(
            ctx,
            lambda s, a: ops.sitrep(s, actor=a, store=deps.store, program_id=program_id),
            write=False,
        )

    @server.tool(title="Health check", annotations=ToolAnnotations(read_only_hint=True))
    async def health_check(ctx: Ctx) -> HealthResult:
        """Whether the database and the control store (Redis when configured) answer."""

        def work(session: Session, actor: Actor) -> HealthResult:
            try:
                session.execute(select(1))
                database: Literal["ok", "unreachable"] = "ok"
            except Exception as exc:
                log.warning("database unreachable", extra={"error": type(exc).__name__})
                database = "unreachable"
            try:
                store: Literal["ok", "unreachable"] = "ok" if deps.store.ping() else "unreachable"
            except Exception as exc:
                log.warning("control store unreachable", extra={"error": type(exc).__name__})
                store = "unreachable"
            ok = database == "ok" and store == "ok"
            return HealthResult(
                status="ok" if ok else "degraded",
                version=__version__,
                database=database,
                control_store=store,
            )

        return await in_session(ctx, work, write=False)

    # --------------------------------------------------------------- resource

    @server.resource(
        PROGRESS_URI,
        name="solver-run-progress",
        title="Solver run progress",
        description="The latest progress of a solver run (JSON like get_solver_progress).",
        mime_type="application/json",
    )
    async def run_progress(run_id: str, ctx: Ctx) -> str:
        try:
            found = await read_progress(ctx, run_id)
        except NotFound as exc:
            raise ResourceNotFoundError(str(exc)) from None
        except RschedError as exc:
            raise ResourceError(problem_of(exc).message) from None
        return found.model_dump_json()

    return server


__all__ = [
    "PROGRESS_URI",
    "ActorSource",
    "McpDeps",
    "RschedMCP",
    "ToolProblem",
    "build_server",
    "problem_of",
    "token_actor",
]
