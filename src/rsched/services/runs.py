"""Runs as jobs on the database: create (idempotent), claim with a lease, heartbeat,
checkpoint, finish; every worker write is fenced by the attempt it claimed.

Claiming is one statement, ``UPDATE … WHERE id = (SELECT … LIMIT 1) RETURNING``: on
PostgreSQL the sub-select takes ``FOR UPDATE SKIP LOCKED`` so concurrent workers pass
over each other's rows; on SQLite the statement runs under the database write lock,
which makes it an immediate transaction of its own. A worker that dies leaves its lease
to expire; ``reap_expired`` puts the run back in the queue (or fails it after
``max_attempts``), and the next claim resumes from the last verified checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from rsched.db.models import ProgramRow, RunCheckpointRow, RunRow
from rsched.domain import FieldError, InvalidInput, NotFound, RschedError, RunState
from rsched.services import audit
from rsched.services.access import Actor, Need, authorize
from rsched.services.leader import db_now
from rsched.solver.api import SolveParams

KEY_PATTERN = re.compile(r"^[A-Za-z0-9._:-]{8,128}$")
ACTIVE = (RunState.QUEUED.value, RunState.RUNNING.value)


class Fenced(RschedError):
    """The write came from a worker whose lease is gone (a newer attempt owns the run)."""


class RunConflict(RschedError):
    """The run is not in a state that allows this (e.g. aborting a finished run)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RunView:
    id: str
    program_id: str
    state: str
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
    result_version_id: str | None
    lease_owner: str | None
    lease_expires_at: datetime | None

    @classmethod
    def of(cls, row: RunRow) -> RunView:
        return cls(**{f: getattr(row, f) for f in cls.__dataclass_fields__})


@dataclass(frozen=True, slots=True, kw_only=True)
class Claim:
    run_id: str
    program_id: str
    attempt: int
    owner: str
    params: dict[str, Any]
    algorithm: str


def now() -> datetime:
    return datetime.now(UTC)


def lease_clock(session: Session) -> datetime:
    """The clock of run leases: the database's on PostgreSQL (workers on hosts whose
    clocks disagree still agree on when a lease expires; a slow clock on one host no
    longer makes the reaper on another take a live run back), the local one on the
    embedded SQLite database, which lives on one machine."""
    return db_now(session)


def _params(algorithm: str, params: dict[str, Any]) -> SolveParams:
    try:
        p = SolveParams(
            algorithm=algorithm,
            time_limit=float(params.get("time_limit", 60)),
            workers=int(params.get("workers", 2)),
            seed=int(params.get("seed", 0)),
        )
    except (TypeError, ValueError):
        raise InvalidInput(
            FieldError("params", "time_limit, workers and seed must be numbers")
        ) from None
    p.check()
    return p


def solve_params(claim: Claim) -> SolveParams:
    return _params(claim.algorithm, claim.params)


def create_run(
    session: Session,
    *,
    actor: Actor,
    program_id: str,
    idempotency_key: str,
    algorithm: str = "cp_sat",
    params: dict[str, Any] | None = None,
    max_attempts: int = 3,
) -> tuple[RunView, bool]:
    """Queue a run; the same key for the same program returns the same run (never a
    second). Returns the run and whether it was created now."""
    authorize(actor, program_id, Need.MANAGE)
    if not isinstance(idempotency_key, str) or not KEY_PATTERN.match(idempotency_key):
        raise InvalidInput(
            FieldError("idempotency_key", "must be 8-128 characters of A-Z a-z 0-9 . _ : -")
        )
    params = dict(params or {})
    checked = _params(algorithm, params)
    if not 1 <= max_attempts <= 10:
        raise InvalidInput(FieldError("max_attempts", "must be 1..10"))
    if session.get(ProgramRow, program_id) is None:
        raise NotFound(f"program {program_id!r} not found")
    existing = _by_key(session, program_id, idempotency_key)
    if existing is not None:
        return RunView.of(existing), False
    row = RunRow(
        id=uuid.uuid4().hex,
        program_id=program_id,
        idempotency_key=idempotency_key,
        state=RunState.QUEUED.value,
        algorithm=checked.algorithm,
        params={"time_limit": checked.time_limit, "workers": checked.workers, "seed": checked.seed},
        requested_by=actor.user_id,
        attempt=0,
        max_attempts=max_attempts,
        created_at=now(),
        progress={},
    )
    try:
        with session.begin_nested():
            session.add(row)
            session.flush()
    except IntegrityError:
        # another request with the same key won the race: answer with its run
        existing = _by_key(session, program_id, idempotency_key)
        if existing is None:
            raise
        return RunView.of(existing), False
    audit.record(
        session,
        actor=actor,
        action="run.create",
        program_id=program_id,
        target=row.id,
        detail={"algorithm": row.algorithm, "params": row.params},
    )
    return RunView.of(row), True


def _by_key(session: Session, program_id: str, key: str) -> RunRow | None:
    return session.scalars(
        select(RunRow).where(RunRow.program_id == program_id, RunRow.idempotency_key == key)
    ).first()


