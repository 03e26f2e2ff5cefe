"""Repair after publishing: re-solve only the days that new absences (or other breaches)
broke, keep the rest of the active schedule exactly, and change as little as possible.

``repair(data, active, params=…)`` takes the program as it is now (with the new
absences) and the active assignments:

1. **What is broken.** Pairs that are no longer candidates (the person is now on a
   blocking absence, or no longer eligible) must go; the other assignments are checked
   with every hard rule. A breach tied to a slot (the dropped pairs' slots, coverage or
   supervision left short, an overlap) marks the local days that slot touches; a breach
   of one person over a short window (a duty stretch, the rest after a call) marks the
   days of the window; a breach over a whole averaging period (HOURS_80, DAY_OFF_1_IN_7,
   CALL_Q3 still broken once the dropped pairs are gone) frees that person's own
   slots in the period, since no window of days short of the period can repair a count
   over the period.
2. **How wide.** The marked days are widened by ``margin`` days on each side, and every
   slot starting on one of those days is re-solved (free); every other assignment is
   fixed, and no one is added to a slot outside them. The margin is
   ``max(window_days, ⌈(longest duty stretch with education + merge gap + rest after
   call) ÷ 24 h⌉)`` — 28 h + 1 h + 14 h = 43 h → 2 days with the ACGME defaults — for
   these reasons:

   * the stretch rules (CONTINUOUS_24_4, REST_14_AFTER_24, REST_8) tie a slot to every
     slot that starts within that span of it, so a substitute who takes a freed slot
     may have to give up (or move) duty up to two days away; with a narrower margin
     those neighbours would be fixed and the substitute refused;
   * DAY_OFF_1_IN_7: a day off is any 24 free hours starting at midnight or at a shift
     end, so it straddles two calendar days; a substitute who works on their day off
     needs a new 24-h window, which means freeing a neighbouring day and the evening
     before or the morning after it — covered by the same two days;
   * HOURS_80 and CALL_Q3 (and the count of days off) are totals over the averaging
     period (28 days): only the whole period frees them completely; inside the margin a
     substitute can give up a shift for the one they take, and anyone below the limit
     can simply take it. When that is not enough, the attempt is infeasible and the
     repair **escalates**: margin × 4, then the whole horizon.

3. **Solve** the restricted model (``build_model`` with ``candidates=`` the free pairs
   plus the fixed pairs of the people who have a free one, ``fixed=`` those fixed
   pairs, ``previous=`` the active pairs for the churn penalty), hinted with the active
   schedule. Staffing constraints of slots that are not free hold only fixed pairs and
   are left out (people without a free pair stay out of the model entirely), and so are
   those of a free slot nobody can work any more (no window could fill it: the
   validator reports it and the status is ``partial``); the spread terms of the
   objective are taken among the people in the model.
4. **Validate** the whole new schedule with the independent validator (churn against the
   active schedule included) and diff it against the active one.

When no attempt finds a schedule (the absence cannot be covered under the hard rules
at all) the repair re-solves the first window once more with staffing minima relaxed
(each missing person costs a large penalty), so the result is the least-bad schedule
and its report names the slots left short (status ``partial``).
"""

from __future__ import annotations

import math
import time
from collections import Counter, defaultdict
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from typing import Literal

from rsched.domain import (
    Assignment,
    AssignmentSource,
    FieldError,
    InvalidInput,
    ProgramData,
    Severity,
    Slot,
)
from rsched.domain.calendar import local_date
from rsched.rules.access import candidate_slots
from rsched.rules.base import Aux, CheckContext, Linear, Penalty, Var, Violation
from rsched.rules.registry import HARD_RULES
from rsched.rules.report import ValidationReport, validate
from rsched.solver.api import SOLVERS, SolveParams
from rsched.solver.control import Control
from rsched.solver.model import ModelSpec, build_model
from rsched.solver.result import SolveResult, SolveStatus

Pair = tuple[str, str]
"""(person id, slot id)."""

SHORTFALL_WEIGHT = 1_000_000
"""Penalty per missing person on a slot in a relaxed model: above any other objective."""
SHORT_WINDOW = timedelta(days=2)
"""A person's breach over a window up to this long marks its days; longer ones are
period totals and free the person's own slots instead."""


