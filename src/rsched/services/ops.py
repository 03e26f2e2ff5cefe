"""Operations: the situation report, fix-it, queueing a run behind the backup guard,
and the rate-limited approval decision.

**Every figure is counted from rows** (runs, leases, schedule versions, the audit log)
or read from the control store (live progress, ping): nothing is estimated, defaulted
or made up. A figure that cannot be known is ``None`` (or the item is left out), never
a guess.

- :func:`sitrep` — runs by state, recent failures with their reasons, active runs with
  their progress, health of the database, the control store (Redis when configured),
  the workers (running runs whose lease a worker keeps renewing, the maintenance leader's
  lease row), each program's newest active schedule with its stored validation summary
  (coverage, violations), and the immediate actions and watch items those rows call
  for. An admin sees every program; a coordinator the programs they coordinate.
- :func:`slack_body` — the same report as a Slack message body (``text`` + ``blocks``)
  that a chat workflow can post as is.
- :func:`fix_it` — follow-ups of failed runs, through a **fixed list of actions** only
  (``retry_transient``, ``requeue_longer``, ``fallback_greedy``); the mode chooses which
  of them may be used, nothing in the request names code to run. Each follow-up is a new
  run made by :func:`rsched.services.runs.create_run` with the derived idempotency key
  ``fixit:<failed run>:<its attempt>``, so repeating fix-it never queues a follow-up
  twice. ``dry_run`` returns exactly that plan and changes nothing.
- :func:`approve` — :func:`rsched.services.approvals.decide` behind the tenancy check and
  the rate limit, with every refusal's audit row committed.

Rate limits (fix-it and approve, against brute force): the audit rows of the actor and
action in the last minute are counted in the database, so the limit is durable and
shared by every API process. Refusals are audited (under ``<action>.rate_limited``, which
the count leaves out, so a refused caller is free again a minute after their last
counted attempt).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, Field
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from rsched.db.models import (
    ApprovalRow,
    AuditRow,
    LeaseRow,
    ProgramRow,
    RunRow,
    ScheduleVersionRow,
)
from rsched.domain import FieldError, InvalidInput, NotFound, RunState, ScheduleStatus
from rsched.services import approvals, audit, runs
from rsched.services.access import Actor, Forbidden, Need, Role, authorize
from rsched.services.auth import RateLimited
from rsched.services.control import ControlStore, RedisControlStore
from rsched.services.leader import MAINTENANCE, db_now
from rsched.solver.api import SolveParams

log = logging.getLogger("rsched.ops")

FAILURE_WINDOW = timedelta(hours=72)
"""Failed runs this recent are listed by the sitrep and considered by fix-it (a weekend)."""
MAX_LISTED = 50
"""At most this many failures and active runs are listed (the counts are always exact)."""
MAX_ACTIONS = 20
"""Fix-it queues at most this many follow-ups per call (the rest are listed as skipped)."""
TIME_LIMIT_CAP = 3600.0
"""``requeue_longer`` doubles the time limit up to this many seconds."""
QUEUED_TOO_LONG = timedelta(minutes=5)
RATE_LIMIT = 10
"""Fix-it calls, or approval decisions, per actor and ``RATE_WINDOW``."""
RATE_WINDOW = timedelta(minutes=1)
FIXIT_ACTION = "ops.fix_it"
DECIDE_ACTION = "approval.decide"

Mode = Literal["conservative", "balanced", "greedy"]
ActionName = Literal["retry_transient", "requeue_longer", "fallback_greedy"]
MODES: dict[str, frozenset[str]] = {
    "conservative": frozenset({"retry_transient"}),
    "balanced": frozenset({"retry_transient", "requeue_longer"}),
    "greedy": frozenset({"retry_transient", "requeue_longer", "fallback_greedy"}),
}
"""The fixed list: which follow-up actions each mode may use. Nothing else ever runs."""
LEAST_MODE: dict[str, str] = {
    "retry_transient": "conservative",
    "requeue_longer": "balanced",
    "fallback_greedy": "greedy",
}
Reach = Literal["ok", "unreachable"]


# ------------------------------------------------------------------------- models


class Failure(BaseModel):
    run_id: str
    program_id: str
    algorithm: str
    attempt: int
    finished_at: datetime | None
    reason: str | None = Field(description="the failure reason stored with the run")
    stop_reason: str | None
    transient: bool
    follow_up: ActionName | None = Field(
        description="the fix-it action that applies (None: none does)"
    )
    followed_up_by: str | None = Field(description="the run fix-it already queued for it")


class ActiveRun(BaseModel):
    run_id: str
    program_id: str
    state: str
    algorithm: str
    attempt: int
    max_attempts: int
    created_at: datetime
    started_at: datetime | None
    time_limit: float | None
    heartbeat_age_seconds: float | None = Field(description="since the worker last renewed")
    lease_expires_in_seconds: float | None = Field(description="negative: past its lease")
    progress: dict[str, Any] | None
    progress_source: Literal["control_store", "database", "none"]


class Leader(BaseModel):
    holder: str | None
    epoch: int | None
    expires_at: datetime | None
    live: bool = Field(description="a holder whose lease has not expired")


class Health(BaseModel):
    database: Reach
    control_store: Literal["redis", "database"]
    control_store_status: Reach
    redis: Reach | Literal["not configured"]
    running_with_live_lease: int = Field(description="running runs a worker keeps renewing")
    running_past_lease: int = Field(description="running runs whose lease has expired")
    workers_seen: int = Field(
        description="distinct worker processes seen: holders of live run leases and the leader"
    )
    leader: Leader


class ProgramStatus(BaseModel):
    program_id: str
    name: str
    active_version_id: str | None
    active_version_created_at: datetime | None
    validated: bool = Field(description="the active version has a stored validation summary")
    coverage: float | None
    violations: int | None
    warnings: int | None
    violations_by_rule: dict[str, int] = Field(default_factory=dict)


class Item(BaseModel):
    kind: str
    message: str
    program_id: str | None = None
    run_ids: list[str] = Field(default_factory=list)
    count: int | None = None
    suggestion: str | None = None


class Sitrep(BaseModel):
    generated_at: datetime
    scope: Literal["all", "coordinated", "program"]
    program_ids: list[str]
    runs_by_state: dict[str, int]
    failure_window_hours: float
    failures_in_window: int
    recent_failures: list[Failure]
    active_runs_total: int
    active_runs: list[ActiveRun]
    health: Health
    programs: list[ProgramStatus]
    immediate_actions: list[Item]
    watch_items: list[Item]


class PlannedAction(BaseModel):
    action: ActionName
    source_run_id: str
    idempotency_key: str
    algorithm: str
    params: dict[str, Any]
    why: str
    run_id: str | None = Field(default=None, description="the run queued (None in a dry run)")
    created: bool | None = Field(default=None, description="False: it existed already")


class Skipped(BaseModel):
    run_id: str
    why: str


class FixItPlan(BaseModel):
    program_id: str
    mode: Mode
    dry_run: bool
    window_hours: float
    actions: list[PlannedAction]
    skipped: list[Skipped]


class ApprovalDecision(BaseModel):
    approval_id: str
    program_id: str
    action: str
    target: str
    decision: Literal["approved", "denied"]


# ---------------------------------------------------------------------- helpers


def _aware(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; everything is stored in UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def _seconds(a: datetime, b: datetime | None) -> float | None:
    b = _aware(b)
    return None if b is None else round((a - b).total_seconds(), 3)


def _time_limit(params: Any) -> float | None:
    try:
        value = float((params or {})["time_limit"])
    except (AttributeError, KeyError, TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


Scope = Literal["all", "coordinated", "program"]


def _scope(actor: Actor, program_id: str | None) -> tuple[Scope, list[str]]:
    """The programs the sitrep covers: all (admin), one (checked), or the coordinated."""
    if program_id is not None:
        authorize(actor, program_id, Need.MANAGE)
        return "program", [program_id]
    if actor.visible_programs() is None:
        return "all", []
    mine = sorted(
        pid
        for pid in actor.visible_programs() or set()
        if actor.role_in(pid) in (Role.ADMIN, Role.COORDINATOR)
    )
    if not mine:
        raise Forbidden("the situation report is for coordinators and admins")
    return "coordinated", mine


def _in_scope(column: Any, program_ids: list[str], everything: bool) -> Any:
    return True if everything else column.in_(program_ids)


def progress_of(view: runs.RunView, store: ControlStore) -> tuple[dict[str, Any] | None, str]:
    """A run's progress and where it came from: the control store while the run is
    active (live, every second), else the last progress stored with the run."""
    if view.state in runs.ACTIVE:
        try:
            live = store.progress(view.id)
        except Exception as exc:  # the control store may be away; the row still answers
            log.warning("control store unreachable", extra={"error": type(exc).__name__})
            live = None
        if live is not None:
            return live, "control_store"
    if view.progress:
        return dict(view.progress), "database"
    return None, "none"


# ----------------------------------------------------------- failures, follow-ups


@dataclass(frozen=True, slots=True)
class _FollowUp:
    action: ActionName | None
    why: str


def classify(row: RunRow) -> _FollowUp:
    """Which fix-it action (if any) applies to a failed run; the same rule for the sitrep
    and for fix-it, so what the sitrep suggests is what fix-it does."""
    limit = _time_limit(row.params) or 0.0
    if row.stop_reason == "time_limit":
        if limit < TIME_LIMIT_CAP:
            return _FollowUp(
                "requeue_longer",
                f"hit its time limit of {limit:g} s without a schedule: re-queue with "
                f"{min(limit * 2, TIME_LIMIT_CAP):g} s",
            )
        if row.algorithm != "greedy":
            return _FollowUp(
                "fallback_greedy",
                f"hit the {TIME_LIMIT_CAP:g} s cap without a schedule: fall back to greedy",
            )
        return _FollowUp(None, "greedy hit the time cap: needs a person")
    if row.failure_transient:
        return _FollowUp("retry_transient", "transient failure: retry with the same parameters")
    if row.algorithm != "greedy":
        return _FollowUp("fallback_greedy", "failed without a schedule: fall back to greedy")
    return _FollowUp(None, "greedy failed: needs a person (see the reason)")


def follow_up_key(row: RunRow) -> str:
    return f"fixit:{row.id}:{row.attempt}"


def _followed_up(session: Session, rows: list[RunRow]) -> dict[str, str]:
    """Failed run id → the fix-it run already queued for it (its key names the source)."""
    if not rows:
        return {}
    wanted = {r.id for r in rows}
    found: dict[str, str] = {}
    for key, run_id in session.execute(
        select(RunRow.idempotency_key, RunRow.id)
        .where(
            RunRow.program_id.in_(sorted({r.program_id for r in rows})),
            RunRow.idempotency_key.like("fixit:%"),
        )
        .order_by(RunRow.created_at, RunRow.id)
    ).all():
        source = key.split(":")[1] if key.count(":") >= 2 else ""
        if source in wanted:
            found.setdefault(source, run_id)
    return found


def _recent_failures(
    session: Session, program_ids: list[str], everything: bool, now: datetime
) -> list[RunRow]:
    return list(
        session.scalars(
            select(RunRow)
            .where(
                RunRow.state == RunState.FAILED.value,
                RunRow.finished_at >= now - FAILURE_WINDOW,
                _in_scope(RunRow.program_id, program_ids, everything),
            )
            .order_by(RunRow.finished_at, RunRow.id)
        )
    )


# -------------------------------------------------------------------------- sitrep


def sitrep(
    session: Session,
    *,
    actor: Actor,
    store: ControlStore,
    now: datetime | None = None,
    program_id: str | None = None,
) -> Sitrep:
    """The situation report of the programs the actor runs (read-only)."""
    scope, program_ids = _scope(actor, program_id)
    everything = scope == "all"
    database: Reach = "ok"
    try:
        session.execute(select(1))
    except Exception as exc:
        log.warning("database unreachable", extra={"error": type(exc).__name__})
        database = "unreachable"
    at = _aware(now) or db_now(session)
    assert at is not None

    by_state = {s.value: 0 for s in RunState}
    for state, n in session.execute(
        select(RunRow.state, func.count())
        .where(_in_scope(RunRow.program_id, program_ids, everything))
        .group_by(RunRow.state)
    ).all():
        by_state[state] = int(n)

    failed = _recent_failures(session, program_ids, everything, at)
    done = _followed_up(session, failed)
    failures = [
        Failure(
            run_id=r.id,
            program_id=r.program_id,
            algorithm=r.algorithm,
            attempt=r.attempt,
            finished_at=_aware(r.finished_at),
            reason=r.failure_reason,
            stop_reason=r.stop_reason,
            transient=bool(r.failure_transient),
            follow_up=classify(r).action,
            followed_up_by=done.get(r.id),
        )
        for r in reversed(failed)  # newest first
    ]

    active_rows = list(
        session.scalars(
            select(RunRow)
            .where(
                RunRow.state.in_(runs.ACTIVE),
                _in_scope(RunRow.program_id, program_ids, everything),
            )
            .order_by(RunRow.created_at, RunRow.id)
        )
    )
    active = [_active(r, store, at) for r in active_rows[:MAX_LISTED]]

    health = _health(session, store, at, database)
    programs = _programs(session, program_ids, everything)
    immediate, watch = _items(at, failures, active_rows, health, programs)
    listed_ids = sorted(p.program_id for p in programs) if everything else sorted(program_ids)
    return Sitrep(
        generated_at=at,
        scope=scope,
        program_ids=listed_ids,
        runs_by_state=by_state,
        failure_window_hours=FAILURE_WINDOW.total_seconds() / 3600,
        failures_in_window=len(failures),
        recent_failures=failures[:MAX_LISTED],
        active_runs_total=len(active_rows),
        active_runs=active,
        health=health,
        programs=programs,
        immediate_actions=immediate,
        watch_items=watch,
    )


def _active(row: RunRow, store: ControlStore, at: datetime) -> ActiveRun:
    view = runs.RunView.of(row)
    progress, source = progress_of(view, store)
    expires = _aware(row.lease_expires_at)
    return ActiveRun(
        run_id=row.id,
        program_id=row.program_id,
        state=row.state,
        algorithm=row.algorithm,
        attempt=row.attempt,
        max_attempts=row.max_attempts,
        created_at=_aware(row.created_at) or at,
        started_at=_aware(row.started_at),
        time_limit=_time_limit(row.params),
        heartbeat_age_seconds=_seconds(at, row.heartbeat_at),
        lease_expires_in_seconds=(
            None if expires is None else round((expires - at).total_seconds(), 3)
        ),
        progress=progress,
        progress_source=source,  # type: ignore[arg-type]
    )


def _health(session: Session, store: ControlStore, at: datetime, database: Reach) -> Health:
    redis_configured = isinstance(store, RedisControlStore)
    try:
        store_ok: Reach = "ok" if store.ping() else "unreachable"
    except Exception as exc:
        log.warning("control store unreachable", extra={"error": type(exc).__name__})
        store_ok = "unreachable"
    running = session.execute(
        select(RunRow.lease_owner, RunRow.lease_expires_at).where(
            RunRow.state == RunState.RUNNING.value
        )
    ).all()
    live_owners = {
        (owner or "").rsplit("/", 1)[0]
        for owner, expires in running
        if (e := _aware(expires)) is not None and e > at
    }
    past = sum(1 for _owner, expires in running if (e := _aware(expires)) is None or e <= at)
    lease = session.get(LeaseRow, MAINTENANCE)
    expires_at = _aware(lease.expires_at) if lease is not None else None
    live = bool(lease is not None and lease.holder and expires_at is not None and expires_at > at)
    leader = Leader(
        holder=lease.holder if lease is not None else None,
        epoch=lease.epoch if lease is not None else None,
        expires_at=expires_at,
        live=live,
    )
    seen = set(live_owners)
    if live and lease is not None and lease.holder:
        seen.add(lease.holder)
    return Health(
        database=database,
        control_store="redis" if redis_configured else "database",
        control_store_status=store_ok,
        redis=store_ok if redis_configured else "not configured",
        running_with_live_lease=len(running) - past,
        running_past_lease=past,
        workers_seen=len(seen),
        leader=leader,
    )


def _programs(session: Session, program_ids: list[str], everything: bool) -> list[ProgramStatus]:
    rows = session.execute(
        select(ProgramRow.id, ProgramRow.name)
        .where(_in_scope(ProgramRow.id, program_ids, everything))
        .order_by(ProgramRow.id)
    ).all()
    out: list[ProgramStatus] = []
    for pid, name in rows:
        version = session.scalars(
            select(ScheduleVersionRow)
            .where(
                ScheduleVersionRow.program_id == pid,
                ScheduleVersionRow.status == ScheduleStatus.ACTIVE.value,
            )
            .order_by(ScheduleVersionRow.created_at.desc(), ScheduleVersionRow.id.desc())
            .limit(1)
        ).first()
        summary = (version.report or {}).get("validation") if version is not None else None
        valid = isinstance(summary, dict)
        doc: dict[str, Any] = summary if isinstance(summary, dict) else {}
        by_rule = doc.get("violations_by_rule")
        out.append(
            ProgramStatus(
                program_id=pid,
                name=name,
                active_version_id=version.id if version is not None else None,
                active_version_created_at=(
                    _aware(version.created_at) if version is not None else None
                ),
                validated=valid,
                coverage=_number(doc.get("coverage")),
                violations=_count(doc.get("violations")),
                warnings=_count(doc.get("warnings")),
                violations_by_rule=(
                    {str(k): int(v) for k, v in by_rule.items() if isinstance(v, int)}
                    if isinstance(by_rule, dict)
                    else {}
                ),
            )
        )
    return out


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _count(value: Any) -> int | None:
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else None


def _items(
    at: datetime,
    failures: list[Failure],
    active_rows: list[RunRow],
    health: Health,
    programs: list[ProgramStatus],
) -> tuple[list[Item], list[Item]]:
    immediate: list[Item] = []
    watch: list[Item] = []
    if health.database != "ok":
        immediate.append(Item(kind="database_unreachable", message="the database does not answer"))
    if health.control_store_status != "ok":
        immediate.append(
            Item(
                kind="control_store_unreachable",
                message=f"the control store ({health.control_store}) does not answer: live "
                "progress is missing and aborts reach solvers only at their next heartbeat",
            )
        )
    if not health.leader.live:
        queued = sum(1 for r in active_rows if r.state == RunState.QUEUED.value)
        immediate.append(
            Item(
                kind="no_leader",
                message="no worker holds the maintenance lease: no worker process is running "
                f"or none reaches the database ({queued} queued run(s) in scope)",
                count=queued,
                suggestion="start a worker (rsched worker) or check why they cannot connect",
            )
        )
    stuck = [
        r
        for r in active_rows
        if r.state == RunState.RUNNING.value
        and ((e := _aware(r.lease_expires_at)) is None or e <= at)
    ]
    for r in stuck:
        expires = _aware(r.lease_expires_at)
        past = "" if expires is None else f" {(at - expires).total_seconds():.0f} s ago"
        immediate.append(
            Item(
                kind="run_past_lease",
                program_id=r.program_id,
                run_ids=[r.id],
                message=f"run {r.id} is running but its lease expired{past}: its worker is "
                "gone; the maintenance leader re-queues it (attempt "
                f"{r.attempt}/{r.max_attempts})",
                suggestion="check that a worker holds the maintenance lease",
            )
        )
    by_program: dict[tuple[str, str], list[Failure]] = {}
    for f in failures:
        if f.follow_up is not None and f.followed_up_by is None:
            by_program.setdefault((f.program_id, f.follow_up), []).append(f)
    for (pid, action), found in sorted(by_program.items()):
        ids = [f.run_id for f in found]
        mode = LEAST_MODE[action]
        what = {
            "retry_transient": "failed for a transient reason and can be retried",
            "requeue_longer": "hit their time limit without a schedule",
            "fallback_greedy": "failed and can fall back to the greedy solver",
        }[action]
        item = Item(
            kind=action,
            program_id=pid,
            run_ids=ids,
            count=len(ids),
            message=f"{len(ids)} run(s) of {pid} {what}",
            suggestion=f'POST /ops/fix-it {{"program_id": "{pid}", "mode": "{mode}"}} '
            "(dry_run first)",
        )
        (immediate if action == "retry_transient" else watch).append(item)
    for p in programs:
        if p.violations:
            immediate.append(
                Item(
                    kind="active_schedule_violations",
                    program_id=p.program_id,
                    count=p.violations,
                    message=f"the active schedule of {p.program_id} has {p.violations} rule "
                    "violation(s) in its stored validation",
                    suggestion="publish a corrected version or roll back",
                )
            )
    for r in active_rows:
        started = _aware(r.started_at)
        limit = _time_limit(r.params)
        expires = _aware(r.lease_expires_at)
        if (
            r.state == RunState.RUNNING.value
            and started is not None
            and limit is not None
            and expires is not None
            and expires > at
        ):
            over = (at - started).total_seconds() - max(1, r.attempt) * limit
            if over > 0:
                watch.append(
                    Item(
                        kind="run_overrunning",
                        program_id=r.program_id,
                        run_ids=[r.id],
                        message=f"run {r.id} is {over:.0f} s past its solve budget "
                        f"({max(1, r.attempt)} x {limit:g} s) but its worker is alive",
                    )
                )
    waiting = [
        r
        for r in active_rows
        if r.state == RunState.QUEUED.value
        and (c := _aware(r.created_at)) is not None
        and at - c > QUEUED_TOO_LONG
    ]
    if waiting:
        oldest = min(_aware(r.created_at) or at for r in waiting)
        watch.append(
            Item(
                kind="queued_waiting",
                run_ids=[r.id for r in waiting[:MAX_LISTED]],
                count=len(waiting),
                message=f"{len(waiting)} run(s) queued for more than "
                f"{QUEUED_TOO_LONG.total_seconds() / 60:.0f} min (oldest "
                f"{(at - oldest).total_seconds():.0f} s)",
                suggestion="add workers or check that they claim runs",
            )
        )
    for p in programs:
        if p.active_version_id is None:
            watch.append(
                Item(
                    kind="no_active_schedule",
                    program_id=p.program_id,
                    message=f"{p.program_id} has no active schedule",
                )
            )
        elif not p.validated:
            watch.append(
                Item(
                    kind="active_schedule_unvalidated",
                    program_id=p.program_id,
                    message=f"the active schedule of {p.program_id} has no stored validation "
                    "summary (coverage and violations unknown)",
                )
            )
        elif p.coverage is not None and p.coverage < 1.0:
            watch.append(
                Item(
                    kind="coverage_below_full",
                    program_id=p.program_id,
                    message=f"the active schedule of {p.program_id} covers {p.coverage:.2%} "
                    "of its required staffing",
                )
            )
    return immediate, watch


# ------------------------------------------------------------------------- Slack

_SLACK_TEXT_MAX = 3000
_SLACK_LINES = 10


def _esc(text: str) -> str:
    """Slack mrkdwn control characters."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _bullets(items: Iterable[str], total: int) -> str:
    lines = [f"• {_esc(line)}" for line in list(items)[:_SLACK_LINES]]
    if total > len(lines):
        lines.append(f"… and {total - len(lines)} more")
    text = "\n".join(lines) if lines else "none"
    return text if len(text) <= _SLACK_TEXT_MAX else text[: _SLACK_TEXT_MAX - 1] + "…"


