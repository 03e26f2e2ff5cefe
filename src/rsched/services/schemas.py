"""Public shapes of the service layer (pydantic), usable directly by the API.

One family per resource, as in the FastAPI full-stack template: ``XBase`` holds the
fields shared by input and output, ``XCreate`` adds what a caller supplies on creation,
``XUpdate`` has every field optional (a partial update: only the fields set are
changed), ``XPublic`` is what the services return. These are shapes only; the meaning
of a record (PGY range for residents, min ≤ max, aware datetimes…) is checked by the
domain records themselves, and references (an unknown person) by the services.

Sensitive fields (``military_status``, ``accommodation_notes``, ``leave_type``) are
``None`` in a ``XPublic`` for a reader who may not see them.
"""

from __future__ import annotations

from datetime import date, datetime, time
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from rsched.domain import PersonKind, ScheduleStatus, ShiftKind
from rsched.domain.model import MAX_PGY
from rsched.programfile.schema import LEAVE_TYPES, Days, LevelMin, Ratios

T = TypeVar("T")

Id = Annotated[str, Field(min_length=1, max_length=64)]
Name = Annotated[str, Field(min_length=1, max_length=200)]
Pgy = Annotated[int, Field(ge=1, le=MAX_PGY)]
Count = Annotated[int, Field(ge=0)]
Minutes = Annotated[int, Field(gt=0, le=48 * 60)]
Weight = Annotated[int, Field(ge=1, le=100)]
LeaveType = Literal[LEAVE_TYPES]  # type: ignore[valid-type]


class Shape(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Page(BaseModel, Generic[T]):
    """One page of a list: ``items`` from ``offset``, at most ``limit``, of ``total``."""

    items: list[T]
    total: int
    limit: int
    offset: int


# -------------------------------------------------------------------------- people


class PersonBase(Shape):
    name: Name
    kind: PersonKind
    pgy: Pgy | None = Field(default=None, description="1..7 for residents, null for faculty")
    tags: list[Id] = []
    active: bool = True


class PersonCreate(PersonBase):
    id: Id
    military_status: str | None = None
    accommodation_notes: str | None = None


class PersonUpdate(Shape):
    name: Name | None = None
    kind: PersonKind | None = None
    pgy: Pgy | None = None
    tags: list[Id] | None = None
    active: bool | None = None
    military_status: str | None = None
    accommodation_notes: str | None = None


class PersonPublic(PersonBase):
    id: Id
    military_status: str | None = None
    accommodation_notes: str | None = None


# --------------------------------------------------------------------- shift types


class ShiftTypeBase(Shape):
    name: Name
    start: time = Field(description="local clock time HH:MM")
    duration_minutes: Minutes
    kind: ShiftKind
    counts_toward_hours: bool = True
    eligible_pgy: list[Pgy] = Field(default_factory=lambda: list(range(1, MAX_PGY + 1)))
    required_tags: list[Id] = []
    faculty: bool = False


class ShiftTypeCreate(ShiftTypeBase):
    code: Id


class ShiftTypeUpdate(Shape):
    name: Name | None = None
    start: time | None = None
    duration_minutes: Minutes | None = None
    kind: ShiftKind | None = None
    counts_toward_hours: bool | None = None
    eligible_pgy: list[Pgy] | None = None
    required_tags: list[Id] | None = None
    faculty: bool | None = None


class ShiftTypePublic(ShiftTypeBase):
    code: Id


# ----------------------------------------------------------------------- rotations


class RotationBase(Shape):
    name: Name
    eligible_pgy: list[Pgy]
    min_residents: Count = 0
    max_residents: Count
    shift_types: list[Id]


class RotationCreate(RotationBase):
    id: Id


class RotationUpdate(Shape):
    name: Name | None = None
    eligible_pgy: list[Pgy] | None = None
    min_residents: Count | None = None
    max_residents: Count | None = None
    shift_types: list[Id] | None = None


class RotationPublic(RotationBase):
    id: Id


# ------------------------------------------------------------------- slot patterns


class SlotPatternBase(Shape):
    """A rule that yields slots: a shift type on some weekdays between two dates (both
    optional: the program's horizon), with the staffing of each slot."""

    shift: Id
    days: Days
    first_day: date | None = None
    last_day: date | None = None
    min_staff: Count
    max_staff: Count
    staff: PersonKind = PersonKind.RESIDENT
    pgy_min: LevelMin = Field(default_factory=dict)
    supervision: Ratios = Field(default_factory=dict)
    faculty_max: Count = 0


class SlotPatternCreate(SlotPatternBase):
    id: Id | None = Field(default=None, description="chosen by the service when absent")


class SlotPatternUpdate(Shape):
    shift: Id | None = None
    days: Days | None = None
    first_day: date | None = None
    last_day: date | None = None
    min_staff: Count | None = None
    max_staff: Count | None = None
    staff: PersonKind | None = None
    pgy_min: LevelMin | None = None
    supervision: Ratios | None = None
    faculty_max: Count | None = None


class SlotPatternPublic(SlotPatternBase):
    id: Id


# ------------------------------------------------------------------------ absences


class AbsenceBase(Shape):
    person_id: Id
    start: AwareDatetime
    end: AwareDatetime
    blocking: bool = True


class AbsenceCreate(AbsenceBase):
    id: Id | None = Field(default=None, description="chosen by the service when absent")
    leave_type: LeaveType = "vacation"


class AbsenceUpdate(Shape):
    person_id: Id | None = None
    start: AwareDatetime | None = None
    end: AwareDatetime | None = None
    blocking: bool | None = None
    leave_type: LeaveType | None = None


class AbsencePublic(AbsenceBase):
    id: Id
    leave_type: str | None = None


# ------------------------------------------------------------------------ requests


class RequestBase(Shape):
    person_id: Id
    day: date
    wants: bool = Field(description="true: wants to work; false: wants to be off")
    weight: Weight = 1
    shift: Id | None = Field(default=None, description="one shift type only (null: any duty)")


class RequestCreate(RequestBase):
    id: Id | None = Field(default=None, description="chosen by the service when absent")


class RequestUpdate(Shape):
    day: date | None = None
    wants: bool | None = None
    weight: Weight | None = None
    shift: Id | None = None


class RequestPublic(RequestBase):
    id: Id


# ----------------------------------------------------------------------- schedules


class VersionPublic(Shape):
    id: str
    program_id: str
    start: date
    end: date
    status: ScheduleStatus
    run_id: str | None
    content_hash: str
    report: dict[str, Any]
    created_at: datetime
    created_by: str | None


class AssignmentPublic(Shape):
    person_id: str
    slot_id: str
    day: date
    """Local date of the slot's start."""
    shift: str
    start: datetime
    end: datetime
    source: str


class GridRow(Shape):
    person_id: str
    name: str
    kind: PersonKind
    pgy: int | None
    cells: list[list[str]]
    """One entry per day of the grid: the shift codes of that day, by start time."""


class Grid(Shape):
    """People × days of one schedule version."""

    program_id: str
    version_id: str
    status: ScheduleStatus
    days: list[date]
    rows: list[GridRow]
