"""The audit log: who did what, to which program and object, with what outcome.

``record`` only adds a row to the caller's session; the caller's unit of work commits it
together with the change it describes (or, for refusals that must survive a rollback,
the service commits before raising)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

from rsched.db.models import AuditRow
from rsched.services.access import Actor

OUTCOMES = frozenset({"ok", "refused", "failed"})


def record(
    session: Session,
    *,
    actor: Actor | str | None,
    action: str,
    program_id: str | None = None,
    target: str | None = None,
    detail: dict[str, Any] | None = None,
    outcome: str = "ok",
) -> AuditRow:
    """Add one audit row (UTC now). ``actor`` is an ``Actor``, a user id, or None for
    an anonymous caller (a failed login, the command line before any user exists)."""
    if outcome not in OUTCOMES:
        raise ValueError(f"audit outcome must be one of {sorted(OUTCOMES)}, not {outcome!r}")
    actor_id = actor.user_id if isinstance(actor, Actor) else actor
    row = AuditRow(
        at=datetime.now(UTC),
        actor=actor_id,
        program_id=program_id,
        action=action,
        target=target[:200] if target is not None else None,
        detail=dict(detail or {}),
        outcome=outcome,
    )
    session.add(row)
    return row
