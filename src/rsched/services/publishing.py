"""Safe publishing: diff guard, validation gate, one-time tokens, write-ahead staging,
activation, recovery and rollback (ARCHITECTURE.md, "The life of a publish").

Protocol, each step its own transaction:
1. consume the one-time token (conditional update: a replay is refused);
2. gate and diff guard on the draft as it is now (re-validated against the program);
3. stage: a ``pending`` staging row (previous active ids, the draft's checksum) and a
   backup of every row the activation will change;
4. activate: re-check the checksum and that the previous active versions are unchanged,
   switch statuses and mark the staging ``committed`` — all in one transaction.
A crash anywhere leaves either nothing changed (a pending staging that recovery
completes or rolls back) or the whole switch committed: never a mix.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from rsched import metrics
from rsched.db.base import refresh_statistics
from rsched.db.mapping import load_program_data
from rsched.db.models import (
    AssignmentRow,
    PersonRow,
    ProgramRow,
    PublishTokenRow,
    ScheduleVersionRow,
    ShiftTypeRow,
    SlotRow,
    StagingBackupRow,
    StagingRow,
)
from rsched.domain import Assignment, FieldError, InvalidInput, NotFound, RschedError
from rsched.rules.report import validate
from rsched.services import approvals, audit, outbox
from rsched.services.access import Actor, Forbidden, Need, authorize
from rsched.services.schedules import content_hash
from rsched.solver.api import SolveParams
from rsched.solver.n1 import n_minus_one

Pair = tuple[str, str]
Hook = Callable[[str], None]

ROLLBACK_REASONS = ("manual", "gate", "recovery")
"""The ``reason`` label of ``scheduler_rollback_total``: a coordinator's rollback, a staged
publish whose activation re-check refused it, a pending staging recovery rolled back."""
for _reason in ROLLBACK_REASONS:  # every series exists from the start, for increase()
    metrics.ROLLBACK.labels(reason=_reason)


class PublishRefused(RschedError):
    """The gate or the diff guard refused; ``report`` says why (HTTP 409)."""

    def __init__(self, message: str, report: dict[str, Any]) -> None:
        super().__init__(message)
        self.report = report


class BackupGuard(Protocol):
    def ensure_recent(self, *, program_id: str, reason: str) -> str:
        """Make sure a recent backup exists (making one if needed); its id. Raises when
        the backup fails, which blocks the write."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class PublishPolicy:
    max_violations: int = 0
    min_coverage: float = 1.0
    churn_limit: float = 0.20
    """Refuse when more than this fraction of the active assignments change."""
    person_max_changes: int = 10
    person_max_fraction: float = 0.5
    person_warn_fraction: float = 0.3
    token_minutes: int = 10
    n1_required: bool = False
    """Refuse a schedule that cannot absorb the sudden loss of any one person."""
    n1_seconds_per_person: float = 2.0

    @classmethod
    def of(cls, settings: dict[str, Any] | None) -> PublishPolicy:
        raw = dict((settings or {}).get("publish") or {})
        known = {k: raw[k] for k in cls.__dataclass_fields__ if k in raw}
        return cls(**known)


@dataclass(frozen=True, slots=True, kw_only=True)
class PersonChange:
    person: str
    added: tuple[str, ...]
    removed: tuple[str, ...]
    before: int
    fraction: float | None
    verdict: str


@dataclass(frozen=True, slots=True, kw_only=True)
class DiffReport:
    version_id: str
    against: tuple[str, ...]
    added: int
    removed: int
    active_assignments: int
    churn: float
    people: tuple[PersonChange, ...]
    verdict: str
    reasons: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "version_id": self.version_id,
            "against": list(self.against),
            "added": self.added,
            "removed": self.removed,
            "active_assignments": self.active_assignments,
            "churn": round(self.churn, 6),
            "verdict": self.verdict,
            "reasons": list(self.reasons),
            "people": [
                {
                    "person": p.person,
                    "added": list(p.added),
                    "removed": list(p.removed),
                    "before": p.before,
                    "fraction": p.fraction,
                    "verdict": p.verdict,
                }
                for p in self.people
            ],
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class PublishResult:
    version_id: str
    staging_id: str
    superseded: tuple[str, ...]
    diff: DiffReport
    gate: dict[str, Any] = field(default_factory=dict)


