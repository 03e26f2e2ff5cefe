"""A program's rotations: list, get, create, update and delete, for coordinators and
admins only. Their shift types must exist; a rotation with residents assigned to it is not
deleted.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from rsched.db import mapping as m
from rsched.db.models import RotationAssignmentRow, RotationRow, ShiftTypeRow
from rsched.domain import FieldError, InvalidInput, Rotation
from rsched.services import scope
from rsched.services.access import Actor, Need
from rsched.services.schemas import Page, RotationCreate, RotationPublic, RotationUpdate
from rsched.services.scope import page, viewer


def _rotation_public(r: Rotation) -> RotationPublic:
    return RotationPublic(
        id=r.id,
        name=r.name,
        eligible_pgy=sorted(r.eligible_pgy),
        min_residents=r.min_residents,
        max_residents=r.max_residents,
        shift_types=sorted(r.shift_types),
    )


def _rotation(session: Session, program_id: str, fields: Mapping[str, Any]) -> Rotation:
    rotation = Rotation(
        **{
            **fields,
            "eligible_pgy": frozenset(fields["eligible_pgy"]),
            "shift_types": frozenset(fields["shift_types"]),
        }
    )
    known = set(
        session.scalars(
            select(ShiftTypeRow.code).where(
                ShiftTypeRow.program_id == program_id, ShiftTypeRow.code.in_(rotation.shift_types)
            )
        )
    )
    errors = [
        FieldError(f"shift_types[{j}]", f"unknown shift type {code!r}")
        for j, code in enumerate(fields["shift_types"])
        if code not in known
    ]
    if errors:
        raise InvalidInput(errors)
    return rotation


def list_rotations(
    session: Session, *, actor: Actor, program_id: str, limit: int = 100, offset: int = 0
) -> Page[RotationPublic]:
    viewer(session, actor, program_id, Need.MANAGE)
    stmt = select(RotationRow).where(RotationRow.program_id == program_id)
    return page(
        session,
        stmt.order_by(RotationRow.id),
        limit=limit,
        offset=offset,
        convert=lambda r: _rotation_public(m.rotation_from_row(r)),
    )


def get_rotation(
    session: Session, *, actor: Actor, program_id: str, rotation_id: str
) -> RotationPublic:
    viewer(session, actor, program_id, Need.MANAGE)
    row = scope.row(session, RotationRow, program_id, rotation_id, "rotation")
    return _rotation_public(m.rotation_from_row(row))


def create_rotation(
    session: Session, *, actor: Actor, program_id: str, data: RotationCreate
) -> RotationPublic:
    viewer(session, actor, program_id, Need.MANAGE)
    rotation = _rotation(session, program_id, data.model_dump())
    scope.fresh(session, RotationRow, program_id, rotation.id, "id")
    session.add(RotationRow(program_id=program_id, **m.rotation_values(rotation)))
    session.flush()
    return _rotation_public(rotation)


def update_rotation(
    session: Session, *, actor: Actor, program_id: str, rotation_id: str, data: RotationUpdate
) -> RotationPublic:
    viewer(session, actor, program_id, Need.MANAGE)
    row = scope.row(session, RotationRow, program_id, rotation_id, "rotation")
    current = _rotation_public(m.rotation_from_row(row)).model_dump()
    rotation = _rotation(session, program_id, {**current, **scope.changes(data, set())})
    scope.store(row, m.rotation_values(rotation))
    session.flush()
    return _rotation_public(rotation)


def delete_rotation(session: Session, *, actor: Actor, program_id: str, rotation_id: str) -> None:
    """Refused while residents are assigned to it for a block."""
    viewer(session, actor, program_id, Need.MANAGE)
    row = scope.row(session, RotationRow, program_id, rotation_id, "rotation")
    assigned = session.scalar(
        select(func.count()).where(
            RotationAssignmentRow.program_id == program_id,
            RotationAssignmentRow.rotation_id == rotation_id,
        )
    )
    if assigned:
        raise InvalidInput(
            FieldError("rotation_id", f"{rotation_id!r} has {assigned} rotation assignment(s)")
        )
    session.delete(row)
    session.flush()
