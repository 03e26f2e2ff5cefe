"""Programs and what they hold: import a program file, and people, shift types,
rotations, slot patterns, absences and requests (list, get, create, update, delete).

Every function takes the caller's ``Session`` and writes in the caller's transaction
(it flushes, never commits), and asks ``authorize`` first. Who sees what:

* coordinators and admins: everything in the program;
* faculty and residents: their own person record, their own absences and requests, the
  shift types (to read the published schedule); they may submit requests for themselves.
  Another person's record answers NotFound, as another program's does.

Sensitive fields (``military_status``, ``accommodation_notes``, ``leave_type``) are shown
to coordinators and admins and to the person they describe, to nobody else.

A new program is imported by an admin only; an existing program id is refused (there is
no replace: people and slots are referred to by immutable schedule versions, so a
program is changed record by record here, not wiped and re-imported).

Slot patterns are kept as written (in the program file's terms) so a program can be
re-expanded; creating or editing one does not add or change slots: the slots were
expanded when the program was imported, and existing schedule versions refer to them.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel, ValidationError
from sqlalchemy import Select, false, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from rsched.db import mapping as m
from rsched.db.models import (
    AbsenceRow,
    AssignmentRow,
    PersonRow,
    ProgramRow,
    RequestRow,
    RotationAssignmentRow,
    RotationRow,
    ShiftTypeRow,
    SlotPatternRow,
    SlotRow,
)
from rsched.domain import (
    Absence,
    FieldError,
    InvalidInput,
    NotFound,
    Person,
    PersonKind,
    ProgramData,
    Request,
    Rotation,
    ShiftKind,
    ShiftType,
)
from rsched.domain.calendar import local_midnight, zone
from rsched.programfile.loader import parse_program
from rsched.programfile.patterns import check_staffing
from rsched.programfile.reading import pydantic_errors
from rsched.programfile.schema import SlotPatternSpec
from rsched.services.access import Actor, Forbidden, Need, Role, authorize
from rsched.services.schemas import (
    AbsenceCreate,
    AbsencePublic,
    AbsenceUpdate,
    Page,
    PersonCreate,
    PersonPublic,
    PersonUpdate,
    RequestCreate,
    RequestPublic,
    RequestUpdate,
    RotationCreate,
    RotationPublic,
    RotationUpdate,
    ShiftTypeCreate,
    ShiftTypePublic,
    ShiftTypeUpdate,
    SlotPatternCreate,
    SlotPatternPublic,
    SlotPatternUpdate,
)

R = TypeVar("R")
MAX_LIMIT = 500
ID_WIDTH, NAME_WIDTH = 64, 200

# ---------------------------------------------------------------- shared helpers


@dataclass(frozen=True, slots=True)
class Viewer:
    """The actor as seen from one program."""

    role: Role
    person_id: str | None
    program: ProgramRow

    @property
    def manages(self) -> bool:
        return self.role in (Role.ADMIN, Role.COORDINATOR)

    def sees_private(self, person_id: str) -> bool:
        return self.manages or (self.person_id is not None and person_id == self.person_id)


def viewer(session: Session, actor: Actor, program_id: str, need: Need) -> Viewer:
    """``authorize``, then the program's row (NotFound when it does not exist)."""
    role = authorize(actor, program_id, need)
    row = session.get(ProgramRow, program_id)
    if row is None:
        raise NotFound(f"program {program_id!r} not found")
    return Viewer(role=role, person_id=actor.person_in(program_id), program=row)


def page(
    session: Session,
    stmt: Select[*tuple[Any, ...]],
    *,
    limit: int,
    offset: int,
    convert: Callable[[Any], R],
    whole_rows: bool = False,
) -> Page[R]:
    """Two queries whatever the size: the count and the rows of the page. ``convert``
    gets the first entity of each result row, or the whole row with ``whole_rows``."""
    errors = []
    if not 1 <= limit <= MAX_LIMIT:
        errors.append(FieldError("limit", f"must be 1..{MAX_LIMIT}"))
    if offset < 0:
        errors.append(FieldError("offset", "must be ≥ 0"))
    if errors:
        raise InvalidInput(errors)
    total = session.scalar(select(func.count()).select_from(stmt.order_by(None).subquery()))
    window = stmt.limit(limit).offset(offset)
    rows = session.execute(window).all() if whole_rows else session.scalars(window).all()
    return Page(items=[convert(r) for r in rows], total=total or 0, limit=limit, offset=offset)


