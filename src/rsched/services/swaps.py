"""Changes after publishing: swaps of published shifts (who could take one, requests,
execution as a small publish, undo) and the repair of the active schedule.

- ``candidates``: around one assignment ``(person, slot)`` of the program's active
  schedule, every give-away (someone else takes the shift) and trade (someone takes it
  and gives one of theirs back) that adds no hard violation, best for fairness first
  (``rsched.solver.swaps``). The assignment's owner and coordinators may ask.
- ``request_swap``: a resident (or faculty member) for their own assignment, or a
  coordinator for anyone's, names the counterpart (the taker) and, for a trade, the
  taker's shift. The change is checked against the hard rules at once (409 naming the
  rule) and stored as a row of the approvals table (``action="swap"``, the change as
  JSON in ``reason``; its token is never shown: a coordinator decides by the request's
  id). It expires when the first of its shifts starts.
- ``decide_swap``: a coordinator approves or denies a pending request. Approval is
  needed before the counterpart may execute it when the program's settings say so
  (``settings["swaps"]["require_approval"]``, default false); a coordinator executing a
  request approves it by doing so.
- ``execute_swap``: by the counterpart (who thereby accepts) or a coordinator. The
  change is re-checked against the active schedule as it is now, saved as a draft
  (the active assignments with the change, ``source="swap"``), and published through
  ``publishing.publish`` — the same gate, diff guard, backup, staging and audit as any
  publish. Publishing needs a coordinator and a publish token: the service acts for
  the user with the coordinator's rights in this program for this one publish, making
  the token for the user and consuming it in the same call; the swap is audited under
  the user's id (``swap.execute``), the publish too.
- ``undo_swap``: a coordinator rolls back the swap's publish (``publishing.rollback``),
  only while it is still the program's last publish and active.

Past shifts are never swapped: a shift that has started answers 422 naming the field.
Everyone named must belong to the program: a person of another program is unknown here.

- ``repair_active``: after new absences (or other changes to the program), a
  coordinator re-solves only the days of the active schedule that broke
  (``rsched.solver.repair``); the result is stored as a draft, to be diffed and
  published like any other.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import uuid
from collections.abc import Sequence
from datetime import UTC, date, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from rsched.db.mapping import as_utc, load_program_data
from rsched.db.models import (
    ApprovalRow,
    AssignmentRow,
    ScheduleVersionRow,
)
from rsched.domain import (
    Assignment,
    AssignmentSource,
    FieldError,
    InvalidInput,
    NotFound,
    ProgramData,
    ScheduleStatus,
    Severity,
)
from rsched.domain.calendar import local_date
from rsched.rules.base import Violation
from rsched.services import audit, outbox, publishing
from rsched.services.access import Actor, Forbidden, Membership, Need, Role
from rsched.services.publishing import BackupGuard, PublishRefused
from rsched.services.schedules import save_draft
from rsched.services.schemas import Page
from rsched.services.scope import Viewer, viewer
from rsched.solver.api import SolveParams
from rsched.solver.repair import repair
from rsched.solver.swaps import SwapChange, check_swap, swap_candidates

ACTION = "swap"
FORMAT = 1
NOTE_MAX = 1000
MAX_CANDIDATES = 500
Status = Literal["pending", "approved", "denied", "expired", "executed", "undone"]


class SwapRefused(PublishRefused):
    """The swap would break a hard rule, or its state does not allow the step (HTTP 409);
    ``report`` says why."""


# ----------------------------------------------------------------- public shapes


class SwapCandidatePublic(BaseModel):
    kind: Literal["give", "trade"]
    person: str
    slot: str
    taker: str
    taker_slot: str | None = Field(description="in a trade, the taker's shift given back")
    spread_delta: dict[str, int] = Field(description="named spread term → its change")
    fairness_cost: int = Field(description="Σ weight × spread change; negative evens out")
    load_delta_hours: dict[str, float]
    load_balance: float = Field(description="change of Σ hours² of the two people")


class SwapCandidates(BaseModel):
    version_id: str = Field(description="the active version the candidates are for")
    person_id: str
    slot_id: str
    items: list[SwapCandidatePublic]
    total: int = Field(description="every candidate; items holds the first `limit`")


class SwapPublic(BaseModel):
    id: str
    program_id: str
    kind: Literal["give", "trade"]
    person_id: str
    slot_id: str
    taker_id: str
    taker_slot_id: str | None
    note: str
    requested_by: str
    created_at: datetime
    expires_at: datetime
    status: Status
    needs_approval: bool
    decision: str | None
    decided_by: str | None
    decided_at: datetime | None
    executed_at: datetime | None
    version_id: str | None = Field(description="the version its execution published")
    undone_at: datetime | None


class SwapExecuted(BaseModel):
    swap: SwapPublic
    version_id: str
    superseded: list[str]
    diff: dict[str, Any]
    gate: dict[str, Any]


# ----------------------------------------------------------------------- helpers


def _now(now: datetime | None) -> datetime:
    return as_utc(now) if now is not None else datetime.now(UTC)


def _needs_approval(view: Viewer) -> bool:
    raw = ((view.program.settings or {}).get("swaps") or {}).get("require_approval", False)
    return raw is True


def _detail(row: ApprovalRow) -> dict[str, Any]:
    try:
        value = json.loads(row.reason)
    except (TypeError, ValueError):
        value = None
    if not isinstance(value, dict) or value.get("format") != FORMAT:
        raise NotFound(f"swap request {row.id!r} not found")
    return value


def _change(detail: dict[str, Any]) -> SwapChange:
    return SwapChange(
        person_id=str(detail["person"]),
        slot_id=str(detail["slot"]),
        taker_id=str(detail["taker"]),
        taker_slot_id=detail.get("taker_slot"),
    )


def _status(row: ApprovalRow, detail: dict[str, Any], now: datetime) -> Status:
    if detail.get("undone_at"):
        return "undone"
    if row.used_at is not None:
        return "executed"
    if row.decision == "denied":
        return "denied"
    if as_utc(row.expires_at) <= now:
        return "expired"
    if row.decision == "approved":
        return "approved"
    return "pending"


def _public(view: Viewer, row: ApprovalRow, now: datetime | None = None) -> SwapPublic:
    detail = _detail(row)
    change = _change(detail)
    undone = detail.get("undone_at")
    return SwapPublic(
        id=row.id,
        program_id=row.program_id,
        kind=change.kind,
        person_id=change.person_id,
        slot_id=change.slot_id,
        taker_id=change.taker_id,
        taker_slot_id=change.taker_slot_id,
        note=str(detail.get("note") or ""),
        requested_by=row.requested_by,
        created_at=as_utc(row.created_at),
        expires_at=as_utc(row.expires_at),
        status=_status(row, detail, _now(now)),
        needs_approval=_needs_approval(view),
        decision=row.decision,
        decided_by=row.decided_by,
        decided_at=as_utc(row.decided_at) if row.decided_at is not None else None,
        executed_at=as_utc(row.used_at) if row.used_at is not None else None,
        version_id=detail.get("version"),
        undone_at=datetime.fromisoformat(undone) if isinstance(undone, str) else None,
    )


def _parties(detail: dict[str, Any]) -> set[str]:
    return {str(detail["person"]), str(detail["taker"])}


def _row(session: Session, view: Viewer, swap_id: str) -> tuple[ApprovalRow, dict[str, Any]]:
    """The request if the viewer may see it: coordinators any, members their own (as
    the person giving the shift or the taker); NotFound otherwise."""
    row = session.get(ApprovalRow, swap_id)
    if row is None or row.program_id != view.program.id or row.action != ACTION:
        raise NotFound(f"swap request {swap_id!r} not found")
    detail = _detail(row)
    if not view.manages and view.person_id not in _parties(detail):
        raise NotFound(f"swap request {swap_id!r} not found")
    return row, detail


def _write_detail(session: Session, row: ApprovalRow, detail: dict[str, Any]) -> None:
    session.execute(
        update(ApprovalRow)
        .where(ApprovalRow.id == row.id)
        .values(reason=json.dumps(detail, sort_keys=True))
        .execution_options(synchronize_session=False)
    )


def _agent(actor: Actor, program_id: str) -> Actor:
    """The user with a coordinator's rights in this one program: the swap service
    publishing for them after deciding itself that they may make this swap."""
    if actor.role_in(program_id) in (Role.ADMIN, Role.COORDINATOR):
        return actor
    membership = Membership(role=Role.COORDINATOR, person_id=actor.person_in(program_id))
    return Actor(user_id=actor.user_id, memberships={program_id: membership})


def _active_for(
    session: Session, program_id: str, slot_day: date
) -> list[tuple[ScheduleVersionRow, set[tuple[str, str]]]]:
    """The active versions covering ``slot_day``, newest first, with their pairs."""
    rows = session.scalars(
        select(ScheduleVersionRow)
        .where(
            ScheduleVersionRow.program_id == program_id,
            ScheduleVersionRow.status == ScheduleStatus.ACTIVE.value,
            ScheduleVersionRow.start <= slot_day,
            ScheduleVersionRow.end >= slot_day,
        )
        .order_by(ScheduleVersionRow.created_at.desc(), ScheduleVersionRow.id)
    ).all()
    out = []
    for v in rows:
        pairs = {
            (p, s)
            for p, s in session.execute(
                select(AssignmentRow.person_id, AssignmentRow.slot_id).where(
                    AssignmentRow.program_id == program_id, AssignmentRow.version_id == v.id
                )
            )
        }
        out.append((v, pairs))
    return out


def _holding_version(
    session: Session, data: ProgramData, person_id: str, slot_id: str, field: str
) -> tuple[ScheduleVersionRow, set[tuple[str, str]]]:
    """The newest active version in which ``person_id`` works ``slot_id``."""
    day = local_date(data.slot_by_id[slot_id].start, data.tz)
    for version, pairs in _active_for(session, data.program.id, day):
        if (person_id, slot_id) in pairs:
            return version, pairs
    raise NotFound(f"{field}: {person_id!r} is not on {slot_id!r} in the active schedule")


def _known(
    data: ProgramData, refs: Sequence[tuple[str, str | None, Literal["person", "slot"]]]
) -> None:
    errors = []
    for path, ref, kind in refs:
        if ref is None:
            continue
        known = data.person_by_id if kind == "person" else data.slot_by_id
        if ref not in known:
            errors.append(FieldError(path, f"unknown {kind} {ref!r} in program {data.program.id}"))
    if errors:
        raise InvalidInput(errors)


def _not_started(
    data: ProgramData, refs: Sequence[tuple[str, str | None]], now: datetime
) -> datetime:
    """The earliest start of the named slots; InvalidInput for any that has started."""
    errors = []
    first: datetime | None = None
    for path, slot_id in refs:
        if slot_id is None:
            continue
        start = data.slot_by_id[slot_id].start
        if start <= now:
            errors.append(
                FieldError(path, f"{slot_id} started at {start.isoformat()}: past shifts stay")
            )
        first = start if first is None else min(first, start)
    if errors:
        raise InvalidInput(errors)
    assert first is not None
    return first


def _violations(found: Sequence[Violation]) -> list[dict[str, object]]:
    return [v.to_dict() for v in found]


def _refuse_if_broken(
    data: ProgramData, pairs: set[tuple[str, str]], change: SwapChange, version_id: str
) -> None:
    assignments = [Assignment(person_id=p, slot_id=s) for p, s in sorted(pairs)]
    try:
        broken = check_swap(data, assignments, change)
    except InvalidInput as exc:  # the change no longer fits the schedule
        raise SwapRefused(
            "the swap no longer fits the active schedule: " + "; ".join(map(str, exc.errors)),
            {"version_id": version_id, "problems": [str(e) for e in exc.errors]},
        ) from None
    if broken:
        rules = sorted({v.rule for v in broken})
        raise SwapRefused(
            f"the swap would break {', '.join(rules)}: " + "; ".join(v.message for v in broken[:5]),
            {"version_id": version_id, "rules": rules, "violations": _violations(broken)},
        )


# -------------------------------------------------------------------- candidates


def candidates(
    session: Session,
    *,
    actor: Actor,
    program_id: str,
    person_id: str,
    slot_id: str,
    now: datetime | None = None,
    limit: int = 100,
) -> SwapCandidates:
    """Who could take ``person_id``'s shift ``slot_id`` of the active schedule (or trade
    one of theirs for it) without a hard violation, best for fairness first. Trades
    giving back a shift that has started are left out."""
    view = viewer(session, actor, program_id, Need.READ_PUBLISHED)
    if not view.manages and person_id != view.person_id:
        raise NotFound(f"person {person_id!r} not found")
    if not 1 <= limit <= MAX_CANDIDATES:
        raise InvalidInput(FieldError("limit", f"must be 1..{MAX_CANDIDATES}"))
    at = _now(now)
    data = load_program_data(session, program_id)
    if person_id not in data.person_by_id:
        raise NotFound(f"person {person_id!r} not found")
    if slot_id not in data.slot_by_id:
        raise NotFound(f"assignment: unknown slot {slot_id!r}")
    _not_started(data, [("assignment", slot_id)], at)
    version, pairs = _holding_version(session, data, person_id, slot_id, "assignment")
    assignments = [Assignment(person_id=p, slot_id=s) for p, s in sorted(pairs)]
    found = [
        c
        for c in swap_candidates(data, assignments, person_id=person_id, slot_id=slot_id)
        if c.change.taker_slot_id is None or data.slot_by_id[c.change.taker_slot_id].start > at
    ]
    return SwapCandidates(
        version_id=version.id,
        person_id=person_id,
        slot_id=slot_id,
        items=[SwapCandidatePublic.model_validate(c.to_dict()) for c in found[:limit]],
        total=len(found),
    )


# ---------------------------------------------------------------------- requests


def request_swap(
    session: Session,
    *,
    actor: Actor,
    program_id: str,
    person_id: str,
    slot_id: str,
    taker_id: str,
    taker_slot_id: str | None = None,
    note: str = "",
    now: datetime | None = None,
) -> SwapPublic:
    """Ask for ``taker_id`` to take ``person_id``'s shift ``slot_id`` (and, in a trade,
    to give ``taker_slot_id`` back). Members ask for their own shifts only (403 for
    someone else's); the change must keep every hard rule now (409 naming the rule)."""
    view = viewer(session, actor, program_id, Need.READ_PUBLISHED)
    if not view.manages and person_id != view.person_id:
        raise Forbidden("members may ask to swap their own shifts only")
    if not isinstance(note, str) or len(note) > NOTE_MAX:
        raise InvalidInput(FieldError("note", f"at most {NOTE_MAX} characters"))
    at = _now(now)
    data = load_program_data(session, program_id)
    _known(
        data,
        [
            ("person_id", person_id, "person"),
            ("slot_id", slot_id, "slot"),
            ("taker_id", taker_id, "person"),
            ("taker_slot_id", taker_slot_id, "slot"),
        ],
    )
    expires = _not_started(data, [("slot_id", slot_id), ("taker_slot_id", taker_slot_id)], at)
    try:
        version, pairs = _holding_version(session, data, person_id, slot_id, "slot_id")
    except NotFound as exc:
        raise InvalidInput(FieldError("slot_id", str(exc).split(": ", 1)[-1])) from None
    change = SwapChange(
        person_id=person_id, slot_id=slot_id, taker_id=taker_id, taker_slot_id=taker_slot_id
    )
    assignments = [Assignment(person_id=p, slot_id=s) for p, s in sorted(pairs)]
    broken = check_swap(data, assignments, change)  # InvalidInput when it does not fit
    if broken:
        rules = sorted({v.rule for v in broken})
        audit.record(
            session,
            actor=actor,
            action="swap.request",
            program_id=program_id,
            target=f"{person_id}/{slot_id}",
            outcome="refused",
            detail={"change": change.to_dict(), "rules": rules},
        )
        raise SwapRefused(
            f"the swap would break {', '.join(rules)}: " + "; ".join(v.message for v in broken[:5]),
            {"version_id": version.id, "rules": rules, "violations": _violations(broken)},
        )
    detail: dict[str, Any] = {
        "format": FORMAT,
        "person": person_id,
        "slot": slot_id,
        "taker": taker_id,
        "taker_slot": taker_slot_id,
        "note": note,
        "requested_against": version.id,
    }
    row = ApprovalRow(
        id=uuid.uuid4().hex,
        program_id=program_id,
        action=ACTION,
        target=f"{person_id}/{slot_id}"[:200],
        reason=json.dumps(detail, sort_keys=True),
        requested_by=actor.user_id,
        # never shown: a coordinator decides by the request's id, signed in
        token_hash=hashlib.sha256(secrets.token_bytes(32)).hexdigest(),
        created_at=at,
        expires_at=expires,
    )
    session.add(row)
    session.flush()
    audit.record(
        session,
        actor=actor,
        action="swap.request",
        program_id=program_id,
        target=row.id,
        detail={"change": change.to_dict()},
    )
    outbox.enqueue(
        session,
        kind="swap.request",
        program_id=program_id,
        payload={"swap_id": row.id, "change": change.to_dict(), "requested_by": actor.user_id},
    )
    return _public(view, row, at)


def list_swaps(
    session: Session,
    *,
    actor: Actor,
    program_id: str,
    limit: int = 100,
    offset: int = 0,
    status: Status | None = None,
) -> Page[SwapPublic]:
    """Newest first: every request for coordinators, members' own (as either party)."""
    view = viewer(session, actor, program_id, Need.READ_PUBLISHED)
    errors = []
    if not 1 <= limit <= 500:
        errors.append(FieldError("limit", "must be 1..500"))
    if offset < 0:
        errors.append(FieldError("offset", "must be ≥ 0"))
    if errors:
        raise InvalidInput(errors)
    rows = session.scalars(
        select(ApprovalRow)
        .where(ApprovalRow.program_id == program_id, ApprovalRow.action == ACTION)
        .order_by(ApprovalRow.created_at.desc(), ApprovalRow.id)
    ).all()
    at = _now(None)
    found: list[SwapPublic] = []
    for row in rows:
        try:
            detail = _detail(row)
        except NotFound:
            continue
        if not view.manages and view.person_id not in _parties(detail):
            continue
        item = _public(view, row, at)
        if status is None or item.status == status:
            found.append(item)
    return Page(items=found[offset : offset + limit], total=len(found), limit=limit, offset=offset)


def get_swap(session: Session, *, actor: Actor, program_id: str, swap_id: str) -> SwapPublic:
    view = viewer(session, actor, program_id, Need.READ_PUBLISHED)
    row, _ = _row(session, view, swap_id)
    return _public(view, row)


def decide_swap(
    session: Session,
    *,
    actor: Actor,
    program_id: str,
    swap_id: str,
    approve: bool,
    now: datetime | None = None,
) -> SwapPublic:
    """A coordinator approves or denies a pending request, once."""
    view = viewer(session, actor, program_id, Need.MANAGE)
    row, detail = _row(session, view, swap_id)
    at = _now(now)
    state = _status(row, detail, at)
    if state != "pending":
        raise SwapRefused(f"swap request is {state}, not pending", {"status": state})
    done = session.execute(
        update(ApprovalRow)
        .where(ApprovalRow.id == row.id, ApprovalRow.decision.is_(None))
        .values(
            decision="approved" if approve else "denied", decided_by=actor.user_id, decided_at=at
        )
        .execution_options(synchronize_session=False)
    )
    if getattr(done, "rowcount", 0) != 1:
        raise SwapRefused("swap request was decided meanwhile", {"status": "decided"})
    session.refresh(row)
    audit.record(
        session,
        actor=actor,
        action="swap.decide",
        program_id=program_id,
        target=row.id,
        detail={"approved": approve},
    )
    outbox.enqueue(
        session,
        kind="swap.decision",
        program_id=program_id,
        payload={"swap_id": row.id, "decision": row.decision, "decided_by": actor.user_id},
    )
    return _public(view, row, at)


# ---------------------------------------------------------------- execute, undo


def execute_swap(
    factory: sessionmaker[Session],
    *,
    actor: Actor,
    program_id: str,
    swap_id: str,
    backups: BackupGuard,
    now: datetime | None = None,
) -> SwapExecuted:
    """Make the swap: by its counterpart (the taker, who thereby accepts) or a
    coordinator. Re-checked against the active schedule, saved as a draft, published
    through the gate, diff guard and backup of every publish; refused with 409 and the
    report (nothing published) when anything says no."""
    at = _now(now)
    with factory() as s, s.begin():
        view = viewer(s, actor, program_id, Need.READ_PUBLISHED)
        row, detail = _row(s, view, swap_id)
        change = _change(detail)
        if not view.manages and view.person_id != change.taker_id:
            raise Forbidden("a swap is executed by its counterpart (the taker) or a coordinator")
        state = _status(row, detail, at)
        if state in ("executed", "undone", "denied"):
            raise SwapRefused(f"swap request is {state}", {"status": state})
        if state == "pending" and _needs_approval(view) and not view.manages:
            raise SwapRefused(
                "this program needs a coordinator's approval before a swap is made",
                {"status": state},
            )
        data = load_program_data(s, program_id)
        _known(
            data,
            [
                ("person_id", change.person_id, "person"),
                ("slot_id", change.slot_id, "slot"),
                ("taker_id", change.taker_id, "person"),
                ("taker_slot_id", change.taker_slot_id, "slot"),
            ],
        )
        _not_started(
            data, [("slot_id", change.slot_id), ("taker_slot_id", change.taker_slot_id)], at
        )
        try:
            version, pairs = _holding_version(s, data, change.person_id, change.slot_id, "slot_id")
        except NotFound as exc:
            raise SwapRefused(
                f"the active schedule changed since the request: {exc}", {"status": state}
            ) from None
        try:
            _refuse_if_broken(data, pairs, change, version.id)
        except SwapRefused as exc:
            audit.record(
                s,
                actor=actor,
                action="swap.execute",
                program_id=program_id,
                target=row.id,
                outcome="refused",
                detail={"why": str(exc)[:500]},
            )
            s.commit()
            raise
        # claim the request: a second execution (or a concurrent one) is refused
        claimed = s.execute(
            update(ApprovalRow)
            .where(ApprovalRow.id == row.id, ApprovalRow.used_at.is_(None))
            .values(used_at=at)
            .execution_options(synchronize_session=False)
        )
        if getattr(claimed, "rowcount", 0) != 1:
            raise SwapRefused("swap request is being executed or was executed", {})
        agent = _agent(actor, program_id)
        removed, added = set(change.removed), set(change.added)
        chosen = [Assignment(person_id=p, slot_id=sid) for p, sid in sorted(pairs - removed)] + [
            Assignment(person_id=p, slot_id=sid, source=AssignmentSource.SWAP)
            for p, sid in sorted(added)
        ]
        draft = save_draft(
            s,
            actor=agent,
            program_id=program_id,
            assignments=chosen,
            report_summary={"swap": row.id, "change": change.to_dict(), "from": version.id},
        )
    try:
        with factory() as s, s.begin():
            token, _ = publishing.create_publish_token(
                s, actor=agent, program_id=program_id, version_id=draft
            )
        result = publishing.publish(
            factory,
            actor=agent,
            program_id=program_id,
            version_id=draft,
            token=token,
            backups=backups,
        )
    except BaseException as exc:
        with factory() as s, s.begin():  # release the claim: nothing was published
            s.execute(
                update(ApprovalRow)
                .where(ApprovalRow.id == swap_id)
                .values(used_at=None)
                .execution_options(synchronize_session=False)
            )
            audit.record(
                s,
                actor=actor,
                action="swap.execute",
                program_id=program_id,
                target=swap_id,
                outcome="refused" if isinstance(exc, PublishRefused) else "failed",
                detail={"version_id": draft, "why": str(exc)[:500]},
            )
        raise
    with factory() as s, s.begin():
        view = viewer(s, actor, program_id, Need.READ_PUBLISHED)
        row, detail = _row(s, view, swap_id)
        detail["version"] = draft
        _write_detail(s, row, detail)
        if row.decision is None and view.manages:
            s.execute(
                update(ApprovalRow)
                .where(ApprovalRow.id == row.id, ApprovalRow.decision.is_(None))
                .values(decision="approved", decided_by=actor.user_id, decided_at=at)
                .execution_options(synchronize_session=False)
            )
        audit.record(
            s,
            actor=actor,
            action="swap.execute",
            program_id=program_id,
            target=swap_id,
            detail={
                "version_id": draft,
                "superseded": list(result.superseded),
                "change": change.to_dict(),
            },
        )
        outbox.enqueue(
            s,
            kind="swap.executed",
            program_id=program_id,
            payload={"swap_id": swap_id, "version_id": draft, "change": change.to_dict()},
        )
        s.flush()
        s.refresh(row)
        public = _public(view, row, at)
    return SwapExecuted(
        swap=public,
        version_id=draft,
        superseded=list(result.superseded),
        diff=result.diff.to_dict(),
        gate=result.gate,
    )


def undo_swap(
    factory: sessionmaker[Session],
    *,
    actor: Actor,
    program_id: str,
    swap_id: str,
    reason: str,
    backups: BackupGuard,
) -> SwapPublic:
    """A coordinator undoes an executed swap: ``publishing.rollback`` of its publish,
    which must still be the program's last publish and active (409 otherwise)."""
    if not isinstance(reason, str) or not reason.strip():
        raise InvalidInput(FieldError("reason", "a reason is required"))
    with factory() as s:
        view = viewer(s, actor, program_id, Need.MANAGE)
        row, detail = _row(s, view, swap_id)
        state = _status(row, detail, _now(None))
        version_id = detail.get("version")
        if state != "executed" or not isinstance(version_id, str):
            raise SwapRefused(f"swap request is {state}, not executed", {"status": state})
        try:
            publishing.last_publish(s, program_id, expected_version_id=version_id)
        except (NotFound, publishing.PublishRefused):
            raise SwapRefused(
                "the swap's publish is no longer the last one: roll back the later ones first",
                {"status": state, "version_id": version_id},
            ) from None
    restored = publishing.rollback(
        factory,
        actor=actor,
        program_id=program_id,
        reason=f"undo swap {swap_id}: {reason.strip()}",
        backups=backups,
        expected_version_id=version_id,  # never a later publish that landed meanwhile
    )
    with factory() as s, s.begin():
        view = viewer(s, actor, program_id, Need.MANAGE)
        row, detail = _row(s, view, swap_id)
        detail["undone_at"] = datetime.now(UTC).isoformat()
        detail["restored"] = restored
        _write_detail(s, row, detail)
        audit.record(
            s,
            actor=actor,
            action="swap.undo",
            program_id=program_id,
            target=swap_id,
            detail={"reason": reason, "version_id": version_id, "restored": restored},
        )
        outbox.enqueue(
            s,
            kind="swap.undone",
            program_id=program_id,
            payload={"swap_id": swap_id, "version_id": version_id, "restored": restored},
        )
        s.flush()
        s.refresh(row)
        return _public(view, row)


# ------------------------------------------------------------------------ repair


class RepairPublic(BaseModel):
    version_id: str = Field(description="the new draft")
    from_version_id: str = Field(description="the active version it repairs")
    status: Literal["unchanged", "repaired", "partial"]
    changed: int = Field(description="changed assignments (a shift handed over counts once)")
    added: int
    removed: int
    churn: float = Field(description="changed ÷ active assignments")
    violations: int = Field(description="hard violations of the new draft")
    violations_by_rule: dict[str, int]
    coverage: float
    breaches: int = Field(description="hard violations of the active schedule now")
    wall_seconds: float
    summary: dict[str, Any]


def repair_active(
    session: Session,
    *,
    actor: Actor,
    program_id: str,
    time_limit: float = 30.0,
    workers: int = 2,
) -> RepairPublic:
    """Repair the program's active schedule against the program as it is now (new
    absences and other changes): ``rsched.solver.repair.repair`` re-solves only the
    days that broke, and the result is stored as a draft (published like any other).
    Coordinators; NotFound when nothing is active."""
    view = viewer(session, actor, program_id, Need.MANAGE)
    active = session.scalars(
        select(ScheduleVersionRow)
        .where(
            ScheduleVersionRow.program_id == program_id,
            ScheduleVersionRow.status == ScheduleStatus.ACTIVE.value,
        )
        .order_by(ScheduleVersionRow.created_at.desc(), ScheduleVersionRow.id)
    ).first()
    if active is None:
        raise NotFound(f"program {program_id!r} has no active schedule to repair")
    params = SolveParams(time_limit=time_limit, workers=workers)
    params.check()
    data = load_program_data(session, program_id)
    assignments = [
        Assignment(person_id=p, slot_id=s, source=AssignmentSource(source))
        for p, s, source in session.execute(
            select(AssignmentRow.person_id, AssignmentRow.slot_id, AssignmentRow.source).where(
                AssignmentRow.program_id == program_id, AssignmentRow.version_id == active.id
            )
        )
    ]
    result = repair(data, assignments, params=params)
    summary = result.summary()
    draft = save_draft(
        session,
        actor=actor,
        program_id=view.program.id,
        assignments=result.assignments,
        report_summary={**summary, "repair_of": active.id},
    )
    audit.record(
        session,
        actor=actor,
        action="repair",
        program_id=program_id,
        target=draft,
        detail={
            "from": active.id,
            "status": result.status,
            "changed": result.diff.changed,
            "violations": len(result.report.violations),
        },
    )
    return RepairPublic(
        version_id=draft,
        from_version_id=active.id,
        status=result.status,
        changed=result.diff.changed,
        added=result.diff.n_added,
        removed=result.diff.n_removed,
        churn=round(result.diff.changed / len(assignments), 6) if assignments else 0.0,
        violations=len(result.report.violations),
        violations_by_rule=result.report.count_by_rule(Severity.VIOLATION),
        coverage=round(result.report.coverage, 6),
        breaches=len(result.breaches),
        wall_seconds=round(result.wall_seconds, 3),
        summary=summary,
    )
