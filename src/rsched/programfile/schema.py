"""The structure of a program file (``rsched.program/1``) as pydantic models.

These models are the single description of the file: the loader validates with them
(first pass) and ``program_json_schema()`` publishes them as JSON Schema. Every model
refuses unknown keys. Cross-references (a slot naming an unknown shift type, duplicate
ids, overlapping absences…) are checked by the loader's second pass, not here.

Numbers are strict (``true`` or ``3.0`` is not a count); dates are ``YYYY-MM-DD``;
clock times are ``HH:MM``; ids are text.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import MISSING, fields
from datetime import UTC, date, datetime, time
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    Strict,
    WithJsonSchema,
    create_model,
)

from rsched.domain.enums import PersonKind, ShiftKind
from rsched.domain.model import MAX_PGY
from rsched.domain.settings import ObjectiveWeights, RuleSettings

FORMAT = "rsched.program/1"
SCHEMA_ID = "urn:rsched:schema:program:1"

WEEKDAYS: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DAY_SETS: dict[str, frozenset[int]] = {
    "daily": frozenset(range(7)),
    "weekdays": frozenset(range(5)),
    "weekends": frozenset({5, 6}),
}
LEAVE_TYPES = ("vacation", "sick", "parental", "conference", "military", "other")


def _between(lo: int, hi: int) -> Callable[[int], int]:
    """A check whose error reads ``must be lo..hi`` (pydantic's bounds name one side only)."""

    def check(value: int) -> int:
        if not lo <= value <= hi:
            raise ValueError(f"must be {lo}..{hi}")
        return value

    return check


_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_CLOCK = re.compile(r"\d{2}:\d{2}(:\d{2})?")


def _only_date(value: Any) -> date:
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    if isinstance(value, str) and _DATE.fullmatch(value.strip()):
        try:
            return date.fromisoformat(value.strip())
        except ValueError:
            pass
    raise ValueError("must be a date (YYYY-MM-DD)")


def _only_clock(value: Any) -> time:
    if isinstance(value, time) and value.tzinfo is None:
        return value
    if isinstance(value, str) and _CLOCK.fullmatch(value.strip()):
        try:
            return time.fromisoformat(value.strip())
        except ValueError:
            pass
    raise ValueError("must be a local clock time HH:MM (quote it in YAML)")


def _date_or_instant(value: Any) -> date | datetime:
    """A whole local day (``2026-07-01``) or an instant with its offset."""
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, date):
        return value
    elif isinstance(value, str):
        try:
            if "T" not in value and " " not in value.strip():
                return date.fromisoformat(value)
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError("must be a date or an ISO datetime with offset") from None
    else:
        raise ValueError("must be a date or an ISO datetime with offset")
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise ValueError("a datetime must carry its UTC offset (e.g. 2026-07-01T08:00-04:00)")
    return parsed.astimezone(UTC)


def _days_value(value: Any) -> str | list[str]:
    if isinstance(value, str):
        if value in DAY_SETS:
            return value
        raise ValueError(f"must be one of {', '.join(DAY_SETS)} or a list of weekdays")
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        unknown = [v for v in value if v not in WEEKDAYS]
        if unknown:
            raise ValueError(f"unknown weekday {unknown[0]!r} (use {', '.join(WEEKDAYS)})")
        if len(set(value)) != len(value):
            raise ValueError("lists a weekday twice")
        return list(value)
    raise ValueError(f"must be one of {', '.join(DAY_SETS)} or a non-empty list of weekdays")


Count = Annotated[int, Strict(), Field(ge=0)]
Pgy = Annotated[
    int,
    Strict(),
    AfterValidator(_between(1, MAX_PGY)),
    Field(json_schema_extra={"minimum": 1, "maximum": MAX_PGY}),
]
Weight = Annotated[
    int,
    Strict(),
    AfterValidator(_between(1, 100)),
    Field(json_schema_extra={"minimum": 1, "maximum": 100}),
]
Id = Annotated[str, Field(min_length=1)]
Day = Annotated[date, BeforeValidator(_only_date)]
Clock = Annotated[time, BeforeValidator(_only_clock)]
DateOrInstant = Annotated[
    date | datetime,
    PlainValidator(_date_or_instant),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "format": "date"},
                {"type": "string", "format": "date-time"},
            ],
            "description": "a whole local day or an ISO datetime with offset",
        }
    ),
]
Days = Annotated[
    str | list[str],
    PlainValidator(_days_value),
    WithJsonSchema(
        {
            "anyOf": [
                {"enum": list(DAY_SETS)},
                {
                    "type": "array",
                    "items": {"enum": list(WEEKDAYS)},
                    "minItems": 1,
                    "uniqueItems": True,
                },
            ]
        }
    ),
]
# Keys of pgy_min (a PGY level) and supervision (a PGY level, 0 = every level not listed).
LevelMin = Annotated[
    dict[Annotated[int, Field(ge=1, le=MAX_PGY)], Count],
    Field(json_schema_extra={"propertyNames": {"pattern": f"^[1-{MAX_PGY}]$"}}),
]
Ratios = Annotated[
    dict[Annotated[int, Field(ge=0, le=MAX_PGY)], Annotated[int, Strict(), Field(ge=1)]],
    Field(json_schema_extra={"propertyNames": {"pattern": f"^[0-{MAX_PGY}]$"}}),
]


class Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ProgramSpec(Spec):
    id: Id
    name: Id
    timezone: Id = Field(description="IANA time zone, e.g. America/New_York")
    academic_year_start: Day
    block_length_days: Annotated[int, Strict(), Field(ge=1, le=366)] = 28