# ------------------------------------------------------------------------ diffs


@dataclass(frozen=True, slots=True, kw_only=True)
class ScheduleDiff:
    """What changed between two schedules, per person."""

    added: dict[str, tuple[str, ...]]
    """Person → slots they gained."""
    removed: dict[str, tuple[str, ...]]
    """Person → slots they lost."""
    changed: int
    """Changed assignments: Σ over slots of max(people added, people removed), so a shift
    handed from one person to another counts once, and a dropped or extra one once."""

    @property
    def n_added(self) -> int:
        return sum(len(v) for v in self.added.values())

    @property
    def n_removed(self) -> int:
        return sum(len(v) for v in self.removed.values())

    def slots(self) -> set[str]:
        return {s for v in (*self.added.values(), *self.removed.values()) for s in v}

    def to_dict(self) -> dict[str, object]:
        return {
            "changed": self.changed,
            "added": self.n_added,
            "removed": self.n_removed,
            "added_by_person": {p: list(v) for p, v in sorted(self.added.items())},
            "removed_by_person": {p: list(v) for p, v in sorted(self.removed.items())},
        }


def schedule_diff(before: Iterable[Pair], after: Iterable[Pair]) -> ScheduleDiff:
    old, new = set(before), set(after)
    added: dict[str, list[str]] = defaultdict(list)
    removed: dict[str, list[str]] = defaultdict(list)
    plus: Counter[str] = Counter()
    minus: Counter[str] = Counter()
    for p, s in sorted(new - old):
        added[p].append(s)
        plus[s] += 1
    for p, s in sorted(old - new):
        removed[p].append(s)
        minus[s] += 1
    return ScheduleDiff(
        added={p: tuple(v) for p, v in added.items()},
        removed={p: tuple(v) for p, v in removed.items()},
        changed=sum(max(plus[s], minus[s]) for s in plus.keys() | minus.keys()),
    )


# ------------------------------------------------------------- days and windows


def slot_days(data: ProgramData, slot: Slot) -> list[date]:
    """The local days a slot touches (a night shift touches two)."""
    first = local_date(slot.start, data.tz)
    last = local_date(slot.end - timedelta(microseconds=1), data.tz)
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def window_days_of(data: ProgramData, start: datetime, end: datetime) -> list[date]:
    first = local_date(start, data.tz)
    last = local_date(max(start, end - timedelta(microseconds=1)), data.tz)
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def minimum_margin(data: ProgramData) -> int:
    """Days on each side of a breach that the stretch and day-off rules need (see the
    module docstring): ⌈(stretch with education + merge gap + rest after call) ÷ 24 h⌉."""
    rules = data.program.settings.rules
    reach = (
        rules.max_continuous_with_education_minutes
        + rules.merge_gap_minutes
        + rules.rest_after_call_minutes
    )
    return max(1, math.ceil(reach / (24 * 60)))


def widen(days: Collection[date], margin: int) -> set[date]:
    return {d + timedelta(days=k) for d in days for k in range(-margin, margin + 1)}


def hard_violations(data: ProgramData, pairs: Iterable[Pair]) -> list[Violation]:
    """Hard violations (severity violation) of the hard rules only: the validator without
    the quality figures."""
    ctx = CheckContext(data, [Assignment(person_id=p, slot_id=s) for p, s in pairs])
    return [v for rule in HARD_RULES for v in rule.check(ctx) if v.severity is Severity.VIOLATION]


@dataclass(frozen=True, slots=True, kw_only=True)
class Breaches:
    days: frozenset[date]
    """Local days marked by breaches tied to a slot or a short window."""
    slots: frozenset[str]
    """Slots freed because their person breaks a period total."""
    dropped: frozenset[Pair]
    """Active pairs that are no longer candidates (absence, eligibility)."""
    violations: tuple[Violation, ...]
    """The hard violations of the active schedule as it stands now."""

    @property
    def empty(self) -> bool:
        return not self.days and not self.slots and not self.dropped


