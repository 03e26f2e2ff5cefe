"""The soft goals: named penalty terms of the objective, and their evaluation.

Each term has one definition used two ways: ``model_terms`` gives the solver linear
pieces, ``evaluate`` computes the same number on a finished schedule, so the report
can say exactly which penalties fired and the solver's objective can be checked.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

from rsched.domain import ProgramData, ShiftKind, Slot
from rsched.domain.calendar import local_date
from rsched.rules.base import Aux, CheckContext, Linear, ModelContext, Penalty, Terms, X

CATEGORIES: dict[str, Callable[[ProgramData, Slot], bool]] = {
    "nights": lambda _d, s: s.kind is ShiftKind.NIGHT_FLOAT,
    "weekends": lambda d, s: local_date(s.start, d.tz).weekday() >= 5,
    "calls": lambda _d, s: s.kind is ShiftKind.IN_HOUSE_CALL,
}
SPREAD_TERM = {"nights": "night_spread", "weekends": "weekend_spread", "calls": "call_spread"}


def cohorts(
    data: ProgramData, candidates: dict[str, list[str]], category: str
) -> dict[int, list[str]]:
    """PGY level → residents of that level who could work any slot of ``category``."""
    test = CATEGORIES[category]
    out: dict[int, list[str]] = defaultdict(list)
    for person in data.residents():
        slots = candidates.get(person.id, [])
        if any(test(data, data.slot_by_id[s]) for s in slots):
            out[person.pgy or 0].append(person.id)
    return {lvl: ids for lvl, ids in sorted(out.items()) if len(ids) > 1}


def request_slots(data: ProgramData) -> dict[str, list[str]]:
    """request id → slots it concerns (duty slots starting on that local day)."""
    by_day: dict[object, list[Slot]] = defaultdict(list)
    for s in data.slots:
        by_day[local_date(s.start, data.tz)].append(s)
    return {
        r.id: [s.id for s in by_day.get(r.day, []) if r.shift is None or s.shift == r.shift]
        for r in data.requests
    }


def model_terms(mctx: ModelContext) -> tuple[list[Linear], list[Penalty]]:
    data = mctx.data
    w = data.program.settings.weights
    lins: list[Linear] = []
    pens: list[Penalty] = []
    for category, term in SPREAD_TERM.items():
        weight = getattr(w, term)
        if weight <= 0:
            continue
        test = CATEGORIES[category]
        for level, members in cohorts(data, mctx.candidates, category).items():
            counts = {
                p: [s for s in mctx.candidates[p] if test(data, data.slot_by_id[s])]
                for p in members
            }
            top = max(len(v) for v in counts.values())
            hi = Aux(f"{term}_max[{level}]", 0, top)
            lo = Aux(f"{term}_min[{level}]", 0, top)
            for p, slots in counts.items():
                xs: Terms = tuple((X(p, s), 1) for s in slots)
                lins.append(Linear(rule=term, name=f"{term} max {p}", terms=(*xs, (hi, -1)), ub=0))
                lins.append(Linear(rule=term, name=f"{term} min {p}", terms=(*xs, (lo, -1)), lb=0))
            spread = ((hi, 1), (lo, -1))
            lins.append(Linear(rule=term, name=f"{term} order [{level}]", terms=spread, lb=0))
            pens.append(Penalty(name=term, terms=spread, weight=weight))
    if w.request > 0:
        cand = mctx.candidate_set
        for r in data.requests:
            xs = tuple(
                (X(r.person_id, s), 1)
                for s in request_slots(data)[r.id]
                if (r.person_id, s) in cand
            )
            if r.wants:
                miss = Aux(f"request_missed[{r.id}]")
                lins.append(
                    Linear(rule="request", name=f"request {r.id}", terms=(*xs, (miss, 1)), lb=1)
                )
                pens.append(Penalty(name="request", terms=((miss, r.weight),), weight=w.request))
            elif xs:
                pens.append(
                    Penalty(
                        name="request", terms=tuple((v, r.weight) for v, _ in xs), weight=w.request
                    )
                )
    if w.churn > 0 and mctx.previous:
        cand = mctx.candidate_set
        gone = sum(1 for pair in mctx.previous if pair not in cand)
        added: list[tuple[X | Aux, int]] = [
            (X(p, s), 1) for (p, s) in sorted(cand) if (p, s) not in mctx.previous
        ]
        for p, s in sorted(mctx.previous & cand):
            removed = Aux(f"churn_removed[{p},{s}]")
            lins.append(
                Linear(
                    rule="churn", name=f"churn {p} {s}", terms=((X(p, s), 1), (removed, 1)), lb=1
                )
            )
            added.append((removed, 1))
        pens.append(Penalty(name="churn", terms=tuple(added), weight=w.churn, constant=gone))
    return lins, pens


@dataclass(frozen=True, slots=True, kw_only=True)
class Fairness:
    category: str
    pgy: int
    min: int
    max: int

    @property
    def spread(self) -> int:
        return self.max - self.min


def fairness(ctx: CheckContext, candidates: dict[str, list[str]]) -> list[Fairness]:
    out: list[Fairness] = []
    data = ctx.data
    for category, test in CATEGORIES.items():
        for level, members in cohorts(data, candidates, category).items():
            counts = [sum(1 for s in ctx.slots_of.get(p, []) if test(data, s)) for p in members]
            out.append(Fairness(category=category, pgy=level, min=min(counts), max=max(counts)))
    return out


def evaluate(
    ctx: CheckContext,
    candidates: dict[str, list[str]],
    previous: frozenset[tuple[str, str]] = frozenset(),
    warnings_by_term: dict[str, int] | None = None,
) -> dict[str, int]:
    """Unweighted value of every named term on a finished schedule."""
    data = ctx.data
    w = data.program.settings.weights
    values: dict[str, int] = {}
    for f in fairness(ctx, candidates):
        term = SPREAD_TERM[f.category]
        if getattr(w, term) > 0:
            values[term] = values.get(term, 0) + f.spread
    if w.request > 0 and data.requests:
        assigned = {(a.person_id, a.slot_id) for a in ctx.assignments}
        total = 0
        slots_of = request_slots(data)
        for r in data.requests:
            hits = sum(1 for s in slots_of[r.id] if (r.person_id, s) in assigned)
            total += r.weight * (int(hits == 0) if r.wants else hits)
        values["request"] = total
    if w.churn > 0 and previous:
        now = {(a.person_id, a.slot_id) for a in ctx.assignments}
        values["churn"] = len(now ^ previous)
    for term, value in (warnings_by_term or {}).items():
        values[term] = value
    return values


def weighted(data: ProgramData, values: dict[str, int]) -> int:
    w = data.program.settings.weights
    return sum(getattr(w, term) * v for term, v in values.items())