class HorizonSpec(Spec):
    """Inclusive local dates."""

    start: Day
    end: Day


class PeriodSpec(Spec):
    """An averaging period (inclusive local dates)."""

    start: Day
    end: Day


def _settings_model(name: str, cls: type) -> type[BaseModel]:
    """A strict model with the fields (and defaults) of a domain settings dataclass."""
    definitions: dict[str, Any] = {}
    for f in fields(cls):
        default = f.default if f.default is not MISSING else None
        if isinstance(default, bool):
            definitions[f.name] = (Annotated[bool, Strict()], default)
        else:
            definitions[f.name] = (Count, default)
    model: type[BaseModel] = create_model(name, __base__=Spec, **definitions)
    return model


RulesSpec = _settings_model("RulesSpec", RuleSettings)
WeightsSpec = _settings_model("WeightsSpec", ObjectiveWeights)


class SettingsSpec(Spec):
    rules: RulesSpec = Field(default_factory=RulesSpec)  # type: ignore[valid-type]
    weights: WeightsSpec = Field(default_factory=WeightsSpec)  # type: ignore[valid-type]


class PersonSpec(Spec):
    id: Id
    name: Id
    kind: PersonKind
    pgy: Pgy | None = Field(default=None, description="1..7 for residents, null for faculty")
    tags: list[Id] = []
    active: Annotated[bool, Strict()] = True
    military_status: str | None = Field(default=None, description="sensitive")
    accommodation_notes: str | None = Field(default=None, description="sensitive")


class ShiftTypeSpec(Spec):
    model_config = ConfigDict(
        json_schema_extra={
            "oneOf": [{"required": ["duration_hours"]}, {"required": ["duration_minutes"]}]
        }
    )

    code: Id
    name: Id
    start: Clock = Field(description="local clock time HH:MM")
    duration_hours: Annotated[float, Field(gt=0, le=48)] | None = None
    duration_minutes: Annotated[int, Strict(), Field(gt=0, le=48 * 60)] | None = None
    kind: ShiftKind
    counts_toward_hours: Annotated[bool, Strict()] = True
    eligible_pgy: list[Pgy] = Field(default_factory=lambda: list(range(1, MAX_PGY + 1)))
    required_tags: list[Id] = []
    faculty: Annotated[bool, Strict()] = Field(
        default=False, description="faculty may be assigned (to supervise, or as its staff)"
    )


class RotationSpec(Spec):
    id: Id
    name: Id
    eligible_pgy: list[Pgy]
    min_residents: Count = 0
    max_residents: Count
    shift_types: list[Id]


class RotationAssignmentSpec(Spec):
    person: Id
    block: Annotated[int, Strict(), Field(ge=1)]
    rotation: Id


class _Staffing(Spec):
    min_staff: Count = Field(alias="min")
    max_staff: Count = Field(alias="max")
    staff: PersonKind = PersonKind.RESIDENT
    pgy_min: LevelMin = Field(
        default_factory=dict, description="PGY level L → least residents of level ≥ L"
    )
    supervision: Ratios = Field(
        default_factory=dict,
        description="PGY level → residents per faculty (0: every level not listed)",
    )
    faculty_max: Count = 0


class SlotPatternSpec(_Staffing):
    shift: Id
    days: Days
    from_: Day | None = Field(default=None, alias="from")
    to: Day | None = None


class SlotSpec(_Staffing):
    id: Id | None = None
    shift: Id
    day: Day = Field(alias="date")


class AbsenceSpec(Spec):
    id: Id | None = None
    person: Id
    start: DateOrInstant
    end: DateOrInstant = Field(description="a date is inclusive (the whole local day)")
    leave_type: Literal[LEAVE_TYPES] = "vacation"  # type: ignore[valid-type]
    blocking: Annotated[bool, Strict()] = True


class RequestSpec(Spec):
    id: Id | None = None
    person: Id
    day: Day = Field(alias="date")
    wants: Annotated[bool, Strict()]
    weight: Weight = 1
    shift: Id | None = None


class ProgramFile(Spec):
    """A residency program: people, shift types, rotations, slots, leave and requests."""

    format: Literal["rsched.program/1"]
    program: ProgramSpec
    horizon: HorizonSpec
    periods: list[PeriodSpec] = []
    settings: SettingsSpec = Field(default_factory=SettingsSpec)
    people: list[PersonSpec]
    shift_types: list[ShiftTypeSpec]
    rotations: list[RotationSpec] = []
    rotation_assignments: list[RotationAssignmentSpec] = []
    slot_patterns: list[SlotPatternSpec] = []
    slots: list[SlotSpec] = []
    absences: list[AbsenceSpec] = []
    requests: list[RequestSpec] = []


LIST_SECTIONS: dict[str, type[Spec]] = {
    "periods": PeriodSpec,
    "people": PersonSpec,
    "shift_types": ShiftTypeSpec,
    "rotations": RotationSpec,
    "rotation_assignments": RotationAssignmentSpec,
    "slot_patterns": SlotPatternSpec,
    "slots": SlotSpec,
    "absences": AbsenceSpec,
    "requests": RequestSpec,
}
"""Sections that are lists of records, with the model of one record."""

OBJECT_SECTIONS: dict[str, type[Spec]] = {
    "program": ProgramSpec,
    "horizon": HorizonSpec,
    "settings": SettingsSpec,
}


def program_json_schema() -> dict[str, Any]:
    """The published JSON Schema of the program file."""
    schema = ProgramFile.model_json_schema(by_alias=True)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        **schema,
        "title": f"rsched program file ({FORMAT})",
    }