PUBLISHED_TABLES = tuple(
    row.__tablename__
    for row in (AssignmentRow, ScheduleVersionRow, SlotRow, PersonRow, ShiftTypeRow)
)
"""What the calendar feeds and grids read of a published schedule: their planner
statistics are refreshed after each publish (rsched.db.base.refresh_statistics)."""


def _now() -> datetime:
    return datetime.now(UTC)


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _pairs(session: Session, version_id: str) -> set[Pair]:
    return {
        (p, s)
        for p, s in session.execute(
            select(AssignmentRow.person_id, AssignmentRow.slot_id).where(
                AssignmentRow.version_id == version_id
            )
        )
    }


def _version(session: Session, program_id: str, version_id: str) -> ScheduleVersionRow:
    row = session.get(ScheduleVersionRow, version_id)
    if row is None or row.program_id != program_id:
        raise NotFound(f"schedule version {version_id!r} not found")
    return row


def _active_over(session: Session, draft: ScheduleVersionRow) -> list[ScheduleVersionRow]:
    return list(
        session.scalars(
            select(ScheduleVersionRow)
            .where(
                ScheduleVersionRow.program_id == draft.program_id,
                ScheduleVersionRow.status == "active",
                ScheduleVersionRow.start <= draft.end,
                ScheduleVersionRow.end >= draft.start,
                ScheduleVersionRow.id != draft.id,
            )
            .order_by(ScheduleVersionRow.id)
        )
    )


def compute_diff(
    draft_id: str, against: list[str], new: set[Pair], old: set[Pair], policy: PublishPolicy
) -> DiffReport:
    """Churn of ``new`` against ``old``. Global churn = max(added, removed) ÷ active
    assignments; refused when strictly above the limit (exactly at the limit passes)."""
    added, removed = new - old, old - new
    churn = max(len(added), len(removed)) / len(old) if old else 0.0
    before: dict[str, int] = defaultdict(int)
    for p, _ in old:
        before[p] += 1
    by_person: dict[str, tuple[list[str], list[str]]] = defaultdict(lambda: ([], []))
    for p, s in added:
        by_person[p][0].append(s)
    for p, s in removed:
        by_person[p][1].append(s)
    people: list[PersonChange] = []
    reasons: list[str] = []
    verdict = "ok"
    for person in sorted(by_person):
        add, rem = by_person[person]
        changes = len(add) + len(rem)
        fraction = changes / before[person] if before[person] else None
        pv = "ok"
        # a person with nothing published (fraction None) has nothing to protect
        if fraction is not None and (
            changes > policy.person_max_changes or fraction > policy.person_max_fraction
        ):
            pv = "refuse"
            reasons.append(
                f"{person}: {changes} changed assignment(s)"
                + (f" ({fraction:.0%} of {before[person]})" if fraction is not None else "")
            )
        elif fraction is not None and fraction > policy.person_warn_fraction:
            pv = "warn"
        people.append(
            PersonChange(
                person=person,
                added=tuple(sorted(add)),
                removed=tuple(sorted(rem)),
                before=before[person],
                fraction=fraction,
                verdict=pv,
            )
        )
    if churn > policy.churn_limit:
        reasons.insert(0, f"churn {churn:.1%} is above the limit {policy.churn_limit:.0%}")
    if reasons:
        verdict = "refuse"
    elif any(p.verdict == "warn" for p in people):
        verdict = "warn"
    return DiffReport(
        version_id=draft_id,
        against=tuple(against),
        added=len(added),
        removed=len(removed),
        active_assignments=len(old),
        churn=churn,
        people=tuple(people),
        verdict=verdict,
        reasons=tuple(reasons),
    )


