"""CALL_Q3: in-house call no more often than every third night, per averaging period."""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

from rsched.domain import ProgramData, Severity, ShiftKind, Slot
from rsched.rules.base import CheckContext, Linear, ModelContext, Violation, X
from rsched.rules.timeline import call_limit, period_bounds, period_of_instant


def calls_by_period(data: ProgramData, slots: Iterable[Slot]) -> dict[int, list[Slot]]:
    """In-house call slots by the period their start falls in."""
    out: dict[int, list[Slot]] = {}
    for s in slots:
        if s.kind is ShiftKind.IN_HOUSE_CALL:
            idx = period_of_instant(data, s.start)
            if idx is not None:
                out.setdefault(idx, []).append(s)
    return out


class CallQ3:
    code: ClassVar[str] = "CALL_Q3"
    label: ClassVar[str] = "In-house call no more often than every third night"
    severity: ClassVar[Severity] = Severity.VIOLATION
    citation: ClassVar[str] = "ACGME CPR VI.F.8 / 6.28"

    def check(self, ctx: CheckContext) -> list[Violation]:
        data = ctx.data
        out: list[Violation] = []
        for person, slots in ctx.assigned_residents():
            for idx, calls in calls_by_period(data, slots).items():
                period = data.periods[idx]
                limit = call_limit(data, person.id, period)
                if len(calls) > limit:
                    lo, hi = period_bounds(data, period)
                    out.append(
                        Violation(
                            rule=self.code,
                            severity=self.severity,
                            person=person.id,
                            start=lo,
                            end=hi,
                            value=float(len(calls)),
                            limit=float(limit),
                            message=(
                                f"{person.id} has {len(calls)} in-house calls in "
                                f"{period.start}..{period.end}; at most {limit} (every "
                                f"{data.program.settings.rules.call_every_nights} nights)"
                            ),
                        )
                    )
        return out

    def constraints(self, mctx: ModelContext) -> Iterable[Linear]:
        data = mctx.data
        for person_id, slot_ids in mctx.candidates.items():
            if not data.person_by_id[person_id].is_resident:
                continue
            mine = [data.slot_by_id[s] for s in slot_ids]
            for idx, calls in calls_by_period(data, mine).items():
                period = data.periods[idx]
                limit = call_limit(data, person_id, period)
                if len(calls) > limit:
                    yield Linear(
                        rule=self.code,
                        name=f"{self.code} {person_id} {period.start}..{period.end}",
                        terms=tuple((X(person_id, s.id), 1) for s in calls),
                        ub=limit,
                        person=person_id,
                    )
