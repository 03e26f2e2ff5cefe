"""Domain records ↔ ORM rows, and ``load_program_data``: a whole program in one query per
table (no query per person, slot or absence).

Instants are written in UTC and read back as aware UTC datetimes: SQLite keeps no offset,
PostgreSQL answers in the session's zone; both become the same instant here. A shift
type's start is stored as ``HH:MM`` (the column holds five characters), so a start with
seconds is refused rather than cut.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime, time
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from rsched.db.models import (
    AbsenceRow,
    PersonRow,
    ProgramRow,
    RequestRow,
    RotationAssignmentRow,
    RotationRow,
    ShiftTypeRow,
    SlotRow,
)
from rsched.domain import (
    Absence,
    FieldError,
    InvalidInput,
    NotFound,
    ObjectiveWeights,
    Period,
    Person,
    PersonKind,
    Program,
    ProgramData,
    ProgramSettings,
    Request,
    Rotation,
    RotationAssignment,
    RuleSettings,
    ShiftKind,
    ShiftType,
    Slot,
)
from rsched.domain.calendar import blocks_of_year, local_date, zone

__all__ = [
    "absence_from_row",
    "absence_values",
    "as_utc",
    "load_program_data",
    "person_from_row",
    "person_values",
    "program_blocks",
    "program_from_row",
    "program_row",
    "program_rows",
    "request_from_row",
    "request_values",
    "rotation_assignment_from_row",
    "rotation_assignment_values",
    "rotation_from_row",
    "rotation_values",
    "shift_type_from_row",
    "shift_type_values",
    "slot_from_row",
    "slot_values",
]


def as_utc(value: datetime) -> datetime:
    """An instant read from (or written to) the database, as an aware UTC datetime."""
    if value.tzinfo is None or value.utcoffset() is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _clock_text(value: time, path: str) -> str:
    if value.second or value.microsecond:
        raise InvalidInput(FieldError(path, "must be whole minutes (HH:MM)"))
    return value.strftime("%H:%M")


def _levels(values: Mapping[Any, int]) -> dict[int, int]:
    return {int(k): int(v) for k, v in sorted(values.items(), key=lambda kv: int(kv[0]))}


# ------------------------------------------------------------------------- program


def program_row(data: ProgramData, *, created_at: datetime) -> ProgramRow:
    p = data.program
    return ProgramRow(
        id=p.id,
        name=p.name,
        timezone=p.timezone,
        academic_year_start=p.academic_year_start,
        block_length_days=p.block_length_days,
        horizon_start=data.start,
        horizon_end=data.end,
        periods=[{"start": x.start.isoformat(), "end": x.end.isoformat()} for x in data.periods],
        settings={"rules": p.settings.rules.to_dict(), "weights": p.settings.weights.to_dict()},
        created_at=as_utc(created_at),
    )


def program_from_row(row: ProgramRow) -> Program:
    settings = row.settings or {}
    return Program(
        id=row.id,
        name=row.name,
        timezone=row.timezone,
        academic_year_start=row.academic_year_start,
        block_length_days=row.block_length_days,
        settings=ProgramSettings(
            rules=RuleSettings.from_dict(dict(settings.get("rules", {}))),
            weights=ObjectiveWeights.from_dict(dict(settings.get("weights", {}))),
        ),
    )


def program_blocks(year_start: date, block_days: int, start: date, end: date) -> list[Period]:
    """Blocks of every academic year from the one holding ``start`` through ``end``,
    numbered from 1 in order (the numbering the program file's rotation assignments use)."""
    year = year_start
    while year > start:
        year = year.replace(year=year.year - 1)
    while year.replace(year=year.year + 1) <= start:
        year = year.replace(year=year.year + 1)
    blocks: list[Period] = []
    while year <= end:
        blocks.extend(blocks_of_year(year, block_days))
        year = year.replace(year=year.year + 1)
    return blocks


# -------------------------------------------------------------------------- people


def person_values(p: Person) -> dict[str, Any]:
    return {
        "id": p.id,
        "name": p.name,
        "kind": str(p.kind),
        "pgy": p.pgy,
        "tags": sorted(p.tags),
        "active": p.active,
        "military_status": p.military_status,
        "accommodation_notes": p.accommodation_notes,
    }


def person_from_row(row: PersonRow) -> Person:
    return Person(
        id=row.id,
        name=row.name,
        kind=PersonKind(row.kind),
        pgy=row.pgy,
        tags=frozenset(row.tags or ()),
        active=row.active,
        military_status=row.military_status,
        accommodation_notes=row.accommodation_notes,
    )


# --------------------------------------------------------------------- shift types


def shift_type_values(t: ShiftType) -> dict[str, Any]:
    return {
        "code": t.code,
        "name": t.name,
        "start": _clock_text(t.start, f"shift_types[{t.code}].start"),
        "duration_minutes": t.duration_minutes,
        "kind": str(t.kind),
        "counts_toward_hours": t.counts_toward_hours,
        "eligible_pgy": sorted(t.eligible_pgy),
        "required_tags": sorted(t.required_tags),
        "faculty": t.faculty,
    }


def shift_type_from_row(row: ShiftTypeRow) -> ShiftType:
    return ShiftType(
        code=row.code,
        name=row.name,
        start=time.fromisoformat(row.start),
        duration_minutes=row.duration_minutes,
        kind=ShiftKind(row.kind),
        counts_toward_hours=row.counts_toward_hours,
        eligible_pgy=frozenset(int(x) for x in row.eligible_pgy or ()),
        required_tags=frozenset(row.required_tags or ()),
        faculty=row.faculty,
    )


# ----------------------------------------------------------------------- rotations


def rotation_values(r: Rotation) -> dict[str, Any]:
    return {
        "id": r.id,
        "name": r.name,
        "eligible_pgy": sorted(r.eligible_pgy),
        "min_residents": r.min_residents,
        "max_residents": r.max_residents,
        "shift_types": sorted(r.shift_types),
    }


def rotation_from_row(row: RotationRow) -> Rotation:
    return Rotation(
        id=row.id,
        name=row.name,
        eligible_pgy=frozenset(int(x) for x in row.eligible_pgy or ()),
        min_residents=row.min_residents,
        max_residents=row.max_residents,
        shift_types=frozenset(row.shift_types or ()),
    )


def rotation_assignment_values(a: RotationAssignment) -> dict[str, Any]:
    return {"person_id": a.person_id, "block": a.block, "rotation_id": a.rotation_id}


def rotation_assignment_from_row(row: RotationAssignmentRow) -> RotationAssignment:
    return RotationAssignment(person_id=row.person_id, block=row.block, rotation_id=row.rotation_id)


# --------------------------------------------------------------------------- slots


def slot_values(s: Slot, tz_name: str) -> dict[str, Any]:
    """Column values of a slot; ``day`` is the local date of its start in ``tz_name``."""
    return {
        "id": s.id,
        "shift": s.shift,
        "kind": str(s.kind),
        "start": as_utc(s.start),
        "end": as_utc(s.end),
        "day": local_date(s.start, zone(tz_name)),
        "min_staff": s.min_staff,
        "max_staff": s.max_staff,
        "staff_kind": str(s.staff_kind),
        "pgy_min": {str(k): v for k, v in sorted(s.pgy_min.items())},
        "supervision": {str(k): v for k, v in sorted(s.supervision.items())},
        "faculty_max": s.faculty_max,
        "counts_toward_hours": s.counts_toward_hours,
    }


def slot_from_row(row: SlotRow) -> Slot:
    return Slot(
        id=row.id,
        shift=row.shift,
        kind=ShiftKind(row.kind),
        start=as_utc(row.start),
        end=as_utc(row.end),
        min_staff=row.min_staff,
        max_staff=row.max_staff,
        staff_kind=PersonKind(row.staff_kind),
        pgy_min=_levels(row.pgy_min or {}),
        supervision=_levels(row.supervision or {}),
        faculty_max=row.faculty_max,
        counts_toward_hours=row.counts_toward_hours,
    )


# ------------------------------------------------------------- absences and requests


def absence_values(a: Absence) -> dict[str, Any]:
    return {
        "id": a.id,
        "person_id": a.person_id,
        "start": as_utc(a.start),
        "end": as_utc(a.end),
        "leave_type": a.leave_type,
        "blocking": a.blocking,
    }


def absence_from_row(row: AbsenceRow) -> Absence:
    return Absence(
        id=row.id,
        person_id=row.person_id,
        start=as_utc(row.start),
        end=as_utc(row.end),
        leave_type=row.leave_type,
        blocking=row.blocking,
    )


def request_values(r: Request) -> dict[str, Any]:
    return {
        "id": r.id,
        "person_id": r.person_id,
        "day": r.day,
        "wants": r.wants,
        "weight": r.weight,
        "shift": r.shift,
    }


def request_from_row(row: RequestRow) -> Request:
    return Request(
        id=row.id,
        person_id=row.person_id,
        day=row.day,
        wants=row.wants,
        weight=row.weight,
        shift=row.shift,
    )


# --------------------------------------------------------------------- whole program


def program_rows(data: ProgramData) -> list[list[Any]]:
    """Every row of ``data`` except the program's own, in insertion stages: a stage's
    rows refer only to rows of earlier stages (flush between stages)."""
    pid, tz = data.program.id, data.program.timezone
    return [
        [PersonRow(program_id=pid, **person_values(p)) for p in data.people]
        + [ShiftTypeRow(program_id=pid, **shift_type_values(t)) for t in data.shift_types]
        + [RotationRow(program_id=pid, **rotation_values(r)) for r in data.rotations],
        [
            RotationAssignmentRow(program_id=pid, **rotation_assignment_values(a))
            for a in data.rotation_assignments
        ]
        + [SlotRow(program_id=pid, **slot_values(s, tz)) for s in data.slots]
        + [AbsenceRow(program_id=pid, **absence_values(a)) for a in data.absences]
        + [RequestRow(program_id=pid, **request_values(r)) for r in data.requests],
    ]


def load_program_data(session: Session, program_id: str) -> ProgramData:
    """The program as the rules and solvers see it: eight queries, whatever its size."""
    row = session.get(ProgramRow, program_id)
    if row is None:
        raise NotFound(f"program {program_id!r} not found")

    def rows(table: Any, *order: Any) -> list[Any]:
        stmt = select(table).where(table.program_id == program_id).order_by(*order)
        return list(session.scalars(stmt))

    people = rows(PersonRow, PersonRow.id)
    shift_types = rows(ShiftTypeRow, ShiftTypeRow.code)
    rotations = rows(RotationRow, RotationRow.id)
    rotation_assignments = rows(
        RotationAssignmentRow, RotationAssignmentRow.person_id, RotationAssignmentRow.block
    )
    slots = rows(SlotRow, SlotRow.start, SlotRow.id)
    absences = rows(AbsenceRow, AbsenceRow.person_id, AbsenceRow.start, AbsenceRow.id)
    requests = rows(RequestRow, RequestRow.day, RequestRow.id)
    return ProgramData(
        program=program_from_row(row),
        start=row.horizon_start,
        end=row.horizon_end,
        periods=tuple(
            Period(start=date.fromisoformat(p["start"]), end=date.fromisoformat(p["end"]))
            for p in row.periods or ()
        ),
        people=tuple(person_from_row(r) for r in people),
        slots=tuple(slot_from_row(r) for r in slots),
        shift_types=tuple(shift_type_from_row(r) for r in shift_types),
        rotations=tuple(rotation_from_row(r) for r in rotations),
        rotation_assignments=tuple(rotation_assignment_from_row(r) for r in rotation_assignments),
        blocks=tuple(
            program_blocks(
                row.academic_year_start, row.block_length_days, row.horizon_start, row.horizon_end
            )
        ),
        absences=tuple(absence_from_row(r) for r in absences),
        requests=tuple(request_from_row(r) for r in requests),
    )