def _section(title: str, body: str) -> dict[str, Any]:
    text = f"*{title}*\n{body}"
    if len(text) > _SLACK_TEXT_MAX:
        text = text[: _SLACK_TEXT_MAX - 1] + "…"
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def slack_body(report: Sitrep) -> dict[str, Any]:
    """The sitrep as a Slack message body (``text`` for notifications, Block Kit
    ``blocks`` for the message); every figure is the sitrep's own."""
    states = " · ".join(f"{s} {n}" for s, n in report.runs_by_state.items())
    h = report.health
    leader = f"live ({h.leader.holder}, epoch {h.leader.epoch})" if h.leader.live else "none live"
    health = (
        f"database {h.database} · control store ({h.control_store}) {h.control_store_status} · "
        f"redis {h.redis} · leader {leader} · workers seen {h.workers_seen} · "
        f"running with live lease {h.running_with_live_lease} · past lease "
        f"{h.running_past_lease}"
    )
    summary = (
        f"rsched sitrep: {len(report.immediate_actions)} immediate action(s), "
        f"{len(report.watch_items)} watch item(s); runs {states}"
    )
    programs = [
        f"{p.program_id}: "
        + (
            "no active schedule"
            if p.active_version_id is None
            else (
                f"coverage {p.coverage:.2%}, violations {p.violations}"
                if p.validated and p.coverage is not None
                else f"active {p.active_version_id}, no stored validation"
            )
        )
        for p in report.programs
    ]
    active = [
        f"{a.run_id} ({a.program_id}) {a.state}"
        + (
            f", solutions {a.progress.get('solutions')}, objective {a.progress.get('objective')}"
            if a.progress
            else ""
        )
        for a in report.active_runs
    ]
    failures = [
        f"{f.run_id} ({f.program_id}): {f.reason or 'no reason stored'}"
        for f in report.recent_failures
    ]
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": "rsched situation report"}},
        _section("Runs by state", _esc(states)),
        _section("Health", _esc(health)),
        _section(
            "Immediate actions",
            _bullets((i.message for i in report.immediate_actions), len(report.immediate_actions)),
        ),
        _section(
            "Watch items",
            _bullets((i.message for i in report.watch_items), len(report.watch_items)),
        ),
        _section(
            f"Active runs ({report.active_runs_total})",
            _bullets(active, report.active_runs_total),
        ),
        _section(
            f"Failures in the last {report.failure_window_hours:g} h ({report.failures_in_window})",
            _bullets(failures, report.failures_in_window),
        ),
        _section("Programs", _bullets(programs, len(programs))),
        {
            "type": "context",
            "elements": [
                {
                    "type": "mrkdwn",
                    "text": f"generated {report.generated_at.isoformat(timespec='seconds')}",
                }
            ],
        },
    ]
    return {"text": summary, "blocks": blocks}


