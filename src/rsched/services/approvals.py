"""Approvals for guarded actions: a request returns a single-use, expiring token (only
its hash is stored); a coordinator or admin of the program approves or denies with it,
once. An approved request is consumed, once, by the action it approves."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from rsched.db.models import ApprovalRow
from rsched.domain import FieldError, InvalidInput, NotFound
from rsched.services import audit, outbox
from rsched.services.access import Actor, Forbidden, Need, authorize

ACTIONS = frozenset({"publish_override", "fix_it", "rollback"})
TOKEN_MINUTES = 30


@dataclass(frozen=True, slots=True, kw_only=True)
class ApprovalRequest:
    id: str
    token: str
    expires_at: datetime


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def request_approval(
    session: Session, *, actor: Actor, program_id: str, action: str, target: str, reason: str
) -> ApprovalRequest:
    authorize(actor, program_id, Need.MANAGE)
    errors = []
    if action not in ACTIONS:
        errors.append(FieldError("action", f"unknown action {action!r}; one of {sorted(ACTIONS)}"))
    if not isinstance(target, str) or not 1 <= len(target) <= 200:
        errors.append(FieldError("target", "must be 1-200 characters"))
    if not isinstance(reason, str) or not reason.strip() or len(reason) > 1000:
        errors.append(FieldError("reason", "a reason of 1-1000 characters is required"))
    if errors:
        raise InvalidInput(errors)
    token = secrets.token_urlsafe(32)
    now = datetime.now(UTC)
    row = ApprovalRow(
        id=uuid.uuid4().hex,
        program_id=program_id,
        action=action,
        target=target,
        reason=reason,
        requested_by=actor.user_id,
        token_hash=_hash(token),
        created_at=now,
        expires_at=now + timedelta(minutes=TOKEN_MINUTES),
    )
    session.add(row)
    session.flush()
    audit.record(
        session,
        actor=actor,
        action="approval.request",
        program_id=program_id,
        target=row.id,
        detail={"action": action, "target": target, "reason": reason},
    )
    return ApprovalRequest(id=row.id, token=token, expires_at=row.expires_at)


def decide(
    session: Session,
    *,
    actor: Actor,
    token: str,
    approve: bool,
    program_id: str,
    action: str | None = None,
) -> str:
    """Approve or deny with the token, once. A second use, an expired token, a token of
    another program or for another action is refused (Forbidden) and audited."""
    now = datetime.now(UTC)
    row = session.scalars(
        select(ApprovalRow).where(ApprovalRow.token_hash == _hash(str(token)))
    ).first()
    problem = None
    if row is None:
        problem = "unknown token"
    elif row.program_id != program_id:
        problem = "token of another program"
    elif action is not None and row.action != action:
        problem = f"token is for {row.action}, not {action}"
    elif row.decision is not None:
        problem = "token already used"
    elif _aware(row.expires_at) <= now:
        problem = "token expired"
    if problem is None:
        assert row is not None
        authorize(actor, row.program_id, Need.MANAGE)
        result = session.execute(
            update(ApprovalRow)
            .where(ApprovalRow.id == row.id, ApprovalRow.decision.is_(None))
            .values(
                decision="approved" if approve else "denied",
                decided_by=actor.user_id,
                decided_at=now,
            )
            .execution_options(synchronize_session=False)
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            problem = "token already used"
    if problem is not None:
        audit.record(
            session,
            actor=actor,
            action="approval.decide",
            program_id=program_id,
            outcome="refused",
            detail={"why": problem},
        )
        raise Forbidden(f"approval refused: {problem}")
    assert row is not None
    audit.record(
        session,
        actor=actor,
        action="approval.decide",
        program_id=row.program_id,
        target=row.id,
        detail={"approved": approve, "action": row.action},
    )
    outbox.enqueue(
        session,
        kind="approval",
        program_id=row.program_id,
        payload={
            "approval_id": row.id,
            "action": row.action,
            "target": row.target,
            "decision": "approved" if approve else "denied",
            "decided_by": actor.user_id,
        },
    )
    return row.id


def consume(session: Session, *, program_id: str, action: str, target: str) -> ApprovalRow:
    """Use an approved, unused approval for exactly this action and target, once."""
    now = datetime.now(UTC)
    row = session.scalars(
        select(ApprovalRow)
        .where(
            ApprovalRow.program_id == program_id,
            ApprovalRow.action == action,
            ApprovalRow.target == target,
            ApprovalRow.decision == "approved",
            ApprovalRow.used_at.is_(None),
        )
        .order_by(ApprovalRow.decided_at.desc())
    ).first()
    if row is None:
        raise NotFound(f"no unused approval of {action} for {target}")
    result = session.execute(
        update(ApprovalRow)
        .where(ApprovalRow.id == row.id, ApprovalRow.used_at.is_(None))
        .values(used_at=now)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise NotFound(f"no unused approval of {action} for {target}")
    return row


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)