def get_run(session: Session, *, actor: Actor, run_id: str) -> RunView:
    row = session.get(RunRow, run_id)
    if row is None:
        raise NotFound(f"run {run_id!r} not found")
    try:
        authorize(actor, row.program_id, Need.READ_PUBLISHED)
    except NotFound:
        raise NotFound(f"run {run_id!r} not found") from None
    return RunView.of(row)


def list_active(session: Session, *, actor: Actor, program_id: str | None = None) -> list[RunView]:
    """Queued and running runs: of one program, or of every program the actor sees."""
    stmt = select(RunRow).where(RunRow.state.in_(ACTIVE)).order_by(RunRow.created_at)
    if program_id is not None:
        authorize(actor, program_id, Need.READ_PUBLISHED)
        stmt = stmt.where(RunRow.program_id == program_id)
    else:
        visible = actor.visible_programs()
        if visible is not None:
            stmt = stmt.where(RunRow.program_id.in_(sorted(visible)))
    return [RunView.of(r) for r in session.scalars(stmt)]


# ------------------------------------------------------------------ worker side


def claim_next(session: Session, *, owner: str, lease_seconds: float) -> Claim | None:
    """Take the oldest queued run with a lease; the attempt number goes up by one."""
    at = lease_clock(session)
    pick = (
        select(RunRow.id)
        .where(RunRow.state == RunState.QUEUED.value)
        .order_by(RunRow.created_at, RunRow.id)
        .limit(1)
    )
    if session.get_bind().dialect.name == "postgresql":
        pick = pick.with_for_update(skip_locked=True)
    stmt = (
        update(RunRow)
        .where(RunRow.id == pick.scalar_subquery(), RunRow.state == RunState.QUEUED.value)
        .values(
            state=RunState.RUNNING.value,
            attempt=RunRow.attempt + 1,
            lease_owner=owner,
            lease_expires_at=at + timedelta(seconds=lease_seconds),
            heartbeat_at=at,
            started_at=func.coalesce(RunRow.started_at, at),
        )
        .returning(RunRow.id, RunRow.program_id, RunRow.attempt, RunRow.params, RunRow.algorithm)
        .execution_options(synchronize_session=False)
    )
    row = session.execute(stmt).first()
    if row is None:
        return None
    return Claim(
        run_id=row.id,
        program_id=row.program_id,
        attempt=row.attempt,
        owner=owner,
        params=dict(row.params or {}),
        algorithm=row.algorithm,
    )


def _fence(claim: Claim) -> Any:
    return and_(
        RunRow.id == claim.run_id,
        RunRow.attempt == claim.attempt,
        RunRow.lease_owner == claim.owner,
        RunRow.state == RunState.RUNNING.value,
    )


