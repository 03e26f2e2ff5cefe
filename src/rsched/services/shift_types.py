"""A program's shift types: list, get, create, update and delete. Everyone in the
program reads them (to read the published schedule); coordinators and admins change them.
The times and kind of a shift type with slots stay; a shift type in use is not deleted.
"""

from __future__ import annotations

from dataclasses import replace

from sqlalchemy import select
from sqlalchemy.orm import Session

from rsched.db import mapping as m
from rsched.db.models import RequestRow, RotationRow, ShiftTypeRow, SlotPatternRow, SlotRow
from rsched.domain import FieldError, InvalidInput, ShiftKind, ShiftType
from rsched.services import scope
from rsched.services.access import Actor, Need
from rsched.services.schemas import Page, ShiftTypeCreate, ShiftTypePublic, ShiftTypeUpdate
from rsched.services.scope import page, viewer


def _shift_public(t: ShiftType) -> ShiftTypePublic:
    return ShiftTypePublic(
        code=t.code,
        name=t.name,
        start=t.start,
        duration_minutes=t.duration_minutes,
        kind=t.kind,
        counts_toward_hours=t.counts_toward_hours,
        eligible_pgy=sorted(t.eligible_pgy),
        required_tags=sorted(t.required_tags),
        faculty=t.faculty,
    )


_SHIFT_SETS = ("eligible_pgy", "required_tags")
_SLOT_SHAPING = ("start", "duration_minutes", "kind", "counts_toward_hours")
"""Shift type fields copied into its slots when the program was imported."""


def list_shift_types(
    session: Session,
    *,
    actor: Actor,
    program_id: str,
    limit: int = 100,
    offset: int = 0,
    kind: ShiftKind | None = None,
) -> Page[ShiftTypePublic]:
    viewer(session, actor, program_id, Need.READ_PUBLISHED)
    stmt = select(ShiftTypeRow).where(ShiftTypeRow.program_id == program_id)
    if kind is not None:
        stmt = stmt.where(ShiftTypeRow.kind == str(kind))
    return page(
        session,
        stmt.order_by(ShiftTypeRow.code),
        limit=limit,
        offset=offset,
        convert=lambda r: _shift_public(m.shift_type_from_row(r)),
    )


def get_shift_type(
    session: Session, *, actor: Actor, program_id: str, code: str
) -> ShiftTypePublic:
    viewer(session, actor, program_id, Need.READ_PUBLISHED)
    row = scope.row(session, ShiftTypeRow, program_id, code, "shift type")
    return _shift_public(m.shift_type_from_row(row))


def create_shift_type(
    session: Session, *, actor: Actor, program_id: str, data: ShiftTypeCreate
) -> ShiftTypePublic:
    viewer(session, actor, program_id, Need.MANAGE)
    fields = data.model_dump()
    shift = ShiftType(**{**fields, **{k: frozenset(fields[k]) for k in _SHIFT_SETS}})
    scope.fresh(session, ShiftTypeRow, program_id, shift.code, "code")
    session.add(ShiftTypeRow(program_id=program_id, **m.shift_type_values(shift)))
    session.flush()
    return _shift_public(shift)


def update_shift_type(
    session: Session, *, actor: Actor, program_id: str, code: str, data: ShiftTypeUpdate
) -> ShiftTypePublic:
    """Partial update. The times and kind of a shift type that already has slots stay:
    its slots carry them, and schedule versions refer to those slots."""
    viewer(session, actor, program_id, Need.MANAGE)
    row = scope.row(session, ShiftTypeRow, program_id, code, "shift type")
    changes = scope.changes(data, set())
    current = m.shift_type_from_row(row)
    changes.update({k: frozenset(changes[k]) for k in _SHIFT_SETS if k in changes})
    moved = [k for k in _SLOT_SHAPING if k in changes and changes[k] != getattr(current, k)]
    if (
        moved
        and session.scalar(
            select(SlotRow.id)
            .where(SlotRow.program_id == program_id, SlotRow.shift == code)
            .limit(1)
        )
        is not None
    ):
        raise InvalidInput(
            [
                FieldError(k, f"{code!r} already has slots; add a new shift type instead")
                for k in moved
            ]
        )
    shift = replace(current, **changes)
    scope.store(row, m.shift_type_values(shift))
    session.flush()
    return _shift_public(shift)


def delete_shift_type(session: Session, *, actor: Actor, program_id: str, code: str) -> None:
    """Refused while slots, rotations, slot patterns or requests refer to it."""
    viewer(session, actor, program_id, Need.MANAGE)
    row = scope.row(session, ShiftTypeRow, program_id, code, "shift type")
    users = []
    for table, column in ((SlotRow, SlotRow.shift), (RequestRow, RequestRow.shift)):
        if (
            session.scalar(
                select(column).where(table.program_id == program_id, column == code).limit(1)
            )
            is not None
        ):
            users.append(table.__tablename__)
    rotations = session.scalars(select(RotationRow).where(RotationRow.program_id == program_id))
    if any(code in (r.shift_types or ()) for r in rotations):
        users.append("rotations")
    specs = session.scalars(
        select(SlotPatternRow.spec).where(SlotPatternRow.program_id == program_id)
    )
    if any(spec.get("shift") == code for spec in specs):
        users.append("slot_patterns")
    if users:
        raise InvalidInput(FieldError("code", f"{code!r} is used by {', '.join(users)}"))
    session.delete(row)
    session.flush()
