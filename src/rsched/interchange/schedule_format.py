"""The tables of the JSON interchange file ``rsched.schedule/1`` (see docs/DOMAIN.md).

One table per record kind (:data:`PERSON`, :data:`SLOT`, …) lists the file keys, the
record attributes they hold, how to check them and their default; export and import
(:mod:`rsched.interchange.schedule_json`) both read these tables, so the format is
written down once. Sensitive fields (``military_status``, ``accommodation_notes``,
``leave_type``) are in no table, so they are never written.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from enum import StrEnum
from typing import Any

from rsched.domain import AssignmentSource, PersonKind, ShiftKind

FORMAT = "rsched.schedule/1"
SUMMARY_KEYS = ("algorithm", "status", "objective", "violations", "warnings", "coverage")
UNSPECIFIED_LEAVE = "unspecified"
"""Leave type of an imported absence: the real one is sensitive and never exported."""

Parser = Callable[[Any], Any]
BAD: Any = object()
"""A value that failed its check (its error is already recorded)."""
REQUIRED: Any = object()

# ------------------------------------------------------------------------ value checks


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("must be a non-empty string")
    return value


def _string(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("must be a string")
    return value


def _opt(parse: Parser) -> Parser:
    return lambda value: None if value is None else parse(value)


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("must be true or false")
    return value


def _whole(lo: int) -> Parser:
    def parse(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < lo:
            raise ValueError(f"must be a whole number ≥ {lo}")
        return value

    return parse


def _number(value: Any) -> float | int:
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        raise ValueError("must be a number")
    return value


def _iso(kind: Callable[[str], Any], message: str) -> Parser:
    def parse(value: Any) -> Any:
        try:
            if isinstance(value, str):
                return kind(value)
        except ValueError:
            pass
        raise ValueError(message)

    return parse


_day = _iso(date.fromisoformat, "must be an ISO date (YYYY-MM-DD)")
_clock = _iso(time.fromisoformat, "must be an ISO time (HH:MM[:SS])")
_local = _iso(datetime.fromisoformat, "must be an ISO datetime with offset")


def _instant(value: Any) -> datetime:
    parsed: datetime = _local(value)
    if parsed.utcoffset() is None:
        raise ValueError("must be an ISO datetime with offset")
    return parsed.astimezone(UTC)


def _choice(enum: type[StrEnum]) -> Parser:
    def parse(value: Any) -> Any:
        try:
            return enum(value)
        except ValueError:
            raise ValueError("must be one of " + ", ".join(e.value for e in enum)) from None

    return parse


def _texts(value: Any) -> frozenset[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ValueError("must be a list of non-empty strings")
    return frozenset(value)


def _levels(value: Any) -> frozenset[int]:
    if not isinstance(value, list) or not all(
        isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 7 for v in value
    ):
        raise ValueError("must be a list of PGY levels 1..7")
    return frozenset(value)


def _level_map(least: int) -> Parser:
    def parse(value: Any) -> dict[int, int]:
        if not isinstance(value, dict):
            raise ValueError("must be an object mapping a PGY level (0..7) to a number")
        out: dict[int, int] = {}
        for key, count in value.items():
            if not (isinstance(key, str) and key.isdigit() and int(key) <= 7):
                raise ValueError(f"key {key!r} must be a PGY level 0..7")
            out[int(key)] = _whole(least)(count)
        return out

    return parse


# ------------------------------------------------------------------------ the tables


@dataclass(frozen=True, slots=True)
class Key:
    """File key ``key`` holds record attribute ``attr`` (default: the same name), checked by
    ``parse``; when absent, ``default`` (a value, or a function of the fields read so far)
    or an error when required. ``ref`` names the list whose records it must refer to."""

    key: str
    parse: Parser
    default: Any = REQUIRED
    attr: str = ""
    ref: str = ""

    @property
    def name(self) -> str:
        return self.attr or self.key


def _same_as(attr: str) -> Callable[[dict[str, Any]], Any]:
    return lambda read: read[attr]


def _empty(_: dict[str, Any]) -> dict[int, int]:
    return {}


PROGRAM = (
    Key("id", _text),
    Key("name", _string),
    Key("timezone", _text),
    Key("academic_year_start", _day, None),
    Key("block_length_days", _whole(1), 28),
)
PERIOD = (Key("start", _day), Key("end", _day))
PERSON = (
    Key("id", _text),
    Key("kind", _choice(PersonKind)),
    Key("pgy", _opt(_whole(0))),
    Key("name", _string, _same_as("id")),
    Key("tags", _texts, frozenset()),
    Key("active", _flag, True),
)
ABSENCE = (
    Key("person", _text, attr="person_id", ref="people"),
    Key("start", _instant),
    Key("end", _instant),
    Key("blocking", _flag),
    Key("id", _text, None),
)
SLOT = (
    Key("id", _text),
    Key("shift", _text),
    Key("kind", _choice(ShiftKind)),
    Key("start", _instant),
    Key("end", _instant),
    Key("min", _whole(0), attr="min_staff"),
    Key("max", _whole(0), attr="max_staff"),
    Key("staff", _choice(PersonKind), PersonKind.RESIDENT, attr="staff_kind"),
    Key("pgy_min", _level_map(0), _empty),
    Key("supervision", _level_map(1), _empty),
    Key("faculty_max", _whole(0), 0),
    Key("counts_toward_hours", _flag, None),
)
ASSIGNMENT = (
    Key("person", _text, attr="person_id", ref="people"),
    Key("slot", _text, attr="slot_id", ref="slots"),
    Key("source", _choice(AssignmentSource), AssignmentSource.MANUAL),
)
SHIFT_TYPE = (
    Key("code", _text),
    Key("name", _string, _same_as("code")),
    Key("start", _clock),
    Key("duration_minutes", _whole(1)),
    Key("kind", _choice(ShiftKind)),
    Key("counts_toward_hours", _flag, True),
    Key("eligible_pgy", _levels, frozenset(range(1, 8))),
    Key("required_tags", _texts, frozenset()),
    Key("faculty", _flag, False),
)
ROTATION = (
    Key("id", _text),
    Key("name", _string, _same_as("id")),
    Key("eligible_pgy", _levels),
    Key("min_residents", _whole(0)),
    Key("max_residents", _whole(0)),
    Key("shift_types", _texts),
)
ROTATION_ASSIGNMENT = (
    Key("person", _text, attr="person_id", ref="people"),
    Key("block", _whole(1), ref="blocks"),
    Key("rotation", _text, attr="rotation_id", ref="rotations"),
)
REQUEST = (
    Key("id", _text),
    Key("person", _text, attr="person_id", ref="people"),
    Key("day", _day),
    Key("wants", _flag),
    Key("weight", _whole(1), 1),
    Key("shift", _opt(_text), None),
)
SUMMARY = (
    Key("algorithm", _opt(_string)),
    Key("status", _opt(_string)),
    Key("objective", _opt(_number)),
    Key("violations", _whole(0)),
    Key("warnings", _whole(0)),
    Key("coverage", _number),
)