# ---------------------------------------------------------------------- rate limit


def check_rate(session: Session, *, actor: Actor, action: str, now: datetime | None = None) -> None:
    """Refuse (RateLimited, audited and committed) when the actor already has
    ``RATE_LIMIT`` audit rows of ``action`` within ``RATE_WINDOW``."""
    at = now or datetime.now(UTC)
    since = at - RATE_WINDOW
    count, oldest = session.execute(
        select(func.count(), func.min(AuditRow.at)).where(
            AuditRow.actor == actor.user_id, AuditRow.action == action, AuditRow.at > since
        )
    ).one()
    if int(count) < RATE_LIMIT:
        return
    first = _aware(oldest) or at
    retry = max(1, math.ceil((first + RATE_WINDOW - at).total_seconds()))
    audit.record(
        session,
        actor=actor,
        action=f"{action}.rate_limited",
        outcome="refused",
        detail={"limit": RATE_LIMIT, "window_seconds": RATE_WINDOW.total_seconds()},
    )
    session.commit()
    raise RateLimited(retry)


def _refused(session: Session, actor: Actor, action: str, program_id: str | None, why: str) -> None:
    """Audit a refusal so that it survives the rollback of the request."""
    audit.record(
        session,
        actor=actor,
        action=action,
        program_id=program_id,
        outcome="refused",
        detail={"why": why},
    )
    session.commit()