def _own(stmt: Select[Any], column: Any, view: Viewer) -> Select[Any]:
    """Limit ``stmt`` to the viewer's own rows unless they manage the program."""
    if view.manages:
        return stmt
    return stmt.where(column == view.person_id if view.person_id else false())


def _row(session: Session, table: Any, program_id: str, key: str, label: str) -> Any:
    row = session.get(table, (program_id, key))
    if row is None:
        raise NotFound(f"{label} {key!r} not found")
    return row


def _fresh(session: Session, table: Any, program_id: str, key: str, field: str) -> None:
    if session.get(table, (program_id, key)) is not None:
        raise InvalidInput(FieldError(field, f"{key!r} already exists in this program"))


def _changes(update: BaseModel, nullable: set[str]) -> dict[str, Any]:
    """The fields an update sets; null only where the field may be empty."""
    values = update.model_dump(exclude_unset=True)
    errors = [
        FieldError(k, "must not be null")
        for k, v in values.items()
        if v is None and k not in nullable
    ]
    if errors:
        raise InvalidInput(errors)
    return values


def _store(row: Any, values: Mapping[str, Any]) -> None:
    for key, value in values.items():
        setattr(row, key, value)


def _person_known(session: Session, program_id: str, person_id: str, field: str) -> None:
    if session.get(PersonRow, (program_id, person_id)) is None:
        raise InvalidInput(FieldError(field, f"unknown person {person_id!r}"))


def _new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(6)}"


# ------------------------------------------------------------------------ import


class BackupGuard(Protocol):
    """What an import needs of the backup service (``BackupService`` satisfies it)."""

    def ensure_recent(self, *, program_id: str, reason: str) -> str: ...


def import_program(
    session: Session, *, actor: Actor, mapping: Any, backups: BackupGuard | None = None
) -> str:
    """Write a whole program file (a parsed mapping) in the caller's transaction; its id.

    The mapping is checked by ``parse_program`` (the CLI's checks, every error at once)
    before anything is written; nothing is written when any check fails. With
    ``backups`` (a bulk change), a recent backup must exist or be made before the first
    write; a failed backup blocks the import."""
    if not actor.is_admin:
        raise Forbidden("only an admin may import a new program")
    data = parse_program(mapping)
    authorize(actor, data.program.id, Need.ADMIN)
    errors = _width_errors(data)
    if errors:
        raise InvalidInput(errors)
    if session.get(ProgramRow, data.program.id) is not None:
        raise InvalidInput(FieldError("program.id", f"program {data.program.id!r} already exists"))
    if backups is not None:
        backups.ensure_recent(program_id=data.program.id, reason="import")
    patterns = [
        SlotPatternRow(
            program_id=data.program.id,
            id=f"pattern-{i + 1}",
            spec=SlotPatternSpec.model_validate(raw).model_dump(mode="json", by_alias=True),
        )
        for i, raw in enumerate(mapping.get("slot_patterns") or ())
    ]
    stages = m.program_rows(data)
    session.add(m.program_row(data, created_at=datetime.now(UTC)))
    try:
        session.flush()
    except IntegrityError as exc:  # another transaction created it meanwhile
        raise InvalidInput(
            FieldError("program.id", f"program {data.program.id!r} already exists")
        ) from exc
    for rows in [stages[0] + patterns, *stages[1:]]:
        session.add_all(rows)
        session.flush()
    return data.program.id