def _fenced_update(session: Session, claim: Claim, **values: Any) -> None:
    result = session.execute(
        update(RunRow)
        .where(_fence(claim))
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise Fenced(f"run {claim.run_id}: attempt {claim.attempt} no longer holds the lease")


def heartbeat(
    session: Session, claim: Claim, *, lease_seconds: float, progress: dict[str, Any] | None = None
) -> None:
    """Renew the lease (and record the latest progress); Fenced if the lease was lost."""
    at = lease_clock(session)
    values: dict[str, Any] = {
        "heartbeat_at": at,
        "lease_expires_at": at + timedelta(seconds=lease_seconds),
    }
    if progress is not None:
        values["progress"] = progress
        if progress.get("objective") is not None:
            values["best_objective"] = progress["objective"]
    _fenced_update(session, claim, **values)


def checkpoint_content(pairs: list[tuple[str, str]], objective: float) -> tuple[str, str]:
    content = json.dumps(
        {"pairs": sorted(pairs), "objective": objective}, separators=(",", ":"), sort_keys=True
    )
    return content, hashlib.sha256(content.encode("utf-8")).hexdigest()


def save_checkpoint(
    session: Session, claim: Claim, *, pairs: list[tuple[str, str]], objective: float
) -> None:
    """Store an improving solution, fenced: the lease is checked (and renewed) first, in
    the same transaction, so a stale worker's checkpoint is never written."""
    _fenced_update(session, claim, best_objective=objective)
    content, digest = checkpoint_content(pairs, objective)
    session.execute(
        insert(RunCheckpointRow).values(
            run_id=claim.run_id,
            program_id=claim.program_id,
            attempt=claim.attempt,
            objective=objective,
            sha256=digest,
            content=content,
            created_at=now(),
        )
    )


def latest_checkpoint(
    session: Session, run_id: str
) -> tuple[frozenset[tuple[str, str]], float] | None:
    """The newest checkpoint whose content matches its hash (corrupt ones are passed over
    and reported by the caller's audit, never used)."""
    rows = session.scalars(
        select(RunCheckpointRow)
        .where(RunCheckpointRow.run_id == run_id)
        .order_by(RunCheckpointRow.id.desc())
        .limit(20)
    )
    for row in rows:
        if hashlib.sha256(row.content.encode("utf-8")).hexdigest() != row.sha256:
            continue
        doc = json.loads(row.content)
        return frozenset((p, s) for p, s in doc["pairs"]), float(doc["objective"])
    return None


def finish(
    session: Session,
    claim: Claim,
    *,
    state: RunState,
    stop_reason: str | None = None,
    failure_reason: str | None = None,
    transient: bool = False,
    result_version_id: str | None = None,
    progress: dict[str, Any] | None = None,
) -> None:
    values: dict[str, Any] = {
        "state": state.value,
        "finished_at": now(),
        "lease_owner": None,
        "lease_expires_at": None,
        "stop_reason": stop_reason,
        "failure_reason": failure_reason,
        "failure_transient": transient,
        "result_version_id": result_version_id,
    }
    if progress is not None:
        values["progress"] = progress
    _fenced_update(session, claim, **values)


def check_fence(session: Session, claim: Claim) -> None:
    """Raise Fenced unless ``claim`` still holds the run (use before writing results)."""
    _fenced_update(session, claim, heartbeat_at=now())


def reap_expired(session: Session) -> list[str]:
    """Runs whose lease expired go back to the queue, or fail after their last attempt."""
    at = lease_clock(session)
    expired = list(
        session.scalars(
            select(RunRow).where(
                RunRow.state == RunState.RUNNING.value, RunRow.lease_expires_at < at
            )
        )
    )
    changed: list[str] = []
    for row in expired:
        last = row.attempt >= row.max_attempts
        if _changed(
            session,
            update(RunRow)
            .where(
                RunRow.id == row.id,
                RunRow.attempt == row.attempt,
                RunRow.state == RunState.RUNNING.value,
                RunRow.lease_expires_at < at,
            )
            .values(
                state=RunState.FAILED.value if last else RunState.QUEUED.value,
                lease_owner=None,
                lease_expires_at=None,
                failure_reason=(
                    f"worker lost after {row.attempt} attempt(s) (lease expired)" if last else None
                ),
                failure_transient=True,
                finished_at=at if last else None,
            ),
        ):
            changed.append(row.id)
    return changed


def request_abort(session: Session, *, actor: Actor, run_id: str, reason: str) -> RunView:
    """Record an abort (durably; the worker also sees it through the control store).
    Only coordinators and admins of the run's program; a finished run is a conflict."""
    row = session.get(RunRow, run_id)
    if row is None:
        raise NotFound(f"run {run_id!r} not found")
    try:
        authorize(actor, row.program_id, Need.MANAGE)
    except NotFound:
        audit.record(
            session,
            actor=actor,
            action="run.abort",
            target=run_id,
            outcome="refused",
            detail={"why": "not visible"},
        )
        raise NotFound(f"run {run_id!r} not found") from None
    if not isinstance(reason, str) or not reason.strip() or len(reason) > 500:
        raise InvalidInput(FieldError("reason", "a reason of 1-500 characters is required"))
    def finished_already() -> RunConflict:
        audit.record(
            session,
            actor=actor,
            action="run.abort",
            program_id=row.program_id,
            target=run_id,
            outcome="refused",
            detail={"state": row.state},
        )
        return RunConflict(
            f"run {run_id} is {row.state}; only queued or running runs can be aborted"
        )

    if row.state not in ACTIVE:
        raise finished_already()
    at = now()
    marks = {"abort_requested_at": at, "abort_reason": reason, "abort_by": actor.user_id}
    # conditional updates, so a worker claiming (or finishing) the run since it was read
    # above cannot make the abort vanish: queued → aborted; else a running run is asked
    # to stop; else it finished meanwhile, a conflict like any finished run
    stopped = _changed(
        session,
        update(RunRow)
        .where(RunRow.id == run_id, RunRow.state == RunState.QUEUED.value)
        .values(state=RunState.ABORTED.value, finished_at=at, stop_reason="aborted", **marks),
    ) or _changed(
        session,
        update(RunRow)
        .where(RunRow.id == run_id, RunRow.state == RunState.RUNNING.value)
        .values(**marks),
    )
    if not stopped:
        session.refresh(row)
        raise finished_already()
    audit.record(
        session,
        actor=actor,
        action="run.abort",
        program_id=row.program_id,
        target=run_id,
        detail={"reason": reason, "state": row.state},
    )
    session.refresh(row)
    return RunView.of(row)


def _changed(session: Session, statement: Any) -> bool:
    result = session.execute(statement.execution_options(synchronize_session=False))
    return bool(getattr(result, "rowcount", 0))


def abort_requested(session: Session, run_id: str) -> str | None:
    """The durable abort reason of a run, if one was requested."""
    row = session.execute(
        select(RunRow.abort_requested_at, RunRow.abort_reason).where(RunRow.id == run_id)
    ).first()
    if row is None or row.abort_requested_at is None:
        return None
    return row.abort_reason or "abort requested"