def _authorize_audited(session: Session, actor: Actor, program_id: str, action: str) -> None:
    try:
        authorize(actor, program_id, Need.MANAGE)
    except NotFound:
        _refused(session, actor, action, None, f"program {program_id!r} not visible")
        raise
    except Forbidden:
        _refused(session, actor, action, program_id, "role may not do this")
        raise


# -------------------------------------------------------------------------- fix-it


def fix_it(
    session: Session,
    *,
    actor: Actor,
    program_id: str,
    mode: str,
    dry_run: bool,
    guard: Callable[[], object] | None = None,
    now: datetime | None = None,
) -> FixItPlan:
    """Plan (and unless ``dry_run``, queue) follow-ups of the program's failed runs of
    the last ``FAILURE_WINDOW``, using only the actions ``mode`` allows. ``guard`` is
    called once before the first run is queued (the backup guard; not in a dry run)."""
    check_rate(session, actor=actor, action=FIXIT_ACTION)
    _authorize_audited(session, actor, program_id, FIXIT_ACTION)
    if mode not in MODES:
        raise InvalidInput(FieldError("mode", f"unknown mode {mode!r}; one of {', '.join(MODES)}"))
    if session.get(ProgramRow, program_id) is None:
        raise NotFound(f"program {program_id!r} not found")
    at = _aware(now) or db_now(session)
    assert at is not None
    allowed = MODES[mode]
    failed = _recent_failures(session, [program_id], False, at)
    done = _followed_up(session, failed)
    actions: list[PlannedAction] = []
    skipped: list[Skipped] = []
    for row in failed:
        follow = classify(row)
        if row.id in done:
            skipped.append(Skipped(run_id=row.id, why=f"already followed up by run {done[row.id]}"))
        elif follow.action is None:
            skipped.append(Skipped(run_id=row.id, why=follow.why))
        elif follow.action not in allowed:
            skipped.append(
                Skipped(
                    run_id=row.id,
                    why=f"{follow.why} ({follow.action} needs mode "
                    f"{LEAST_MODE[follow.action]} or above)",
                )
            )
        elif len(actions) >= MAX_ACTIONS:
            skipped.append(Skipped(run_id=row.id, why=f"at most {MAX_ACTIONS} follow-ups per call"))
        else:
            actions.append(_planned(row, follow))
    if not dry_run and actions:
        if guard is not None:
            guard()
        for planned in actions:
            view, created = runs.create_run(
                session,
                actor=actor,
                program_id=program_id,
                idempotency_key=planned.idempotency_key,
                algorithm=planned.algorithm,
                params=planned.params,
                max_attempts=_source(failed, planned.source_run_id).max_attempts,
            )
            planned.run_id, planned.created = view.id, created
    audit.record(
        session,
        actor=actor,
        action=FIXIT_ACTION,
        program_id=program_id,
        detail={
            "mode": mode,
            "dry_run": dry_run,
            "actions": [
                {
                    "action": a.action,
                    "source": a.source_run_id,
                    "key": a.idempotency_key,
                    "run": a.run_id,
                }
                for a in actions
            ],
            "skipped": len(skipped),
        },
    )
    return FixItPlan(
        program_id=program_id,
        mode=mode,  # type: ignore[arg-type]
        dry_run=dry_run,
        window_hours=FAILURE_WINDOW.total_seconds() / 3600,
        actions=actions,
        skipped=skipped,
    )