def diff(session: Session, *, actor: Actor, program_id: str, version_id: str) -> DiffReport:
    authorize(actor, program_id, Need.MANAGE)
    draft = _version(session, program_id, version_id)
    program = session.get(ProgramRow, program_id)
    policy = PublishPolicy.of(program.settings if program else None)
    actives = _active_over(session, draft)
    old: set[Pair] = set()
    for v in actives:
        old |= _pairs(session, v.id)
    return compute_diff(
        version_id, [v.id for v in actives], _pairs(session, version_id), old, policy
    )


def gate(
    session: Session, program_id: str, version_id: str, policy: PublishPolicy
) -> dict[str, Any]:
    """Re-validate the draft against the program as it is now."""
    data = load_program_data(session, program_id)
    assignments = [Assignment(person_id=p, slot_id=s) for p, s in _pairs(session, version_id)]
    report = validate(data, assignments)
    problems = []
    if len(report.violations) > policy.max_violations:
        problems.append(
            f"{len(report.violations)} hard violation(s), at most {policy.max_violations} allowed"
        )
    if report.coverage < policy.min_coverage:
        problems.append(f"coverage {report.coverage:.1%} is below {policy.min_coverage:.0%}")
    result: dict[str, Any] = {"validation": report.summary()}
    if policy.n1_required and not problems:
        n1 = n_minus_one(
            data,
            assignments,
            params_per_person=SolveParams(time_limit=policy.n1_seconds_per_person, workers=1),
        )
        result["n1"] = {"not_absorbable": n1.not_absorbable}
        if n1.not_absorbable:
            problems.append(
                "N-1: the schedule cannot absorb the loss of " + ", ".join(n1.not_absorbable)
            )
    return {"ok": not problems, "problems": problems, **result}


# ---------------------------------------------------------------------- tokens


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def create_publish_token(
    session: Session, *, actor: Actor, program_id: str, version_id: str
) -> tuple[str, datetime]:
    authorize(actor, program_id, Need.MANAGE)
    draft = _version(session, program_id, version_id)
    if draft.status != "draft":
        raise InvalidInput(FieldError("version_id", f"version is {draft.status}, not a draft"))
    program = session.get(ProgramRow, program_id)
    policy = PublishPolicy.of(program.settings if program else None)
    token = secrets.token_urlsafe(32)
    now = _now()
    row = PublishTokenRow(
        id=uuid.uuid4().hex,
        token_hash=_hash(token),
        program_id=program_id,
        version_id=version_id,
        user_id=actor.user_id,
        created_at=now,
        expires_at=now + timedelta(minutes=policy.token_minutes),
    )
    session.add(row)
    audit.record(
        session, actor=actor, action="publish.token", program_id=program_id, target=version_id
    )
    return token, row.expires_at


