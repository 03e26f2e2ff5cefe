"""A program's slot patterns: list, get, create, update and delete, for coordinators
and admins only.

Slot patterns are kept as written (in the program file's terms) so a program can be
re-expanded; creating or editing one does not add or change slots: the slots were
expanded when the program was imported, and existing schedule versions refer to them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from rsched.db import mapping as m
from rsched.db.models import ShiftTypeRow, SlotPatternRow
from rsched.domain import FieldError, InvalidInput
from rsched.programfile.patterns import check_staffing
from rsched.programfile.reading import pydantic_errors
from rsched.programfile.schema import SlotPatternSpec
from rsched.services import scope
from rsched.services.access import Actor, Need
from rsched.services.schemas import Page, SlotPatternCreate, SlotPatternPublic, SlotPatternUpdate
from rsched.services.scope import Viewer, page, viewer

_PATTERN_KEYS = {"first_day": "from", "last_day": "to", "min_staff": "min", "max_staff": "max"}
"""Public field → program file key."""
_FILE_KEYS = {v: k for k, v in _PATTERN_KEYS.items()}


def _pattern_public(pattern_id: str, spec: Mapping[str, Any]) -> SlotPatternPublic:
    parsed = SlotPatternSpec.model_validate(spec).model_dump(by_alias=True)
    return SlotPatternPublic(id=pattern_id, **{_FILE_KEYS.get(k, k): v for k, v in parsed.items()})


def _pattern_spec(session: Session, view: Viewer, fields: Mapping[str, Any]) -> dict[str, Any]:
    """The stored (program file) form of a pattern, after the loader's own checks."""
    raw = {_PATTERN_KEYS.get(k, k): v for k, v in fields.items() if k != "id"}
    try:
        spec = SlotPatternSpec.model_validate({k: v for k, v in raw.items() if v is not None})
    except ValidationError as exc:
        raise InvalidInput(pydantic_errors(exc)) from None
    program = view.program
    shift_types = {
        r.code: m.shift_type_from_row(r)
        for r in session.scalars(
            select(ShiftTypeRow).where(
                ShiftTypeRow.program_id == program.id, ShiftTypeRow.code == spec.shift
            )
        )
    }
    found = check_staffing(
        spec, "", shift_types, lambda _: False, (program.horizon_start, program.horizon_end)
    )
    if found:
        raise InvalidInput(
            [
                FieldError(_FILE_KEYS.get(e.path.lstrip("."), e.path.lstrip(".")), e.message)
                for e in found
            ]
        )
    return spec.model_dump(mode="json", by_alias=True)


def list_slot_patterns(
    session: Session, *, actor: Actor, program_id: str, limit: int = 100, offset: int = 0
) -> Page[SlotPatternPublic]:
    viewer(session, actor, program_id, Need.MANAGE)
    stmt = select(SlotPatternRow).where(SlotPatternRow.program_id == program_id)
    return page(
        session,
        stmt.order_by(SlotPatternRow.id),
        limit=limit,
        offset=offset,
        convert=lambda r: _pattern_public(r.id, r.spec),
    )


def get_slot_pattern(
    session: Session, *, actor: Actor, program_id: str, pattern_id: str
) -> SlotPatternPublic:
    viewer(session, actor, program_id, Need.MANAGE)
    row = scope.row(session, SlotPatternRow, program_id, pattern_id, "slot pattern")
    return _pattern_public(row.id, row.spec)


def create_slot_pattern(
    session: Session, *, actor: Actor, program_id: str, data: SlotPatternCreate
) -> SlotPatternPublic:
    view = viewer(session, actor, program_id, Need.MANAGE)
    pattern_id = data.id or scope.new_id("pattern")
    scope.fresh(session, SlotPatternRow, program_id, pattern_id, "id")
    spec = _pattern_spec(session, view, data.model_dump())
    session.add(SlotPatternRow(program_id=program_id, id=pattern_id, spec=spec))
    session.flush()
    return _pattern_public(pattern_id, spec)


def update_slot_pattern(
    session: Session, *, actor: Actor, program_id: str, pattern_id: str, data: SlotPatternUpdate
) -> SlotPatternPublic:
    view = viewer(session, actor, program_id, Need.MANAGE)
    row = scope.row(session, SlotPatternRow, program_id, pattern_id, "slot pattern")
    current = _pattern_public(row.id, row.spec).model_dump()
    row.spec = _pattern_spec(
        session, view, {**current, **scope.changes(data, {"first_day", "last_day"})}
    )
    session.flush()
    return _pattern_public(row.id, row.spec)


def delete_slot_pattern(
    session: Session, *, actor: Actor, program_id: str, pattern_id: str
) -> None:
    viewer(session, actor, program_id, Need.MANAGE)
    session.delete(scope.row(session, SlotPatternRow, program_id, pattern_id, "slot pattern"))
    session.flush()