def _width_errors(data: ProgramData) -> list[FieldError]:
    """Ids and names wider than their columns (the file format sets no width)."""
    checks: list[tuple[str, str, int]] = [
        ("program.id", data.program.id, ID_WIDTH),
        ("program.name", data.program.name, NAME_WIDTH),
        ("program.timezone", data.program.timezone, ID_WIDTH),
    ]
    for section, records, key in (
        ("people", data.people, "id"),
        ("shift_types", data.shift_types, "code"),
        ("rotations", data.rotations, "id"),
        ("slots", data.slots, "id"),
        ("absences", data.absences, "id"),
        ("requests", data.requests, "id"),
    ):
        for i, record in enumerate(records):
            checks.append((f"{section}[{i}].{key}", getattr(record, key), ID_WIDTH))
            if hasattr(record, "name"):
                checks.append((f"{section}[{i}].name", record.name, NAME_WIDTH))
    return [
        FieldError(path, f"must be at most {width} characters")
        for path, value, width in checks
        if len(value) > width
    ]


# ------------------------------------------------------------------------ people


def _person_public(view: Viewer, p: Person) -> PersonPublic:
    private = view.sees_private(p.id)
    return PersonPublic(
        id=p.id,
        name=p.name,
        kind=p.kind,
        pgy=p.pgy,
        tags=sorted(p.tags),
        active=p.active,
        military_status=p.military_status if private else None,
        accommodation_notes=p.accommodation_notes if private else None,
    )


def _person(fields: Mapping[str, Any]) -> Person:
    return Person(**{**fields, "tags": frozenset(fields.get("tags", ()))})


def list_people(
    session: Session,
    *,
    actor: Actor,
    program_id: str,
    limit: int = 100,
    offset: int = 0,
    kind: PersonKind | None = None,
    pgy: int | None = None,
    active: bool | None = None,
) -> Page[PersonPublic]:
    view = viewer(session, actor, program_id, Need.READ_PUBLISHED)
    stmt = _own(select(PersonRow).where(PersonRow.program_id == program_id), PersonRow.id, view)
    if kind is not None:
        stmt = stmt.where(PersonRow.kind == str(kind))
    if pgy is not None:
        stmt = stmt.where(PersonRow.pgy == pgy)
    if active is not None:
        stmt = stmt.where(PersonRow.active == active)
    return page(
        session,
        stmt.order_by(PersonRow.id),
        limit=limit,
        offset=offset,
        convert=lambda r: _person_public(view, m.person_from_row(r)),
    )


def get_person(session: Session, *, actor: Actor, program_id: str, person_id: str) -> PersonPublic:
    view = viewer(session, actor, program_id, Need.READ_PUBLISHED)
    if not view.manages and person_id != view.person_id:
        raise NotFound(f"person {person_id!r} not found")
    row = _row(session, PersonRow, program_id, person_id, "person")
    return _person_public(view, m.person_from_row(row))


def create_person(
    session: Session, *, actor: Actor, program_id: str, data: PersonCreate
) -> PersonPublic:
    view = viewer(session, actor, program_id, Need.MANAGE)
    person = _person(data.model_dump())
    _fresh(session, PersonRow, program_id, person.id, "id")
    session.add(PersonRow(program_id=program_id, **m.person_values(person)))
    session.flush()
    return _person_public(view, person)


def update_person(
    session: Session, *, actor: Actor, program_id: str, person_id: str, data: PersonUpdate
) -> PersonPublic:
    view = viewer(session, actor, program_id, Need.MANAGE)
    row = _row(session, PersonRow, program_id, person_id, "person")
    changes = _changes(data, {"pgy", "military_status", "accommodation_notes"})
    if "tags" in changes:
        changes["tags"] = frozenset(changes["tags"])
    person = replace(m.person_from_row(row), **changes)
    _store(row, m.person_values(person))
    session.flush()
    return _person_public(view, person)


def delete_person(session: Session, *, actor: Actor, program_id: str, person_id: str) -> None:
    """Delete a person with their absences, requests and rotation assignments. A person
    in any schedule version stays (versions are immutable): set ``active`` false instead."""
    viewer(session, actor, program_id, Need.MANAGE)
    row = _row(session, PersonRow, program_id, person_id, "person")
    used = session.scalar(
        select(AssignmentRow.version_id)
        .where(AssignmentRow.program_id == program_id, AssignmentRow.person_id == person_id)
        .limit(1)
    )
    if used is not None:
        raise InvalidInput(
            FieldError(
                "person_id",
                f"{person_id!r} is in schedule version "
                f"{used!r}; deactivate them instead (active: false)",
            )
        )
    session.delete(row)
    session.flush()


