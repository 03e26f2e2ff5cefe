"""DAY_OFF_1_IN_7: one day in seven free of all duty, per averaging period."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime, time, timedelta
from typing import ClassVar

from rsched.domain import Period, ProgramData, Severity, Slot
from rsched.domain.calendar import day_bounds, local_at
from rsched.rules.base import Aux, CheckContext, Linear, ModelContext, Var, Violation, X
from rsched.rules.timeline import (
    Interval,
    is_leave_day,
    leave_intervals,
    merge,
    overlaps,
    period_bounds,
    required_days_off,
)

DAY = timedelta(hours=24)


def free_days(data: ProgramData, person: str, period: Period, duty: list[Slot]) -> int:
    """Days off the person has in ``period``.

    Default: the number of disjoint 24-hour windows free of all duty (home call
    included), i.e. Σ floor(free gap ÷ 24 h) over the gaps of the period's non-leave time.
    With ``day_off_calendar_day``: whole local calendar days free of duty and not leave.
    Leave is neither duty nor a day off: it cuts the free time.
    """
    leave = leave_intervals(data, person)
    lo, hi = period_bounds(data, period)
    if data.program.settings.rules.day_off_calendar_day:
        count = 0
        for day in period.dates():
            if leave and is_leave_day(data, leave, day):
                continue
            d_lo, d_hi = day_bounds(day, data.tz)
            if not any(overlaps(s.start, s.end, d_lo, d_hi) for s in duty):
                count += 1
        return count
    busy: list[Interval] = [(s.start, s.end) for s in duty if overlaps(s.start, s.end, lo, hi)]
    busy += [(a, b) for a, b in leave if overlaps(a, b, lo, hi)]
    cursor = lo
    total = 0
    for start, end in merge(busy):
        if start > cursor:
            total += (min(start, hi) - cursor) // DAY
        cursor = max(cursor, end)
    if hi > cursor:
        total += (hi - cursor) // DAY
    return total


class DayOff1In7:
    code: ClassVar[str] = "DAY_OFF_1_IN_7"
    label: ClassVar[str] = "One day in seven free of clinical work and education"
    severity: ClassVar[Severity] = Severity.VIOLATION
    citation: ClassVar[str] = "ACGME CPR VI.F.3 / 6.24"

    def check(self, ctx: CheckContext) -> list[Violation]:
        data = ctx.data
        out: list[Violation] = []
        for person, slots in ctx.assigned_residents():
            for period in data.periods:
                need = required_days_off(data, person.id, period)
                if need == 0:
                    continue
                have = free_days(data, person.id, period, slots)
                if have < need:
                    lo, hi = period_bounds(data, period)
                    out.append(
                        Violation(
                            rule=self.code,
                            severity=self.severity,
                            person=person.id,
                            start=lo,
                            end=hi,
                            value=float(have),
                            limit=float(need),
                            message=(
                                f"{person.id} has {have} day(s) off in "
                                f"{period.start}..{period.end}; needs {need}"
                            ),
                        )
                    )
        return out

    def window_starts(self, data: ProgramData, period: Period) -> list[datetime]:
        """Where a modelled day off may begin: local midnight, and (unless whole calendar
        days are required) every local clock time at which some shift ends."""
        clocks: set[time] = {time(0)}
        if not data.program.settings.rules.day_off_calendar_day:
            for s in data.slots:
                clocks.add(s.end.astimezone(data.tz).time().replace(second=0, microsecond=0))
        lo, hi = period_bounds(data, period)
        starts: set[datetime] = set()
        day: date = period.start - timedelta(days=1)
        while day <= period.end:
            for clock in clocks:
                t = local_at(day, clock, data.tz)
                if lo <= t and t + DAY <= hi:
                    starts.add(t)
            day += timedelta(days=1)
        return sorted(starts)

    def constraints(self, mctx: ModelContext) -> Iterable[Linear]:
        data = mctx.data
        for person_id, slot_ids in mctx.candidates.items():
            if not data.person_by_id[person_id].is_resident:
                continue
            leave = leave_intervals(data, person_id)
            mine = [data.slot_by_id[s] for s in slot_ids]
            for period in data.periods:
                need = required_days_off(data, person_id, period)
                if need == 0:
                    continue
                windows = [
                    t
                    for t in self.window_starts(data, period)
                    if not any(overlaps(t, t + DAY, a, b) for a, b in leave)
                ]
                tag = f"{person_id},{period.start}"
                offs: list[tuple[datetime, Aux]] = []
                for t in windows:
                    o = Aux(f"dayoff[{tag},{t.isoformat()}]")
                    offs.append((t, o))
                    clash = [s for s in mine if overlaps(s.start, s.end, t, t + DAY)]
                    for s in clash:
                        yield Linear(
                            rule=self.code,
                            name=f"{self.code} {person_id} off {t.isoformat()} vs {s.id}",
                            terms=((o, 1), (X(person_id, s.id), 1)),
                            ub=1,
                            person=person_id,
                        )
                # chosen windows must be disjoint: at each window start, at most one covers it
                for t, _ in offs:
                    cover = [(o, 1) for u, o in offs if u <= t < u + DAY]
                    if len(cover) > 1:
                        yield Linear(
                            rule=self.code,
                            name=f"{self.code} {person_id} disjoint at {t.isoformat()}",
                            terms=tuple(cover),
                            ub=1,
                            person=person_id,
                        )
                terms: tuple[tuple[Var, int], ...] = tuple((o, 1) for _, o in offs)
                yield Linear(
                    rule=self.code,
                    name=f"{self.code} {person_id} {period.start}..{period.end}",
                    terms=terms,
                    lb=need,
                    person=person_id,
                )