def find_breaches(
    data: ProgramData, active: Collection[Pair], candidate_set: Collection[Pair]
) -> Breaches:
    now = tuple(hard_violations(data, active))
    dropped = frozenset(pr for pr in active if pr not in candidate_set)
    kept = [pr for pr in active if pr not in dropped]
    days: set[date] = set()
    for _, s in dropped:
        days.update(slot_days(data, data.slot_by_id[s]))
    loosened: set[str] = set()
    slots_of: dict[str, list[Slot]] = defaultdict(list)
    for p, s in kept:
        slots_of[p].append(data.slot_by_id[s])
    lo, hi = data.horizon_instants
    for v in hard_violations(data, kept):
        if v.slot is not None:
            days.update(slot_days(data, data.slot_by_id[v.slot]))
        elif v.person is not None:
            start, end = v.start or lo, v.end or hi
            if end - start <= SHORT_WINDOW:
                days.update(window_days_of(data, start, end))
            else:
                loosened.update(
                    s.id for s in slots_of.get(v.person, []) if s.start < end and start < s.end
                )
    return Breaches(
        days=frozenset(days), slots=frozenset(loosened), dropped=dropped, violations=now
    )


# --------------------------------------------------------- the restricted model


def relax_staffing(spec: ModelSpec, weight: int = SHORTFALL_WEIGHT) -> ModelSpec:
    """The same model with every per-slot minimum (coverage, PGY mix, supervision)
    softened: a ``shortfall`` variable makes up what is missing, at ``weight`` each."""
    hard: list[Linear] = []
    soft = list(spec.soft)
    penalties = list(spec.penalties)
    for lin in spec.hard:
        if lin.slot is None or lin.lb is None:
            hard.append(lin)
            continue
        lowest = sum(min(0, c) for _, c in lin.terms)
        if lin.lb - lowest <= 0:
            hard.append(lin)
            continue
        coef = max((c for _, c in lin.terms if c > 0), default=1)
        short = Aux(f"shortfall[{lin.name}]", 0, math.ceil((lin.lb - lowest) / coef))
        if lin.ub is not None:
            hard.append(replace(lin, lb=None))
        terms: tuple[tuple[Var, int], ...] = (*lin.terms, (short, coef))
        hard.append(replace(lin, terms=terms, ub=None))
        penalties.append(Penalty(name="shortfall", terms=((short, 1),), weight=weight))
    return replace(spec, hard=hard, soft=soft, penalties=penalties)


def restricted_model(
    data: ProgramData,
    candidates: dict[str, list[str]],
    base: Collection[Pair],
    free_slots: Collection[str],
    *,
    previous: Collection[Pair],
    exclude: Collection[str] = (),
    movers: Collection[str] | None = None,
    relax: bool = False,
) -> tuple[ModelSpec, frozenset[Pair]]:
    """The model over ``free_slots`` with the rest of ``base`` fixed.

    A candidate pair is free when its slot is free and its person may move (``movers``,
    everyone when None); people in ``exclude`` get no pair at all (their base pairs go,
    counted as churn). Every other base pair is fixed. The model holds the free pairs
    and every fixed pair of the people who have a free one (their person rules tie
    them together), plus the fixed pairs of other people on the slots that have a free
    pair (the slots' staffing rules count them; those people's own rules are not
    posted, since none of their assignments can change). Only the slots with a free
    pair keep their staffing rules. Returns the spec and the fixed pairs left outside
    the model: they are part of the schedule unchanged."""
    free = set(free_slots)
    gone = set(exclude)
    moving = None if movers is None else set(movers)

    def may_move(p: str, s: str) -> bool:
        return s in free and (moving is None or p in moving)

    free_pairs = {
        (p, s) for p, slots in candidates.items() if p not in gone for s in slots if may_move(p, s)
    }
    live_slots = {s for _, s in free_pairs}
    free_people = {p for p, _ in free_pairs}
    fixed = {(p, s) for p, s in base if p not in gone and not may_move(p, s)}
    model_cands: dict[str, list[str]] = {}
    for p, slots in candidates.items():
        if p in free_people:
            mine = [s for s in slots if (p, s) in free_pairs or (p, s) in fixed]
        else:
            mine = [s for s in slots if s in live_slots and (p, s) in fixed]
        if mine:
            model_cands[p] = mine
    cset = {(p, s) for p, slots in model_cands.items() for s in slots}
    in_model = frozenset(fixed & cset)
    outside = frozenset(fixed - cset)
    prev = frozenset(pr for pr in previous if pr in cset or pr not in fixed)
    spec = build_model(data, previous=prev, fixed=in_model, candidates=model_cands)
    spec.hard = [
        c
        for c in spec.hard
        if (c.slot is None or c.slot in live_slots)
        and (c.person is None or c.person in free_people)
    ]
    spec.constraints_by_rule = dict(sorted(Counter(c.rule for c in spec.hard).items()))
    if relax:
        spec = relax_staffing(spec)
    return spec, outside


