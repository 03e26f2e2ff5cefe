"""Frozen records for every entity of the domain. Standard library only.

Every datetime is timezone-aware (checked at construction); arithmetic is on instants.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta

from rsched.domain.enums import AssignmentSource, PersonKind, ScheduleStatus, ShiftKind
from rsched.domain.errors import FieldError, InvalidInput
from rsched.domain.settings import ProgramSettings

MAX_PGY = 7


def require_aware(value: datetime, name: str) -> None:
    if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
        raise InvalidInput(FieldError(name, "must be a timezone-aware datetime (with an offset)"))


def _require(cond: bool, path: str, message: str) -> None:
    if not cond:
        raise InvalidInput(FieldError(path, message))


@dataclass(frozen=True, slots=True, kw_only=True)
class Program:
    id: str
    name: str
    timezone: str
    academic_year_start: date
    block_length_days: int = 28
    settings: ProgramSettings = field(default_factory=ProgramSettings)

    def __post_init__(self) -> None:
        _require(bool(self.id), "program.id", "must not be empty")
        _require(self.block_length_days > 0, "program.block_length_days", "must be ≥ 1")


@dataclass(frozen=True, slots=True, kw_only=True)
class Person:
    id: str
    name: str
    kind: PersonKind
    pgy: int | None = None
    tags: frozenset[str] = frozenset()
    active: bool = True
    military_status: str | None = None
    """Sensitive: encrypted at rest, never exported."""
    accommodation_notes: str | None = None
    """Sensitive: encrypted at rest, never exported."""

    def __post_init__(self) -> None:
        if self.kind is PersonKind.RESIDENT:
            _require(
                self.pgy is not None and 1 <= self.pgy <= MAX_PGY,
                f"people[{self.id}].pgy",
                f"must be 1..{MAX_PGY} for a resident",
            )
        else:
            _require(self.pgy is None, f"people[{self.id}].pgy", "must be empty for faculty")

    @property
    def is_resident(self) -> bool:
        return self.kind is PersonKind.RESIDENT


@dataclass(frozen=True, slots=True, kw_only=True)
class ShiftType:
    code: str
    name: str
    start: time
    duration_minutes: int
    kind: ShiftKind
    counts_toward_hours: bool = True
    eligible_pgy: frozenset[int] = frozenset(range(1, MAX_PGY + 1))
    """PGY levels of residents who may staff it (empty: no resident)."""
    required_tags: frozenset[str] = frozenset()
    faculty: bool = False
    """Faculty may be assigned (as supervisors or as the staff of a faculty-only shift)."""

    def __post_init__(self) -> None:
        _require(self.duration_minutes > 0, f"shift_types[{self.code}].duration", "must be > 0")
        _require(
            self.duration_minutes <= 48 * 60, f"shift_types[{self.code}].duration", "must be ≤ 48 h"
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Rotation:
    id: str
    name: str
    eligible_pgy: frozenset[int]
    min_residents: int
    max_residents: int
    shift_types: frozenset[str]

    def __post_init__(self) -> None:
        _require(
            0 <= self.min_residents <= self.max_residents,
            f"rotations[{self.id}]",
            "min_residents must be ≤ max_residents",
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Block:
    number: int
    start: date
    end: date
    """Inclusive."""

    def __post_init__(self) -> None:
        _require(self.start <= self.end, f"blocks[{self.number}]", "start must be ≤ end")

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1


@dataclass(frozen=True, slots=True, kw_only=True)
class RotationAssignment:
    person_id: str
    block: int
    rotation_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Slot:
    """One dated instance of a shift type that needs staff.

    ``min_staff``/``max_staff`` count residents (or faculty for a faculty-only shift,
    ``staff_kind`` faculty). ``supervision`` maps a PGY level to its local supervision
    ratio (residents per faculty); faculty assigned to the slot supervise it.
    ``pgy_min`` maps a PGY level L to the least number of residents of level ≥ L.
    """

    id: str
    shift: str
    kind: ShiftKind
    start: datetime
    end: datetime
    min_staff: int
    max_staff: int
    staff_kind: PersonKind = PersonKind.RESIDENT
    pgy_min: Mapping[int, int] = field(default_factory=dict)
    supervision: Mapping[int, int] = field(default_factory=dict)
    faculty_max: int = 0
    counts_toward_hours: bool = True

    def __post_init__(self) -> None:
        require_aware(self.start, f"slots[{self.id}].start")
        require_aware(self.end, f"slots[{self.id}].end")
        _require(self.end > self.start, f"slots[{self.id}].end", "must be after start")
        _require(
            0 <= self.min_staff <= self.max_staff,
            f"slots[{self.id}].min",
            "min must be ≥ 0 and ≤ max",
        )
        for level, ratio in self.supervision.items():
            _require(ratio >= 1, f"slots[{self.id}].supervision.{level}", "ratio must be ≥ 1")

    @property
    def minutes(self) -> int:
        return int((self.end - self.start) / timedelta(minutes=1))


@dataclass(frozen=True, slots=True, kw_only=True)
class Absence:
    id: str
    person_id: str
    start: datetime
    end: datetime
    leave_type: str = "vacation"
    """Sensitive: encrypted at rest, never exported."""
    blocking: bool = True

    def __post_init__(self) -> None:
        require_aware(self.start, f"absences[{self.id}].start")
        require_aware(self.end, f"absences[{self.id}].end")
        _require(self.end > self.start, f"absences[{self.id}].end", "must be after start")


@dataclass(frozen=True, slots=True, kw_only=True)
class Request:
    """A soft wish: ``wants`` True to work (a shift on a day), False to be off."""

    id: str
    person_id: str
    day: date
    wants: bool
    weight: int = 1
    shift: str | None = None
    """Restrict the wish to one shift type on that day (None: any duty that day)."""

    def __post_init__(self) -> None:
        _require(1 <= self.weight <= 100, f"requests[{self.id}].weight", "must be 1..100")


@dataclass(frozen=True, slots=True, kw_only=True, order=True)
class Assignment:
    person_id: str
    slot_id: str
    source: AssignmentSource = field(default=AssignmentSource.SOLVER, compare=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class Schedule:
    """An immutable set of assignments for a program and date range."""

    program_id: str
    start: date
    end: date
    assignments: tuple[Assignment, ...]
    status: ScheduleStatus = ScheduleStatus.DRAFT
    run_id: str | None = None

    def pairs(self) -> frozenset[tuple[str, str]]:
        return frozenset((a.person_id, a.slot_id) for a in self.assignments)
