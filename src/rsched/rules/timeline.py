"""Interval arithmetic shared by the validator and the model builders.

Everything is on aware instants; a local date becomes the UTC interval between two
local midnights, so a DST day is 23 or 25 hours long and a shift keeps its true length.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import lru_cache

from rsched.domain import Period, ProgramData, ShiftKind, Slot
from rsched.domain.calendar import day_bounds, local_midnight

MINUTE = timedelta(minutes=1)
Interval = tuple[datetime, datetime]


def minutes(delta: timedelta) -> int:
    return int(delta // MINUTE)


def overlap_minutes(a_start: datetime, a_end: datetime, b_start: datetime, b_end: datetime) -> int:
    lo, hi = max(a_start, b_start), min(a_end, b_end)
    return minutes(hi - lo) if hi > lo else 0


def overlaps(a_start: datetime, a_end: datetime, b_start: datetime, b_end: datetime) -> bool:
    return a_start < b_end and b_start < a_end


def merge(intervals: Iterable[Interval], gap: timedelta = timedelta(0)) -> list[Interval]:
    """Union of intervals; two closer than ``gap`` (or touching) become one."""
    out: list[Interval] = []
    for start, end in sorted(intervals):
        if out and (start - out[-1][1] < gap or start <= out[-1][1]):
            if end > out[-1][1]:
                out[-1] = (out[-1][0], end)
        else:
            out.append((start, end))
    return out


def period_bounds(data: ProgramData, period: Period) -> Interval:
    return local_midnight(period.start, data.tz), local_midnight(
        period.end + timedelta(days=1), data.tz
    )


def leave_intervals(data: ProgramData, person: str) -> list[Interval]:
    """Every absence of the person (blocking or not) merged: leave for the averaging rules."""
    return merge((a.start, a.end) for a in data.absences_by_person.get(person, ()))


def is_leave_day(data: ProgramData, leave: Sequence[Interval], day: date) -> bool:
    """A leave day is a local calendar day wholly covered by absences."""
    lo, hi = day_bounds(day, data.tz)
    return any(start <= lo and hi <= end for start, end in leave)


def nonleave_days(data: ProgramData, person: str, period: Period) -> int:
    """Days of ``period`` that count for averaging (all of them if the setting keeps leave)."""
    if not data.program.settings.rules.exclude_leave_from_average:
        return period.days
    leave = leave_intervals(data, person)
    if not leave:
        return period.days
    return sum(1 for d in period.dates() if not is_leave_day(data, leave, d))


def hours_limit_minutes(data: ProgramData, person: str, period: Period) -> int:
    """HOURS_80's limit in minutes for one person and period: limit × non-leave days ÷ 7."""
    weekly = data.program.settings.rules.hours_limit
    return (weekly * 60 * nonleave_days(data, person, period)) // 7


def required_days_off(data: ProgramData, person: str, period: Period) -> int:
    every = data.program.settings.rules.day_off_every_days
    return math.ceil(nonleave_days(data, person, period) / every)


def call_limit(data: ProgramData, person: str, period: Period) -> int:
    every = data.program.settings.rules.call_every_nights
    return math.ceil(nonleave_days(data, person, period) / every)


def counted_minutes(slot: Slot, lo: datetime, hi: datetime) -> int:
    """Minutes of ``slot`` that count toward hours inside [lo, hi)."""
    if not slot.counts_toward_hours:
        return 0
    return overlap_minutes(slot.start, slot.end, lo, hi)


def period_of_instant(data: ProgramData, instant: datetime) -> int | None:
    """Index of the period containing ``instant``."""
    for i, period in enumerate(data.periods):
        lo, hi = period_bounds(data, period)
        if lo <= instant < hi:
            return i
    return None


# ------------------------------------------------------- continuous duty stretches