def solve_spec(spec: ModelSpec, params: SolveParams, control: Control) -> SolveResult:
    """Run the chosen solver on a ready model (no re-validation: the caller validates the
    whole schedule the model's solution is part of)."""
    params.check()
    return SOLVERS[params.algorithm](spec, params, control)


def merge_assignments(
    active: Sequence[Assignment], pairs: Iterable[Pair]
) -> tuple[Assignment, ...]:
    """The new schedule as assignments: unchanged pairs keep their record (and source)."""
    keep = {(a.person_id, a.slot_id): a for a in active}
    out = [
        keep.get(pr) or Assignment(person_id=pr[0], slot_id=pr[1], source=AssignmentSource.SOLVER)
        for pr in set(pairs)
    ]
    return tuple(sorted(out))


# ----------------------------------------------------------------------- repair


@dataclass(frozen=True, slots=True, kw_only=True)
class RepairAttempt:
    margin: int | None
    """Days added on each side of the breaches (None: the whole horizon)."""
    relaxed: bool
    free_slots: int
    status: SolveStatus
    seconds: float

    def to_dict(self) -> dict[str, object]:
        return {
            "margin": self.margin,
            "relaxed": self.relaxed,
            "free_slots": self.free_slots,
            "status": str(self.status),
            "seconds": round(self.seconds, 3),
        }


@dataclass(frozen=True, kw_only=True)
class RepairResult:
    status: Literal["unchanged", "repaired", "partial"]
    """``unchanged``: nothing was broken; ``repaired``: a schedule with no hard violation;
    ``partial``: the best schedule found still breaks hard rules (see ``report``)."""
    assignments: tuple[Assignment, ...]
    """The new full schedule."""
    report: ValidationReport
    diff: ScheduleDiff
    """Against the active schedule."""
    result: SolveResult | None
    """The solve that produced it (its ``assignments`` and ``report`` are the full ones)."""
    days: tuple[date, ...] = ()
    """Local days whose slots were re-solved (free)."""
    free_slots: frozenset[str] = frozenset()
    margin: int | None = None
    breaches: tuple[Violation, ...] = ()
    """The hard violations of the active schedule against the program as it is now."""
    attempts: tuple[RepairAttempt, ...] = ()
    wall_seconds: float = 0.0
    notes: tuple[str, ...] = field(default_factory=tuple)

    def summary(self) -> dict[str, object]:
        return {
            "status": self.status,
            "wall_seconds": round(self.wall_seconds, 3),
            "margin": self.margin,
            "days": [d.isoformat() for d in self.days],
            "free_slots": len(self.free_slots),
            "breaches": len(self.breaches),
            "diff": self.diff.to_dict(),
            "attempts": [a.to_dict() for a in self.attempts],
            "validation": self.report.summary(),
            "notes": list(self.notes),
        }


def _free_slots(
    data: ProgramData, breaches: Breaches, margin: int | None
) -> tuple[frozenset[str], tuple[date, ...]]:
    if margin is None:
        free = frozenset(s.id for s in data.slots)
    else:
        days = widen(breaches.days, margin)
        free = (
            frozenset(s.id for s in data.slots if local_date(s.start, data.tz) in days)
            | breaches.slots
        )
    starts = sorted({local_date(data.slot_by_id[s].start, data.tz) for s in free})
    return free, tuple(starts)