# ------------------------------------------------------------------- shift types


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
    row = _row(session, ShiftTypeRow, program_id, code, "shift type")
    return _shift_public(m.shift_type_from_row(row))


def create_shift_type(
    session: Session, *, actor: Actor, program_id: str, data: ShiftTypeCreate
) -> ShiftTypePublic:
    viewer(session, actor, program_id, Need.MANAGE)
    fields = data.model_dump()
    shift = ShiftType(**{**fields, **{k: frozenset(fields[k]) for k in _SHIFT_SETS}})
    _fresh(session, ShiftTypeRow, program_id, shift.code, "code")
    session.add(ShiftTypeRow(program_id=program_id, **m.shift_type_values(shift)))
    session.flush()
    return _shift_public(shift)


def update_shift_type(
    session: Session, *, actor: Actor, program_id: str, code: str, data: ShiftTypeUpdate
) -> ShiftTypePublic:
    """Partial update. The times and kind of a shift type that already has slots stay:
    its slots carry them, and schedule versions refer to those slots."""
    viewer(session, actor, program_id, Need.MANAGE)
    row = _row(session, ShiftTypeRow, program_id, code, "shift type")
    changes = _changes(data, set())
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
    _store(row, m.shift_type_values(shift))
    session.flush()
    return _shift_public(shift)


def delete_shift_type(session: Session, *, actor: Actor, program_id: str, code: str) -> None:
    """Refused while slots, rotations, slot patterns or requests refer to it."""
    viewer(session, actor, program_id, Need.MANAGE)
    row = _row(session, ShiftTypeRow, program_id, code, "shift type")
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


# --------------------------------------------------------------------- rotations


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
    row = _row(session, RotationRow, program_id, rotation_id, "rotation")
    return _rotation_public(m.rotation_from_row(row))


def create_rotation(
    session: Session, *, actor: Actor, program_id: str, data: RotationCreate
) -> RotationPublic:
    viewer(session, actor, program_id, Need.MANAGE)
    rotation = _rotation(session, program_id, data.model_dump())
    _fresh(session, RotationRow, program_id, rotation.id, "id")
    session.add(RotationRow(program_id=program_id, **m.rotation_values(rotation)))
    session.flush()
    return _rotation_public(rotation)


def update_rotation(
    session: Session, *, actor: Actor, program_id: str, rotation_id: str, data: RotationUpdate
) -> RotationPublic:
    viewer(session, actor, program_id, Need.MANAGE)
    row = _row(session, RotationRow, program_id, rotation_id, "rotation")
    current = _rotation_public(m.rotation_from_row(row)).model_dump()
    rotation = _rotation(session, program_id, {**current, **_changes(data, set())})
    _store(row, m.rotation_values(rotation))
    session.flush()
    return _rotation_public(rotation)


def delete_rotation(session: Session, *, actor: Actor, program_id: str, rotation_id: str) -> None:
    """Refused while residents are assigned to it for a block."""
    viewer(session, actor, program_id, Need.MANAGE)
    row = _row(session, RotationRow, program_id, rotation_id, "rotation")
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


# ----------------------------------------------------------------- slot patterns

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
    row = _row(session, SlotPatternRow, program_id, pattern_id, "slot pattern")
    return _pattern_public(row.id, row.spec)


def create_slot_pattern(
    session: Session, *, actor: Actor, program_id: str, data: SlotPatternCreate
) -> SlotPatternPublic:
    view = viewer(session, actor, program_id, Need.MANAGE)
    pattern_id = data.id or _new_id("pattern")
    _fresh(session, SlotPatternRow, program_id, pattern_id, "id")
    spec = _pattern_spec(session, view, data.model_dump())
    session.add(SlotPatternRow(program_id=program_id, id=pattern_id, spec=spec))
    session.flush()
    return _pattern_public(pattern_id, spec)