@dataclass(frozen=True, slots=True)
class Stretch:
    """A merged run of duty (home call excluded) with the span of its clinical part."""

    start: datetime
    end: datetime
    clinical_start: datetime | None
    clinical_end: datetime | None
    has_call: bool
    slots: tuple[Slot, ...]

    @property
    def clinical_minutes(self) -> int:
        if self.clinical_start is None or self.clinical_end is None:
            return 0
        return minutes(self.clinical_end - self.clinical_start)

    @property
    def total_minutes(self) -> int:
        return minutes(self.end - self.start)


def joins(prev_end: datetime, next_start: datetime, merge_gap: timedelta) -> bool:
    """Two duty periods form one stretch when they touch, overlap or are closer than the gap."""
    return next_start <= prev_end or next_start - prev_end < merge_gap


def stretches(slots: Sequence[Slot], merge_gap: timedelta) -> list[Stretch]:
    """Merged duty stretches of one person's slots (sorted by start)."""
    out: list[Stretch] = []
    current: list[Slot] = []
    end: datetime | None = None
    for slot in sorted((s for s in slots if s.kind.is_duty), key=lambda s: (s.start, s.end)):
        if current and end is not None and joins(end, slot.start, merge_gap):
            current.append(slot)
            end = max(end, slot.end)
        else:
            if current:
                out.append(_stretch(current))
            current, end = [slot], slot.end
    if current:
        out.append(_stretch(current))
    return out


def _stretch(slots: list[Slot]) -> Stretch:
    clinical = [s for s in slots if s.kind.is_clinical]
    return Stretch(
        start=min(s.start for s in slots),
        end=max(s.end for s in slots),
        clinical_start=min((s.start for s in clinical), default=None),
        clinical_end=max((s.end for s in clinical), default=None),
        has_call=any(s.kind is ShiftKind.IN_HOUSE_CALL for s in slots),
        slots=tuple(slots),
    )


# ------------------------------------------------------------ interval groups


@dataclass(frozen=True, slots=True)
class Group:
    """Slots sharing one time interval and clinical-ness: a person works at most one of them."""

    index: int
    start: datetime
    end: datetime
    clinical: bool
    call: bool
    slot_ids: tuple[str, ...]


@lru_cache(maxsize=8)
def duty_groups(data: ProgramData) -> tuple[Group, ...]:
    """Duty slots (home call excluded) grouped by interval, sorted by start."""
    keyed: dict[tuple[datetime, datetime, bool, bool], list[str]] = {}
    for s in data.slots:
        if not s.kind.is_duty:
            continue
        key = (s.start, s.end, s.kind.is_clinical, s.kind is ShiftKind.IN_HOUSE_CALL)
        keyed.setdefault(key, []).append(s.id)
    return tuple(
        Group(index=i, start=k[0], end=k[1], clinical=k[2], call=k[3], slot_ids=tuple(ids))
        for i, (k, ids) in enumerate(sorted(keyed.items()))
    )


def chains(
    groups: Sequence[Group],
    merge_gap: timedelta,
    stop: Callable[[tuple[Group, ...]], bool],
    horizon: timedelta,
) -> list[tuple[Group, ...]]:
    """Connected chains of non-overlapping groups (each joining the previous), extended
    from every start until ``stop(chain)`` is true (recorded) or the chain spans more than
    ``horizon`` (dropped). Returns the recorded chains: the minimal ones meeting ``stop``."""
    by_start = sorted(groups, key=lambda g: g.start)
    starts = [g.start for g in by_start]
    found: list[tuple[Group, ...]] = []

    def extend(chain: tuple[Group, ...]) -> None:
        last = chain[-1]
        lo = bisect.bisect_left(starts, last.end)
        for g in by_start[lo:]:
            if not joins(last.end, g.start, merge_gap):
                break
            nxt = (*chain, g)
            if g.end - chain[0].start > horizon:
                continue
            if stop(nxt):
                found.append(nxt)
            else:
                extend(nxt)

    for g in by_start:
        if stop((g,)):
            found.append((g,))
        else:
            extend((g,))
    return found