def _source(rows: list[RunRow], run_id: str) -> RunRow:
    return next(r for r in rows if r.id == run_id)


def _planned(row: RunRow, follow: _FollowUp) -> PlannedAction:
    assert follow.action is not None
    params: dict[str, Any] = {
        k: row.params[k] for k in ("time_limit", "workers", "seed") if k in (row.params or {})
    }
    algorithm = row.algorithm
    if follow.action == "requeue_longer":
        params["time_limit"] = min((_time_limit(row.params) or 60.0) * 2, TIME_LIMIT_CAP)
    elif follow.action == "fallback_greedy":
        algorithm = "greedy"
    return PlannedAction(
        action=follow.action,
        source_run_id=row.id,
        idempotency_key=follow_up_key(row),
        algorithm=algorithm,
        params=params,
        why=follow.why,
    )


# ----------------------------------------------------------------- queue a run


def queue_run(
    session: Session,
    *,
    actor: Actor,
    program_id: str,
    idempotency_key: str,
    algorithm: str = "cp_sat",
    params: dict[str, Any] | None = None,
    max_attempts: int = 3,
    guard: Callable[[], object] | None = None,
) -> tuple[runs.RunView, bool]:
    """:func:`rsched.services.runs.create_run` behind the backup guard: the caller's
    rights and the request are checked first, a key already used answers its run, and
    only a new run calls ``guard`` (a recent backup exists, or one is made) first."""
    authorize(actor, program_id, Need.MANAGE)
    if not isinstance(idempotency_key, str) or not runs.KEY_PATTERN.match(idempotency_key):
        raise InvalidInput(
            FieldError("idempotency_key", "must be 8-128 characters of A-Z a-z 0-9 . _ : -")
        )
    p = dict(params or {})
    try:
        SolveParams(
            algorithm=algorithm,
            time_limit=float(p.get("time_limit", 60)),
            workers=int(p.get("workers", 2)),
            seed=int(p.get("seed", 0)),
        ).check()
    except (TypeError, ValueError):
        raise InvalidInput(
            FieldError("params", "time_limit, workers and seed must be numbers")
        ) from None
    existing = session.scalars(
        select(RunRow).where(
            RunRow.program_id == program_id, RunRow.idempotency_key == idempotency_key
        )
    ).first()
    if existing is not None:
        return runs.RunView.of(existing), False
    if session.get(ProgramRow, program_id) is None:
        raise NotFound(f"program {program_id!r} not found")
    if guard is not None:
        guard()
    return runs.create_run(
        session,
        actor=actor,
        program_id=program_id,
        idempotency_key=idempotency_key,
        algorithm=algorithm,
        params=p,
        max_attempts=max_attempts,
    )


# ----------------------------------------------------------------------- approvals


def approve(
    session: Session,
    *,
    actor: Actor,
    token: str,
    approve: bool,
    program_id: str,
    action: str | None = None,
) -> ApprovalDecision:
    """Approve or deny a pending action with its token: rate-limited per actor, the
    program checked first (another program's 404 like everywhere), then
    :func:`approvals.decide` (a second use, an expired token, a token of another program
    or for another action: Forbidden). Every refusal's audit row is committed."""
    check_rate(session, actor=actor, action=DECIDE_ACTION)
    _authorize_audited(session, actor, program_id, DECIDE_ACTION)
    try:
        approval_id = approvals.decide(
            session,
            actor=actor,
            token=token,
            approve=approve,
            program_id=program_id,
            action=action,
        )
    except Forbidden:
        session.commit()  # the refusal's audit row, written by decide
        raise
    row = session.get(ApprovalRow, approval_id)
    assert row is not None
    return ApprovalDecision(
        approval_id=row.id,
        program_id=row.program_id,
        action=row.action,
        target=row.target,
        decision="approved" if approve else "denied",
    )