def update_slot_pattern(
    session: Session, *, actor: Actor, program_id: str, pattern_id: str, data: SlotPatternUpdate
) -> SlotPatternPublic:
    view = viewer(session, actor, program_id, Need.MANAGE)
    row = _row(session, SlotPatternRow, program_id, pattern_id, "slot pattern")
    current = _pattern_public(row.id, row.spec).model_dump()
    row.spec = _pattern_spec(
        session, view, {**current, **_changes(data, {"first_day", "last_day"})}
    )
    session.flush()
    return _pattern_public(row.id, row.spec)


def delete_slot_pattern(
    session: Session, *, actor: Actor, program_id: str, pattern_id: str
) -> None:
    viewer(session, actor, program_id, Need.MANAGE)
    session.delete(_row(session, SlotPatternRow, program_id, pattern_id, "slot pattern"))
    session.flush()


# ---------------------------------------------------------------------- absences


def _absence_public(view: Viewer, a: Absence) -> AbsencePublic:
    return AbsencePublic(
        id=a.id,
        person_id=a.person_id,
        start=a.start,
        end=a.end,
        blocking=a.blocking,
        leave_type=a.leave_type if view.sees_private(a.person_id) else None,
    )


def _checked_absence(session: Session, program_id: str, absence: Absence) -> Absence:
    """Known person, and no overlap with another absence of theirs (as the loader checks)."""
    _person_known(session, program_id, absence.person_id, "person_id")
    clash = session.scalar(
        select(AbsenceRow.id)
        .where(
            AbsenceRow.program_id == program_id,
            AbsenceRow.person_id == absence.person_id,
            AbsenceRow.id != absence.id,
            AbsenceRow.start < m.as_utc(absence.end),
            AbsenceRow.end > m.as_utc(absence.start),
        )
        .limit(1)
    )
    if clash is not None:
        raise InvalidInput(FieldError("start", f"overlaps absence {clash!r} of the same person"))
    return absence


def list_absences(
    session: Session,
    *,
    actor: Actor,
    program_id: str,
    limit: int = 100,
    offset: int = 0,
    person_id: str | None = None,
    start: date | None = None,
    end: date | None = None,
) -> Page[AbsencePublic]:
    """Absences overlapping the local days ``start``..``end`` (inclusive, either optional)."""
    view = viewer(session, actor, program_id, Need.READ_PUBLISHED)
    stmt = _own(
        select(AbsenceRow).where(AbsenceRow.program_id == program_id), AbsenceRow.person_id, view
    )
    tz = zone(view.program.timezone)
    if person_id is not None:
        stmt = stmt.where(AbsenceRow.person_id == person_id)
    if start is not None:
        stmt = stmt.where(AbsenceRow.end > local_midnight(start, tz))
    if end is not None:
        stmt = stmt.where(AbsenceRow.start < local_midnight(end + timedelta(days=1), tz))
    stmt = stmt.order_by(AbsenceRow.start, AbsenceRow.id)
    return page(
        session,
        stmt,
        limit=limit,
        offset=offset,
        convert=lambda r: _absence_public(view, m.absence_from_row(r)),
    )


def get_absence(
    session: Session, *, actor: Actor, program_id: str, absence_id: str
) -> AbsencePublic:
    view = viewer(session, actor, program_id, Need.READ_PUBLISHED)
    absence = m.absence_from_row(_row(session, AbsenceRow, program_id, absence_id, "absence"))
    if not view.sees_private(absence.person_id):
        raise NotFound(f"absence {absence_id!r} not found")
    return _absence_public(view, absence)


def create_absence(
    session: Session, *, actor: Actor, program_id: str, data: AbsenceCreate
) -> AbsencePublic:
    view = viewer(session, actor, program_id, Need.MANAGE)
    absence = Absence(**{**data.model_dump(), "id": data.id or _new_id("absence")})
    _fresh(session, AbsenceRow, program_id, absence.id, "id")
    _checked_absence(session, program_id, absence)
    session.add(AbsenceRow(program_id=program_id, **m.absence_values(absence)))
    session.flush()
    return _absence_public(view, absence)