def repair(
    data: ProgramData,
    active: Sequence[Assignment],
    *,
    params: SolveParams,
    control: Control | None = None,
    window_days: int = 1,
) -> RepairResult:
    """Re-solve the days the program's current absences (and any other breach) broke in
    ``active``; everything else stays as it is. ``params.time_limit`` bounds the whole
    repair (all attempts). See the module docstring for the choice of days."""
    t0 = time.monotonic()
    params.check()
    if window_days < 0:
        raise InvalidInput(FieldError("window_days", "must be ≥ 0"))
    control = control or Control()
    deadline = t0 + params.time_limit
    candidates = candidate_slots(data)
    cset = frozenset((p, s) for p, slots in candidates.items() for s in slots)
    active_pairs = frozenset((a.person_id, a.slot_id) for a in active)
    breaches = find_breaches(data, active_pairs, cset)

    def finish(
        status: Literal["unchanged", "repaired", "partial"],
        pairs: Iterable[Pair],
        result: SolveResult | None,
        free: frozenset[str],
        days: tuple[date, ...],
        margin: int | None,
        attempts: Sequence[RepairAttempt],
        notes: Sequence[str] = (),
    ) -> RepairResult:
        assignments = merge_assignments(active, pairs)
        report = validate(data, assignments, previous=active_pairs, candidates=candidates)
        if status == "repaired" and report.violations:
            status = "partial"
        if result is not None:
            result = replace(result, assignments=assignments, report=report)
        return RepairResult(
            status=status,
            assignments=assignments,
            report=report,
            diff=schedule_diff(active_pairs, [(a.person_id, a.slot_id) for a in assignments]),
            result=result,
            days=days,
            free_slots=free,
            margin=margin,
            breaches=breaches.violations,
            attempts=tuple(attempts),
            wall_seconds=time.monotonic() - t0,
            notes=tuple(notes),
        )

    if breaches.empty:
        return finish("unchanged", active_pairs, None, frozenset(), (), None, ())

    first = max(window_days, minimum_margin(data))
    margins: list[int | None] = []
    for m in (first, 4 * first, None):
        free, _ = _free_slots(data, breaches, m)
        margins.append(m if len(free) < len(data.slots) else None)
        if margins[-1] is None:
            break
    hint = control.hint or (active_pairs & cset)
    ctl = replace(control, hint=hint)
    attempts: list[RepairAttempt] = []
    notes: list[str] = []
    for margin in margins:
        left = deadline - time.monotonic()
        if left <= 0 or control.should_abort():
            notes.append("stopped (time limit or abort) before a schedule was found")
            break
        free, days = _free_slots(data, breaches, margin)
        spec, outside = restricted_model(
            data, candidates, active_pairs, free, previous=active_pairs
        )
        ta = time.monotonic()
        res = solve_spec(spec, replace(params, time_limit=left), ctl)
        attempts.append(
            RepairAttempt(
                margin=margin,
                relaxed=False,
                free_slots=len(free),
                status=res.status,
                seconds=time.monotonic() - ta,
            )
        )
        if res.has_schedule:
            pairs = {(a.person_id, a.slot_id) for a in res.assignments} | outside
            note = f"re-solved {len(free)} of {len(data.slots)} slots ({len(days)} days)"
            res = replace(res, notes=(*res.notes, note))
            return finish("repaired", pairs, res, free, days, margin, attempts, notes)
        if res.status is not SolveStatus.INFEASIBLE:
            notes.append(f"no schedule within the time limit at margin {margin}")
            break

    # No schedule meets every hard rule: the least-bad one over the first window.
    free, days = _free_slots(data, breaches, margins[0])
    left = deadline - time.monotonic()
    if left > 0 and not control.should_abort():
        spec, outside = restricted_model(
            data, candidates, active_pairs, free, previous=active_pairs, relax=True
        )
        ta = time.monotonic()
        res = solve_spec(spec, replace(params, time_limit=left), ctl)
        attempts.append(
            RepairAttempt(
                margin=margins[0],
                relaxed=True,
                free_slots=len(free),
                status=res.status,
                seconds=time.monotonic() - ta,
            )
        )
        if res.has_schedule:
            pairs = {(a.person_id, a.slot_id) for a in res.assignments} | outside
            notes.append("no schedule meets every hard rule; staffing minima were relaxed")
            return finish("partial", pairs, res, free, days, margins[0], attempts, notes)
    notes.append("no schedule found; the active schedule without its broken pairs is returned")
    kept = active_pairs - breaches.dropped
    return finish("partial", kept, None, free, days, margins[0], attempts, notes)