def _consume_token(
    session: Session, actor: Actor, program_id: str, version_id: str, token: str
) -> None:
    now = _now()
    result = session.execute(
        update(PublishTokenRow)
        .where(
            PublishTokenRow.token_hash == _hash(str(token)),
            PublishTokenRow.program_id == program_id,
            PublishTokenRow.version_id == version_id,
            PublishTokenRow.user_id == actor.user_id,
            PublishTokenRow.consumed_at.is_(None),
            PublishTokenRow.expires_at > now,
        )
        .values(consumed_at=now)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise Forbidden("publish token refused: unknown, expired, already used, or not yours")


# --------------------------------------------------------------------- publish


def publish(
    factory: sessionmaker[Session],
    *,
    actor: Actor,
    program_id: str,
    version_id: str,
    token: str,
    backups: BackupGuard,
    override_reason: str | None = None,
    hook: Hook | None = None,
) -> PublishResult:
    step = hook or (lambda _name: None)
    with factory() as s, s.begin():
        authorize(actor, program_id, Need.MANAGE)
        try:
            _consume_token(s, actor, program_id, version_id, token)
        except Forbidden:
            audit.record(
                s,
                actor=actor,
                action="publish",
                program_id=program_id,
                target=version_id,
                outcome="refused",
                detail={"why": "token"},
            )
            s.commit()
            raise
    step("token_consumed")
    with factory() as s, s.begin():
        draft = _version(s, program_id, version_id)
        if draft.status != "draft":
            raise InvalidInput(FieldError("version_id", f"version is {draft.status}, not a draft"))
        program = s.get(ProgramRow, program_id)
        policy = PublishPolicy.of(program.settings if program else None)
        checks = gate(s, program_id, version_id, policy)
        report = diff(s, actor=actor, program_id=program_id, version_id=version_id)
        if not checks["ok"]:
            audit.record(
                s,
                actor=actor,
                action="publish",
                program_id=program_id,
                target=version_id,
                outcome="refused",
                detail={"gate": checks["problems"]},
            )
            s.commit()
            raise PublishRefused(
                "validation gate refused: " + "; ".join(checks["problems"]),
                {"gate": checks, "diff": report.to_dict()},
            )
        if report.verdict == "refuse":
            if override_reason is None:
                audit.record(
                    s,
                    actor=actor,
                    action="publish",
                    program_id=program_id,
                    target=version_id,
                    outcome="refused",
                    detail={"diff": list(report.reasons)},
                )
                s.commit()
                raise PublishRefused(
                    "diff guard refused: " + "; ".join(report.reasons),
                    {"gate": checks, "diff": report.to_dict()},
                )
            approvals.consume(
                s, program_id=program_id, action="publish_override", target=version_id
            )
            audit.record(
                s,
                actor=actor,
                action="publish.override",
                program_id=program_id,
                target=version_id,
                detail={"reason": override_reason, "diff": list(report.reasons)},
            )
    step("checked")
    backups.ensure_recent(program_id=program_id, reason="publish")
    step("backed_up")
    staging_id = stage(
        factory,
        actor=actor,
        program_id=program_id,
        version_id=version_id,
        detail={"diff": report.to_dict()["verdict"]},
    )
    step("staged")
    try:
        superseded = activate(factory, staging_id, hook=step)
    except PublishRefused:
        metrics.ROLLBACK.labels(reason="gate").inc()
        raise
    except NotFound:  # another process's recovery resolved our staging first
        superseded = _resolved_elsewhere(factory, staging_id)
    else:
        metrics.VALID_PUBLISH.inc()
    step("committed")
    refresh_statistics(factory, PUBLISHED_TABLES)  # the feeds and grids read them next
    return PublishResult(
        version_id=version_id,
        staging_id=staging_id,
        superseded=superseded,
        diff=report,
        gate=checks,
    )


def _resolved_elsewhere(factory: sessionmaker[Session], staging_id: str) -> tuple[str, ...]:
    """What became of a staging that another process resolved (recovery at its start-up,
    or the leader's loop, between our staging and our activation): committed is our
    publish done (and counted there); anything else is a refusal."""
    with factory() as s:
        staging = s.get(StagingRow, staging_id)
        if staging is not None and staging.state == "committed":
            return tuple(staging.previous_active)
    raise PublishRefused(
        "the draft or the active schedule changed since staging; nothing was published",
        {"staging": staging_id},
    )


def stage(
    factory: sessionmaker[Session],
    *,
    actor: Actor,
    program_id: str,
    version_id: str,
    detail: dict[str, Any],
    kind: str = "publish",
) -> str:
    """Write the pending staging row and the backups of the rows activation will change."""
    with factory() as s, s.begin():
        _lock_program(s, program_id)
        pending = s.scalars(
            select(StagingRow.id).where(
                StagingRow.program_id == program_id, StagingRow.state == "pending"
            )
        ).first()
        if pending is not None:
            raise PublishRefused(
                "another publish of this program is in progress", {"staging": pending}
            )
        draft = _version(s, program_id, version_id)
        actives = _active_over(s, draft)
        staging_id = uuid.uuid4().hex
        s.add(
            StagingRow(
                id=staging_id,
                program_id=program_id,
                version_id=version_id,
                previous_active=[v.id for v in actives],
                checksum=content_hash(_pairs(s, version_id)),
                state="pending",
                kind=kind,
                actor=actor.user_id,
                detail=detail,
                created_at=_now(),
            )
        )
        s.flush()
        for v in [*actives, draft]:
            s.add(
                StagingBackupRow(
                    staging_id=staging_id,
                    table_name="schedule_versions",
                    row_key=v.id,
                    before={"status": v.status},
                )
            )
    return staging_id


def _lock_program(s: Session, program_id: str) -> None:
    """Serialise publishes of one program: PostgreSQL locks the program row; SQLite takes
    the database write lock now (a no-op update) rather than at the first real write, so
    everything read after this call is current until the commit."""
    if s.get_bind().dialect.name == "postgresql":
        found = s.execute(
            select(ProgramRow.id).where(ProgramRow.id == program_id).with_for_update()
        ).first()
    else:
        found = s.execute(
            update(ProgramRow)
            .where(ProgramRow.id == program_id)
            .values(id=ProgramRow.id)
            .returning(ProgramRow.id)
            .execution_options(synchronize_session=False)
        ).first()
    if found is None:
        raise NotFound(f"program {program_id!r} not found")


def activate(
    factory: sessionmaker[Session], staging_id: str, *, hook: Hook | None = None
) -> tuple[str, ...]:
    """Switch the active versions for a pending staging, in one transaction; a draft whose
    content no longer matches, or a previous active version that changed, rolls back."""
    step = hook or (lambda _name: None)
    with factory() as s, s.begin():
        staging = s.get(StagingRow, staging_id)
        if staging is None or staging.state != "pending":
            raise NotFound(f"no pending staging {staging_id!r}")
        _lock_program(s, staging.program_id)
        s.refresh(staging)
        if staging.state != "pending":  # resolved while we waited for the lock
            raise NotFound(f"no pending staging {staging_id!r}")
        draft = s.get(ScheduleVersionRow, staging.version_id)
        current = [v.id for v in _active_over(s, draft)] if draft else []
        if (
            draft is None
            or draft.status != "draft"
            or content_hash(_pairs(s, draft.id)) != staging.checksum
            or sorted(current) != sorted(staging.previous_active)
        ):
            staging.state = "rolled_back"
            staging.resolved_at = _now()
            audit.record(
                s,
                actor=staging.actor,
                action="publish.rolled_back",
                program_id=staging.program_id,
                target=staging.version_id,
                outcome="refused",
                detail={"why": "draft or active changed"},
            )
            s.commit()
            raise PublishRefused(
                "the draft or the active schedule changed since staging; nothing was published",
                {"staging": staging_id},
            )
        step("before_activate")
        for vid in staging.previous_active:
            s.execute(
                update(ScheduleVersionRow)
                .where(ScheduleVersionRow.id == vid)
                .values(status="superseded")
                .execution_options(synchronize_session=False)
            )
        step("after_supersede")
        s.execute(
            update(ScheduleVersionRow)
            .where(ScheduleVersionRow.id == draft.id)
            .values(status="active")
            .execution_options(synchronize_session=False)
        )
        staging.state = "committed"
        staging.resolved_at = _now()
        audit.record(
            s,
            actor=staging.actor,
            action=staging.kind,
            program_id=staging.program_id,
            target=staging.version_id,
            detail={"superseded": list(staging.previous_active), "staging": staging_id},
        )
        outbox.enqueue(
            s,
            kind=staging.kind,
            program_id=staging.program_id,
            payload={
                "version_id": staging.version_id,
                "superseded": list(staging.previous_active),
                "staging_id": staging_id,
                "actor": staging.actor,
            },
        )
        step("before_commit")
        return tuple(staging.previous_active)


def recover(factory: sessionmaker[Session]) -> list[tuple[str, str]]:
    """Resolve every pending staging (start-up and the leader's loop): complete it when
    the draft still matches its checksum and nothing else changed, else roll it back."""
    with factory() as s:
        pending = list(s.scalars(select(StagingRow.id).where(StagingRow.state == "pending")))
    out: list[tuple[str, str]] = []
    for staging_id in pending:
        try:
            activate(factory, staging_id)
            metrics.VALID_PUBLISH.inc()  # staged after the gate passed: a real publish
            out.append((staging_id, "committed"))
        except PublishRefused:
            metrics.ROLLBACK.labels(reason="recovery").inc()
            out.append((staging_id, "rolled_back"))
        except NotFound:
            continue  # resolved meanwhile by another process
    return out


def last_publish(
    s: Session, program_id: str, *, expected_version_id: str | None = None
) -> tuple[StagingRow, list[StagingBackupRow]]:
    """The program's last committed publish and its backups; NotFound without one,
    PublishRefused when its version is no longer active or is not ``expected_version_id``."""
    last = s.scalars(
        select(StagingRow)
        .where(
            StagingRow.program_id == program_id,
            StagingRow.state == "committed",
            StagingRow.kind == "publish",
        )
        .order_by(StagingRow.resolved_at.desc())
    ).first()
    if last is None:
        raise NotFound("nothing to roll back: no publish of this program")
    if expected_version_id is not None and last.version_id != expected_version_id:
        raise PublishRefused(
            f"the last publish is no longer that of version {expected_version_id}",
            {"last_version_id": last.version_id},
        )
    current = s.get(ScheduleVersionRow, last.version_id)
    if current is None or current.status != "active":
        raise PublishRefused("the last published version is no longer active", {})
    rows = list(s.scalars(select(StagingBackupRow).where(StagingBackupRow.staging_id == last.id)))
    return last, rows


def rollback(
    factory: sessionmaker[Session],
    *,
    actor: Actor,
    program_id: str,
    reason: str,
    backups: BackupGuard,
    expected_version_id: str | None = None,
) -> str:
    """Restore the schedule that was active before the last publish, exactly as the
    staging backups recorded it; audited. Returns the id of the version made active.
    ``expected_version_id``: refuse unless the last publish is that version's (an undo
    of one particular publish must not undo a later one that landed meanwhile). The last
    publish is read again under the program's lock, so a publish racing the rollback is
    either rolled back whole or left alone."""
    if not isinstance(reason, str) or not reason.strip():
        raise InvalidInput(FieldError("reason", "a reason is required"))
    with factory() as s:
        authorize(actor, program_id, Need.MANAGE)
        # refuse early, before a backup is made for nothing
        last_publish(s, program_id, expected_version_id=expected_version_id)
    backups.ensure_recent(program_id=program_id, reason="rollback")
    with factory() as s, s.begin():
        _lock_program(s, program_id)
        last, backups_rows = last_publish(s, program_id, expected_version_id=expected_version_id)
        for b in backups_rows:
            before = (b.before or {}).get("status")
            if before is not None:
                s.execute(
                    update(ScheduleVersionRow)
                    .where(ScheduleVersionRow.id == b.row_key)
                    .values(status=before)
                    .execution_options(synchronize_session=False)
                )
        s.execute(
            update(StagingRow)
            .where(StagingRow.id == last.id)
            .values(state="reverted")
            .execution_options(synchronize_session=False)
        )
        restored = list(last.previous_active)
        audit.record(
            s,
            actor=actor,
            action="rollback",
            program_id=program_id,
            target=last.version_id,
            detail={"reason": reason, "restored": restored},
        )
        outbox.enqueue(
            s,
            kind="rollback",
            program_id=program_id,
            payload={
                "version_id": last.version_id,
                "restored": restored,
                "reason": reason,
                "actor": actor.user_id,
            },
        )
    metrics.ROLLBACK.labels(reason="manual").inc()
    return restored[0] if restored else ""