def update_absence(
    session: Session, *, actor: Actor, program_id: str, absence_id: str, data: AbsenceUpdate
) -> AbsencePublic:
    view = viewer(session, actor, program_id, Need.MANAGE)
    row = _row(session, AbsenceRow, program_id, absence_id, "absence")
    absence = replace(m.absence_from_row(row), **_changes(data, set()))
    _checked_absence(session, program_id, absence)
    _store(row, m.absence_values(absence))
    session.flush()
    return _absence_public(view, absence)


def delete_absence(session: Session, *, actor: Actor, program_id: str, absence_id: str) -> None:
    viewer(session, actor, program_id, Need.MANAGE)
    session.delete(_row(session, AbsenceRow, program_id, absence_id, "absence"))
    session.flush()


# ---------------------------------------------------------------------- requests


def _request_public(r: Request) -> RequestPublic:
    return RequestPublic(
        id=r.id, person_id=r.person_id, day=r.day, wants=r.wants, weight=r.weight, shift=r.shift
    )


def _checked_request(session: Session, view: Viewer, request: Request) -> Request:
    program = view.program
    _person_known(session, program.id, request.person_id, "person_id")
    errors = []
    if not program.horizon_start <= request.day <= program.horizon_end:
        errors.append(
            FieldError("day", f"outside the horizon {program.horizon_start}..{program.horizon_end}")
        )
    if request.shift is not None and session.get(ShiftTypeRow, (program.id, request.shift)) is None:
        errors.append(FieldError("shift", f"unknown shift type {request.shift!r}"))
    if errors:
        raise InvalidInput(errors)
    return request


def list_requests(
    session: Session,
    *,
    actor: Actor,
    program_id: str,
    limit: int = 100,
    offset: int = 0,
    person_id: str | None = None,
) -> Page[RequestPublic]:
    view = viewer(session, actor, program_id, Need.READ_PUBLISHED)
    stmt = _own(
        select(RequestRow).where(RequestRow.program_id == program_id), RequestRow.person_id, view
    )
    if person_id is not None:
        stmt = stmt.where(RequestRow.person_id == person_id)
    stmt = stmt.order_by(RequestRow.day, RequestRow.id)
    return page(
        session,
        stmt,
        limit=limit,
        offset=offset,
        convert=lambda r: _request_public(m.request_from_row(r)),
    )


def get_request(
    session: Session, *, actor: Actor, program_id: str, request_id: str
) -> RequestPublic:
    view = viewer(session, actor, program_id, Need.READ_PUBLISHED)
    request = m.request_from_row(_row(session, RequestRow, program_id, request_id, "request"))
    if not view.sees_private(request.person_id):
        raise NotFound(f"request {request_id!r} not found")
    return _request_public(request)


def create_request(
    session: Session, *, actor: Actor, program_id: str, data: RequestCreate
) -> RequestPublic:
    """Coordinators submit for anyone; faculty and residents for themselves only."""
    view = viewer(session, actor, program_id, Need.READ_PUBLISHED)
    if not view.sees_private(data.person_id):
        raise Forbidden("you may submit requests only for yourself")
    request = Request(**{**data.model_dump(), "id": data.id or _new_id("request")})
    _fresh(session, RequestRow, program_id, request.id, "id")
    _checked_request(session, view, request)
    session.add(RequestRow(program_id=program_id, **m.request_values(request)))
    session.flush()
    return _request_public(request)


def update_request(
    session: Session, *, actor: Actor, program_id: str, request_id: str, data: RequestUpdate
) -> RequestPublic:
    view = viewer(session, actor, program_id, Need.MANAGE)
    row = _row(session, RequestRow, program_id, request_id, "request")
    request = replace(m.request_from_row(row), **_changes(data, {"shift"}))
    _checked_request(session, view, request)
    _store(row, m.request_values(request))
    session.flush()
    return _request_public(request)


def delete_request(session: Session, *, actor: Actor, program_id: str, request_id: str) -> None:
    viewer(session, actor, program_id, Need.MANAGE)
    session.delete(_row(session, RequestRow, program_id, request_id, "request"))
    session.flush()
