"""Swaps after publishing: who could take an assignment, or trade one for it.

Two kinds of change around one assignment ``(person, slot)``:

* **give-away**: another person ``taker`` takes ``slot`` in ``person``'s place;
* **trade**: ``taker`` takes ``slot`` and gives ``person`` one of their own assignments
  (``taker_slot``) in exchange.

A change is checked by re-validating only what it touches, with the rule engine's own
``check`` functions (nothing here restates a rule): every person rule looks only at
one person's assignments and every staffing rule only at one slot's staff, so the
hard rules run on a schedule made of the two people's complete (changed) schedules
and the complete staff of the changed slots give exactly the verdicts of a full
validation for those people and slots; the other people and slots did not change.

A change is refused when it adds a hard violation, or makes one already there worse
(further from its limit). Violations that were already there and stay as they are (or
lessen) do not block it, so a person on sick leave can still hand over the shifts of
that leave one by one. A swap that would put anyone over CONTINUOUS_24_4 or CALL_Q3
(or any other hard rule) is therefore never offered and ``check_swap`` names it.

Candidates are ranked by fairness impact: the weighted change of the named spread
terms (nights, weekends, in-house calls among PGY peers, ``rules.soft``), then how the
two people's loads (hours over the horizon) move: the change of the sum of their
squared loads, negative when work flows from the busier to the less busy person.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Literal

from rsched.domain import Assignment, FieldError, InvalidInput, ProgramData, Severity
from rsched.rules.access import candidate_slots
from rsched.rules.base import CheckContext, Violation
from rsched.rules.registry import HARD_RULES
from rsched.rules.soft import CATEGORIES, SPREAD_TERM, cohorts
from rsched.rules.timeline import counted_minutes

Pair = tuple[str, str]
"""(person id, slot id)."""

_Key = tuple[str, str | None, str | None, datetime | None, datetime | None]


@dataclass(frozen=True, slots=True, kw_only=True)
class SwapChange:
    """``taker`` takes ``(person, slot)``; in a trade ``person`` takes ``(taker, taker_slot)``."""

    person_id: str
    slot_id: str
    taker_id: str
    taker_slot_id: str | None = None

    @property
    def kind(self) -> Literal["give", "trade"]:
        return "give" if self.taker_slot_id is None else "trade"

    @property
    def removed(self) -> tuple[Pair, ...]:
        out: tuple[Pair, ...] = ((self.person_id, self.slot_id),)
        if self.taker_slot_id is not None:
            out += ((self.taker_id, self.taker_slot_id),)
        return out

    @property
    def added(self) -> tuple[Pair, ...]:
        out: tuple[Pair, ...] = ((self.taker_id, self.slot_id),)
        if self.taker_slot_id is not None:
            out += ((self.person_id, self.taker_slot_id),)
        return out

    def to_dict(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "person": self.person_id,
            "slot": self.slot_id,
            "taker": self.taker_id,
            "taker_slot": self.taker_slot_id,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class SwapCandidate:
    change: SwapChange
    spread_delta: dict[str, int] = field(default_factory=dict)
    """Named spread term → its change (summed over the PGY cohorts it concerns)."""
    fairness_cost: int = 0
    """Σ weight × spread change: negative when the swap evens the spreads out."""
    load_delta_hours: dict[str, float] = field(default_factory=dict)
    """Person → change of their hours over the horizon."""
    load_balance: float = 0.0
    """Change of Σ hours² of the two people (negative: load moves to the less busy)."""

    @property
    def rank(self) -> tuple[int, float, int, str, str]:
        c = self.change
        return (
            self.fairness_cost,
            round(self.load_balance, 6),
            0 if c.kind == "give" else 1,
            c.taker_id,
            c.taker_slot_id or "",
        )

    def to_dict(self) -> dict[str, object]:
        return {
            **self.change.to_dict(),
            "spread_delta": dict(sorted(self.spread_delta.items())),
            "fairness_cost": self.fairness_cost,
            "load_delta_hours": dict(sorted(self.load_delta_hours.items())),
            "load_balance": round(self.load_balance, 3),
        }


def _key(v: Violation) -> _Key:
    return (v.rule, v.person, v.slot, v.start, v.end)


def _distance(v: Violation) -> float | None:
    if v.value is None or v.limit is None:
        return None
    return abs(v.value - v.limit)


def new_against(before: Iterable[Violation], after: Iterable[Violation]) -> list[Violation]:
    """The violations of ``after`` that ``before`` did not have, or had nearer their limit
    (same rule, person, slot and window, but a value further from the limit)."""
    known: dict[_Key, list[Violation]] = defaultdict(list)
    for v in before:
        known[_key(v)].append(v)
    fresh: list[Violation] = []
    for v in after:
        olds = known.get(_key(v), [])
        if v in olds:
            continue
        d = _distance(v)
        if d is not None and any((od := _distance(o)) is not None and d <= od for o in olds):
            continue
        fresh.append(v)
    return fresh


class ScheduleChecker:
    """A schedule indexed so that local changes are checked by the rule engine alone.

    Holds the hard violations of the current schedule by person (person rules) and by
    slot (staffing rules); ``new_violations`` checks a change against them, ``apply``
    makes it, ``clone`` gives an independent copy (no re-validation)."""

    def __init__(
        self,
        data: ProgramData,
        pairs: Iterable[Pair],
        *,
        candidates: dict[str, list[str]] | None = None,
    ) -> None:
        self.data = data
        self.candidates = candidates if candidates is not None else candidate_slots(data)
        self.candidate_set: frozenset[Pair] = frozenset(
            (p, s) for p, slots in self.candidates.items() for s in slots
        )
        self.by_person: dict[str, set[str]] = defaultdict(set)
        self.by_slot: dict[str, set[str]] = defaultdict(set)
        for p, s in pairs:
            self.by_person[p].add(s)
            self.by_slot[s].add(p)
        self.person_order = {p.id: i for i, p in enumerate(data.people)}
        self.slot_order = {s.id: i for i, s in enumerate(data.slots)}
        self.person_violations: dict[str, list[Violation]] = defaultdict(list)
        self.slot_violations: dict[str, list[Violation]] = defaultdict(list)
        ctx = CheckContext(data, self._assignments(self.pairs()))
        for rule in HARD_RULES:
            for v in rule.check(ctx):
                self._index(v)

    def _index(self, v: Violation) -> None:
        if v.severity is not Severity.VIOLATION:
            return
        if v.person is not None:
            self.person_violations[v.person].append(v)
        elif v.slot is not None:
            self.slot_violations[v.slot].append(v)

    @staticmethod
    def _assignments(pairs: Iterable[Pair]) -> list[Assignment]:
        return [Assignment(person_id=p, slot_id=s) for p, s in pairs]

    def clone(self) -> ScheduleChecker:
        other = object.__new__(ScheduleChecker)
        other.data = self.data
        other.candidates = self.candidates
        other.candidate_set = self.candidate_set
        other.person_order = self.person_order
        other.slot_order = self.slot_order
        other.by_person = defaultdict(set, {p: set(v) for p, v in self.by_person.items()})
        other.by_slot = defaultdict(set, {s: set(v) for s, v in self.by_slot.items()})
        other.person_violations = defaultdict(
            list, {p: list(v) for p, v in self.person_violations.items()}
        )
        other.slot_violations = defaultdict(
            list, {s: list(v) for s, v in self.slot_violations.items()}
        )
        return other

    def pairs(self) -> set[Pair]:
        return {(p, s) for p, slots in self.by_person.items() for s in slots}

    def holds(self, person: str, slot: str) -> bool:
        return slot in self.by_person.get(person, ())

    def _scope(
        self, removed: Sequence[Pair], added: Sequence[Pair]
    ) -> tuple[set[str], set[str], set[Pair]]:
        people = {p for p, _ in (*removed, *added)}
        slots = {s for _, s in (*removed, *added)}
        gone, new = set(removed), set(added)
        scope: set[Pair] = set()
        for p in people:
            scope.update((p, s) for s in self.by_person.get(p, ()))
        for s in slots:
            scope.update((p, s) for p in self.by_slot.get(s, ()))
        return people, slots, (scope - gone) | new

    def _view(self, people: set[str], slots: set[str], scope: set[Pair]) -> ProgramData:
        """The program narrowed to the changed people and slots and the pairs of
        ``scope``: the rules then spend no time on what a change cannot affect."""
        data = self.data
        who = sorted(people | {p for p, _ in scope}, key=self.person_order.__getitem__)
        where = sorted(slots | {s for _, s in scope}, key=self.slot_order.__getitem__)
        view = replace(
            data,
            people=tuple(data.person_by_id[p] for p in who),
            slots=tuple(data.slot_by_id[s] for s in where),
        )
        view.__dict__["tz"] = data.tz  # same zone; its lookup costs milliseconds
        return view

    def violations_after(self, removed: Sequence[Pair], added: Sequence[Pair]) -> list[Violation]:
        """Hard violations of the changed people and slots once the change is made."""
        people, slots, scope = self._scope(removed, added)
        ctx = CheckContext(self._view(people, slots, scope), self._assignments(scope))
        out: list[Violation] = []
        for rule in HARD_RULES:
            for v in rule.check(ctx):
                if v.severity is not Severity.VIOLATION:
                    continue
                if v.person in people or (v.person is None and v.slot in slots):
                    out.append(v)
        return out

    def new_violations(
        self, removed: Sequence[Pair], added: Sequence[Pair]
    ) -> tuple[list[Violation], list[Violation]]:
        """(violations the change adds or worsens, every violation of its scope after it)."""
        after = self.violations_after(removed, added)
        people = {p for p, _ in (*removed, *added)}
        slots = {s for _, s in (*removed, *added)}
        before = [v for p in people for v in self.person_violations.get(p, ())]
        before += [v for s in slots for v in self.slot_violations.get(s, ())]
        return new_against(before, after), after

    def apply(
        self,
        removed: Sequence[Pair],
        added: Sequence[Pair],
        after: Sequence[Violation] | None = None,
    ) -> None:
        """Make the change; ``after`` (from ``new_violations``) saves re-checking it."""
        if after is None:
            after = self.violations_after(removed, added)
        for p, s in removed:
            self.by_person[p].discard(s)
            self.by_slot[s].discard(p)
        for p, s in added:
            self.by_person[p].add(s)
            self.by_slot[s].add(p)
        for p in {p for p, _ in (*removed, *added)}:
            self.person_violations[p] = []
        for s in {s for _, s in (*removed, *added)}:
            self.slot_violations[s] = []
        for v in after:
            self._index(v)


class FairnessIndex:
    """Per-person counts of the spread categories and hours, for ranking changes."""

    def __init__(
        self, data: ProgramData, pairs: Iterable[Pair], candidates: dict[str, list[str]]
    ) -> None:
        self.data = data
        weights = data.program.settings.weights
        self.weight = {term: int(getattr(weights, term)) for term in SPREAD_TERM.values()}
        self.cohort_of: dict[tuple[str, str], int] = {}
        self.members: dict[tuple[str, int], list[str]] = {}
        for category in CATEGORIES:
            if self.weight[SPREAD_TERM[category]] <= 0:
                continue
            for level, ids in cohorts(data, candidates, category).items():
                self.members[(category, level)] = ids
                for p in ids:
                    self.cohort_of[(category, p)] = level
        self.counts: dict[tuple[str, str], int] = defaultdict(int)
        self.minutes: dict[str, int] = defaultdict(int)
        lo, hi = data.horizon_instants
        self._lo, self._hi = lo, hi
        for p, s in pairs:
            self._add(p, s, 1)

    def _slot_minutes(self, slot_id: str) -> int:
        return counted_minutes(self.data.slot_by_id[slot_id], self._lo, self._hi)

    def _categories(self, slot_id: str) -> list[str]:
        slot = self.data.slot_by_id[slot_id]
        return [c for c, test in CATEGORIES.items() if test(self.data, slot)]

    def _add(self, person: str, slot_id: str, sign: int) -> None:
        for c in self._categories(slot_id):
            self.counts[(c, person)] += sign
        self.minutes[person] += sign * self._slot_minutes(slot_id)

    def apply(self, removed: Sequence[Pair], added: Sequence[Pair]) -> None:
        for p, s in removed:
            self._add(p, s, -1)
        for p, s in added:
            self._add(p, s, 1)

    def clone(self) -> FairnessIndex:
        other = object.__new__(FairnessIndex)
        other.data = self.data
        other.weight = self.weight
        other.cohort_of = self.cohort_of
        other.members = self.members
        other.counts = defaultdict(int, self.counts)
        other.minutes = defaultdict(int, self.minutes)
        other._lo, other._hi = self._lo, self._hi
        return other

    def impact(
        self, removed: Sequence[Pair], added: Sequence[Pair]
    ) -> tuple[dict[str, int], int, dict[str, float], float]:
        """(spread change by term, weighted cost, hours change by person, Δ Σ hours²)."""
        delta: dict[tuple[str, str], int] = defaultdict(int)
        minutes: dict[str, int] = defaultdict(int)
        for pairs, sign in ((removed, -1), (added, 1)):
            for p, s in pairs:
                for c in self._categories(s):
                    delta[(c, p)] += sign
                minutes[p] += sign * self._slot_minutes(s)
        spread: dict[str, int] = {}
        touched = {
            (c, self.cohort_of[(c, p)]) for (c, p), d in delta.items() if (c, p) in self.cohort_of
        }
        for c, level in sorted(touched):
            ids = self.members[(c, level)]
            old = [self.counts[(c, p)] for p in ids]
            new = [self.counts[(c, p)] + delta.get((c, p), 0) for p in ids]
            change = (max(new) - min(new)) - (max(old) - min(old))
            if change:
                term = SPREAD_TERM[c]
                spread[term] = spread.get(term, 0) + change
        cost = sum(self.weight[t] * d for t, d in spread.items())
        hours = {p: m / 60 for p, m in minutes.items() if m}
        balance = sum(
            ((self.minutes[p] + m) / 60) ** 2 - (self.minutes[p] / 60) ** 2
            for p, m in minutes.items()
        )
        return spread, cost, hours, balance


def rank_change(fair: FairnessIndex, change: SwapChange) -> SwapCandidate:
    spread, cost, hours, balance = fair.impact(change.removed, change.added)
    return SwapCandidate(
        change=change,
        spread_delta=spread,
        fairness_cost=cost,
        load_delta_hours=hours,
        load_balance=balance,
    )


def possible_changes(checker: ScheduleChecker, person_id: str, slot_id: str) -> list[SwapChange]:
    """Every give-away and trade around ``(person, slot)`` among candidate pairs (eligible
    and available, ``candidate_slots``): the others are refused by the rules anyway."""
    cands = checker.candidate_set
    people = checker.data.person_by_id
    kind = people[person_id].kind
    out: list[SwapChange] = []
    mine = checker.by_person.get(person_id, set())
    for q in sorted(checker.candidates):
        if q == person_id or people[q].kind is not kind:
            continue
        if (q, slot_id) not in cands or checker.holds(q, slot_id):
            continue
        out.append(SwapChange(person_id=person_id, slot_id=slot_id, taker_id=q))
        for t in sorted(checker.by_person.get(q, ())):
            if t != slot_id and t not in mine and (person_id, t) in cands:
                out.append(
                    SwapChange(person_id=person_id, slot_id=slot_id, taker_id=q, taker_slot_id=t)
                )
    return out


def _require_change(checker: ScheduleChecker, change: SwapChange) -> None:
    data = checker.data
    errors: list[FieldError] = []
    for name, pid in (("person_id", change.person_id), ("taker_id", change.taker_id)):
        if pid not in data.person_by_id:
            errors.append(FieldError(name, f"unknown person {pid!r}"))
    for name, sid in (("slot_id", change.slot_id), ("taker_slot_id", change.taker_slot_id)):
        if sid is not None and sid not in data.slot_by_id:
            errors.append(FieldError(name, f"unknown slot {sid!r}"))
    if errors:
        raise InvalidInput(errors)
    if change.taker_id == change.person_id:
        errors.append(FieldError("taker_id", "must be someone else"))
    if not checker.holds(change.person_id, change.slot_id):
        errors.append(
            FieldError("slot_id", f"{change.person_id} is not assigned to {change.slot_id}")
        )
    if checker.holds(change.taker_id, change.slot_id):
        errors.append(FieldError("taker_id", f"{change.taker_id} is already on {change.slot_id}"))
    t = change.taker_slot_id
    if t is not None:
        if not checker.holds(change.taker_id, t):
            errors.append(FieldError("taker_slot_id", f"{change.taker_id} is not on {t}"))
        if checker.holds(change.person_id, t) or t == change.slot_id:
            errors.append(FieldError("taker_slot_id", f"{change.person_id} is already on {t}"))
    if errors:
        raise InvalidInput(errors)


def _pairs(assignments: Iterable[Assignment]) -> list[Pair]:
    return [(a.person_id, a.slot_id) for a in assignments]


def swap_candidates(
    data: ProgramData,
    assignments: Sequence[Assignment],
    *,
    person_id: str,
    slot_id: str,
) -> list[SwapCandidate]:
    """Every give-away and trade of ``(person_id, slot_id)`` that adds no hard violation
    (nor worsens one), best for fairness first."""
    checker = ScheduleChecker(data, _pairs(assignments))
    if person_id not in data.person_by_id:
        raise InvalidInput(FieldError("person_id", f"unknown person {person_id!r}"))
    if not checker.holds(person_id, slot_id):
        raise InvalidInput(FieldError("slot_id", f"{person_id} is not assigned to {slot_id}"))
    fair = FairnessIndex(data, checker.pairs(), checker.candidates)
    return offered(checker, fair, person_id, slot_id)


def offered(
    checker: ScheduleChecker, fair: FairnessIndex, person_id: str, slot_id: str
) -> list[SwapCandidate]:
    """The changes of ``possible_changes`` that pass ``new_violations``, ranked."""
    out: list[SwapCandidate] = []
    for change in possible_changes(checker, person_id, slot_id):
        fresh, _ = checker.new_violations(change.removed, change.added)
        if not fresh:
            out.append(rank_change(fair, change))
    out.sort(key=lambda c: c.rank)
    return out


def check_swap(
    data: ProgramData, assignments: Sequence[Assignment], change: SwapChange
) -> list[Violation]:
    """The hard violations a forced swap would add or worsen (empty: it may be made).
    Raises ``InvalidInput`` when the change does not fit the schedule."""
    checker = ScheduleChecker(data, _pairs(assignments))
    _require_change(checker, change)
    fresh, _ = checker.new_violations(change.removed, change.added)
    return fresh
