"""Tiny hand-made programs for rule tests: every slot and assignment is explicit."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from datetime import date, datetime, time, timedelta
from typing import Any

from rsched.domain import (
    Absence,
    Assignment,
    Person,
    PersonKind,
    Program,
    ProgramData,
    ProgramSettings,
    Request,
    RuleSettings,
    ShiftKind,
    ShiftType,
    Slot,
)
from rsched.domain.calendar import Period, local_at, zone

TZ = "America/New_York"
START = date(2026, 7, 1)


def at(day: int, hour: float, *, start: date = START, tz: str = TZ) -> datetime:
    h = int(hour)
    m = round((hour - h) * 60)
    return local_at(start + timedelta(days=day), time(h, m), zone(tz))


def mkslot(
    sid: str,
    day: int,
    hour: float,
    hours: float,
    kind: ShiftKind = ShiftKind.INPATIENT,
    *,
    min_staff: int = 0,
    max_staff: int = 5,
    **extra: Any,
) -> Slot:
    start = at(day, hour)
    return Slot(
        id=sid,
        shift=extra.pop("shift", sid.split("-")[0]),
        kind=kind,
        start=start,
        end=start + timedelta(hours=hours),
        min_staff=min_staff,
        max_staff=max_staff,
        counts_toward_hours=extra.pop("counts_toward_hours", kind is not ShiftKind.HOME_CALL),
        **extra,
    )


def resident(pid: str, pgy: int = 1, **kw: Any) -> Person:
    return Person(id=pid, name=f"Resident {pid}", kind=PersonKind.RESIDENT, pgy=pgy, **kw)


def faculty(pid: str) -> Person:
    return Person(id=pid, name=f"Faculty {pid}", kind=PersonKind.FACULTY)


def program(
    *,
    people: Iterable[Person],
    slots: Iterable[Slot],
    days: int = 28,
    absences: Iterable[Absence] = (),
    requests: Iterable[Request] = (),
    shift_types: Iterable[ShiftType] = (),
    rules: RuleSettings | None = None,
    periods: Iterable[Period] | None = None,
    **extra: Any,
) -> ProgramData:
    end = START + timedelta(days=days - 1)
    settings = ProgramSettings(rules=rules or RuleSettings())
    return ProgramData(
        program=Program(
            id="p1", name="Test", timezone=TZ, academic_year_start=START, settings=settings
        ),
        start=START,
        end=end,
        periods=tuple(periods) if periods is not None else (Period(start=START, end=end),),
        people=tuple(people),
        slots=tuple(slots),
        absences=tuple(absences),
        requests=tuple(requests),
        shift_types=tuple(shift_types),
        **extra,
    )


def assign(*pairs: tuple[str, str]) -> list[Assignment]:
    return [Assignment(person_id=p, slot_id=s) for p, s in pairs]


def with_rules(data: ProgramData, **changes: Any) -> ProgramData:
    rules = replace(data.program.settings.rules, **changes)
    prog = replace(data.program, settings=replace(data.program.settings, rules=rules))
    return replace(data, program=prog)


def vacation(aid: str, person: str, first_day: int, days: int) -> Absence:
    return Absence(id=aid, person_id=person, start=at(first_day, 0), end=at(first_day + days, 0))
