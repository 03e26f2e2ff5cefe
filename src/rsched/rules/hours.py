"""HOURS_80 and its rolling advisory twin."""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from datetime import timedelta
from typing import ClassVar

from rsched.domain import Period, ProgramData, Severity
from rsched.domain.calendar import local_midnight
from rsched.rules.base import (
    Aux,
    CheckContext,
    Linear,
    ModelContext,
    Penalty,
    Var,
    Violation,
    X,
)
from rsched.rules.timeline import (
    counted_minutes,
    hours_limit_minutes,
    is_leave_day,
    leave_intervals,
    nonleave_days,
    period_bounds,
)


class Hours80:
    code: ClassVar[str] = "HOURS_80"
    label: ClassVar[str] = "At most 80 hours a week, averaged over the averaging period"
    severity: ClassVar[Severity] = Severity.VIOLATION
    citation: ClassVar[str] = "ACGME CPR VI.F.1 / 6.22"

    def check(self, ctx: CheckContext) -> list[Violation]:
        data = ctx.data
        weekly = data.program.settings.rules.hours_limit
        out: list[Violation] = []
        for person, slots in ctx.assigned_residents():
            for period in data.periods:
                lo, hi = period_bounds(data, period)
                worked = sum(counted_minutes(s, lo, hi) for s in slots)
                limit = hours_limit_minutes(data, person.id, period)
                if worked > limit:
                    days = nonleave_days(data, person.id, period)
                    avg = worked / 60 / (days / 7) if days else float(worked) / 60
                    out.append(
                        Violation(
                            rule=self.code,
                            severity=self.severity,
                            person=person.id,
                            start=lo,
                            end=hi,
                            value=round(avg, 2),
                            limit=float(weekly),
                            message=(
                                f"{person.id} averages {avg:.1f} h/week over "
                                f"{period.start}..{period.end} ({worked / 60:.1f} h in "
                                f"{round(days)} non-leave days); limit {weekly} h/week"
                            ),
                        )
                    )
        return out

    def constraints(self, mctx: ModelContext) -> Iterable[Linear]:
        data = mctx.data
        for person_id, slot_ids in mctx.candidates.items():
            if not data.person_by_id[person_id].is_resident:
                continue
            for period in data.periods:
                lo, hi = period_bounds(data, period)
                terms: list[tuple[Var, int]] = []
                for sid in slot_ids:
                    m = counted_minutes(data.slot_by_id[sid], lo, hi)
                    if m:
                        terms.append((X(person_id, sid), m))
                limit = hours_limit_minutes(data, person_id, period)
                if sum(c for _, c in terms) > limit:
                    yield Linear(
                        rule=self.code,
                        name=f"{self.code} {person_id} {period.start}..{period.end}",
                        terms=tuple(terms),
                        ub=limit,
                        person=person_id,
                    )


class Hours80Rolling:
    code: ClassVar[str] = "HOURS_80_ROLLING"
    label: ClassVar[str] = "80 hours a week on every rolling window (advisory)"
    severity: ClassVar[Severity] = Severity.WARNING
    citation: ClassVar[str] = "advisory; ACGME averages per rotation"
    model_stride_days: ClassVar[int] = 7
    """The solver penalises windows starting every 7th day; the validator checks every day."""

    def windows(self, ctx_data: ProgramData, *, stride: int = 1) -> list[Period]:
        length = ctx_data.program.settings.rules.rolling_window_days
        total = (ctx_data.end - ctx_data.start).days + 1
        return [
            Period(
                start=ctx_data.start + timedelta(days=i),
                end=ctx_data.start + timedelta(days=i + length - 1),
            )
            for i in range(0, total - length + 1, stride)
        ]

    def _limit(self, ctx_data: ProgramData, person: str, window: Period) -> int:
        rules = ctx_data.program.settings.rules
        days = window.days
        if rules.exclude_leave_from_average:
            leave = leave_intervals(ctx_data, person)
            if leave:
                days = sum(1 for d in window.dates() if not is_leave_day(ctx_data, leave, d))
        return (rules.hours_limit * 60 * days) // 7

    def check(self, ctx: CheckContext) -> list[Violation]:
        data = ctx.data
        tz = data.tz
        weekly = data.program.settings.rules.hours_limit
        length = data.program.settings.rules.rolling_window_days
        out: list[Violation] = []
        windows = self.windows(data)
        if not windows:
            return out
        n_days = (data.end - data.start).days + 1
        bounds = [local_midnight(data.start + timedelta(days=i), tz) for i in range(n_days + 1)]
        for person, slots in ctx.assigned_residents():
            if not slots:
                continue
            # minutes per local day, then every window is a difference of prefix sums
            per_day = [0] * n_days
            for s in slots:
                i = max(0, bisect.bisect_right(bounds, s.start) - 1)
                while i < n_days and bounds[i] < s.end:
                    per_day[i] += counted_minutes(s, bounds[i], bounds[i + 1])
                    i += 1
            prefix = [0]
            for m in per_day:
                prefix.append(prefix[-1] + m)
            for i, window in enumerate(windows):
                worked = prefix[i + length] - prefix[i]
                limit = self._limit(data, person.id, window)
                if worked > limit:
                    out.append(
                        Violation(
                            rule=self.code,
                            severity=self.severity,
                            person=person.id,
                            start=bounds[i],
                            end=bounds[i + length],
                            value=round(worked / 60, 1),
                            limit=round(limit / 60, 1),
                            message=(
                                f"{person.id} works {worked / 60:.1f} h in the window "
                                f"{window.start}..{window.end}; advisory limit "
                                f"{limit / 60:.1f} h ({weekly} h/week)"
                            ),
                        )
                    )
        return out

    def penalties(self, mctx: ModelContext) -> tuple[list[Linear], list[Penalty]]:
        data = mctx.data
        tz = data.tz
        weight = data.program.settings.weights.rolling_hours
        lins: list[Linear] = []
        pens: list[Penalty] = []
        if weight <= 0:
            return lins, pens
        for window in self.windows(data, stride=self.model_stride_days):
            lo = local_midnight(window.start, tz)
            hi = local_midnight(window.end + timedelta(days=1), tz)
            for person_id, slot_ids in mctx.candidates.items():
                if not data.person_by_id[person_id].is_resident:
                    continue
                terms: list[tuple[Var, int]] = []
                for sid in slot_ids:
                    m = counted_minutes(data.slot_by_id[sid], lo, hi)
                    if m:
                        terms.append((X(person_id, sid), m))
                limit = self._limit(data, person_id, window)
                total = sum(c for _, c in terms)
                if total <= limit:
                    continue
                excess = Aux(
                    f"rolling_excess_h[{person_id},{window.start}]", 0, (total - limit) // 60 + 1
                )
                lins.append(
                    Linear(
                        rule=self.code,
                        name=f"{self.code} {person_id} {window.start}",
                        terms=(*terms, (excess, -60)),
                        ub=limit,
                        person=person_id,
                    )
                )
                pens.append(Penalty(name="rolling_hours", terms=((excess, 1),), weight=weight))
        return lins, pens
