"""What every rule shares: violations, the check context, and the model IR.

A rule is one object with a ``code``, a human ``label``, a ``severity`` and:

* ``check(ctx)``: the independent validator, on a concrete schedule;
* ``constraints(mctx)`` (hard rules): the same rule as linear constraints over 0/1
  assignment variables, a solver-neutral form that CP-SAT, HiGHS and the greedy
  solver all consume;
* ``penalties(mctx)`` (warning rules): soft terms the solver tries to avoid.

Both sides compute their windows, limits and durations with the same helpers from
this package, so a rule's meaning lives in one place.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import cached_property
from typing import ClassVar, Protocol

from rsched.domain import Assignment, Person, ProgramData, Severity, Slot
from rsched.domain.errors import FieldError, InvalidInput


@dataclass(frozen=True, slots=True, kw_only=True)
class Violation:
    """One breach of one rule, in the terms a coordinator reads."""

    rule: str
    severity: Severity
    message: str
    person: str | None = None
    slot: str | None = None
    start: datetime | None = None
    end: datetime | None = None
    value: float | None = None
    limit: float | None = None

    def to_dict(self) -> dict[str, object]:
        return {
            "rule": self.rule,
            "severity": str(self.severity),
            "person": self.person,
            "slot": self.slot,
            "start": self.start.isoformat() if self.start else None,
            "end": self.end.isoformat() if self.end else None,
            "value": self.value,
            "limit": self.limit,
            "message": self.message,
        }


class CheckContext:
    """A schedule to validate, indexed once for every rule."""

    def __init__(self, data: ProgramData, assignments: Iterable[Assignment]) -> None:
        self.data = data
        self.assignments: tuple[Assignment, ...] = tuple(sorted(set(assignments)))
        errors = [
            FieldError(f"assignments[{i}].slot", f"unknown slot {a.slot_id!r}")
            for i, a in enumerate(self.assignments)
            if a.slot_id not in data.slot_by_id
        ] + [
            FieldError(f"assignments[{i}].person", f"unknown person {a.person_id!r}")
            for i, a in enumerate(self.assignments)
            if a.person_id not in data.person_by_id
        ]
        if errors:
            raise InvalidInput(errors)

    @cached_property
    def slots_of(self) -> dict[str, list[Slot]]:
        """person → assigned slots sorted by start."""
        out: dict[str, list[Slot]] = defaultdict(list)
        slot_by_id = self.data.slot_by_id
        for a in self.assignments:
            out[a.person_id].append(slot_by_id[a.slot_id])
        for items in out.values():
            items.sort(key=lambda s: (s.start, s.end, s.id))
        return dict(out)

    @cached_property
    def people_on(self) -> dict[str, list[Person]]:
        """slot → assigned people."""
        out: dict[str, list[Person]] = defaultdict(list)
        person_by_id = self.data.person_by_id
        for a in self.assignments:
            out[a.slot_id].append(person_by_id[a.person_id])
        return dict(out)

    def assigned_residents(self) -> Iterator[tuple[Person, list[Slot]]]:
        for person in self.data.people:
            if person.is_resident:
                yield person, self.slots_of.get(person.id, [])


# ---------------------------------------------------------------- the model IR


@dataclass(frozen=True, slots=True, order=True)
class X:
    """The 0/1 variable 'person works slot'."""

    person: str
    slot: str


@dataclass(frozen=True, slots=True, order=True)
class Aux:
    """An auxiliary integer variable created by a rule (0/1 unless bounds say otherwise)."""

    name: str
    lb: int = 0
    ub: int = 1


Var = X | Aux
Terms = tuple[tuple[Var, int], ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Linear:
    """``lb ≤ Σ coef·var ≤ ub`` posted by rule ``rule``; ``name`` says it in words."""

    rule: str
    name: str
    terms: Terms
    lb: int | None = None
    ub: int | None = None
    person: str | None = None
    slot: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Penalty:
    """A named soft term: the solver minimises ``weight · Σ coef·var`` summed by ``name``."""

    name: str
    terms: Terms
    weight: int
    constant: int = 0
    """Part of the penalty no decision can change (e.g. churn forced by new leave)."""


@dataclass(kw_only=True)
class ModelContext:
    """The problem as the model builders see it: which (person, slot) pairs may be chosen."""

    data: ProgramData
    candidates: dict[str, list[str]] = field(default_factory=dict)
    """person → slot ids the person may work (eligible and available)."""
    fixed: frozenset[tuple[str, str]] = frozenset()
    """Pairs forced to 1 (repair: the unchanged part of the schedule)."""
    previous: frozenset[tuple[str, str]] = frozenset()
    """The active schedule to stay close to (churn), if any."""

    @cached_property
    def candidates_of_slot(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = defaultdict(list)
        for person, slots in self.candidates.items():
            for s in slots:
                out[s].append(person)
        return dict(out)

    @cached_property
    def candidate_set(self) -> frozenset[tuple[str, str]]:
        return frozenset((p, s) for p, slots in self.candidates.items() for s in slots)

    def x(self, person: str, slot: str) -> X | None:
        return X(person, slot) if (person, slot) in self.candidate_set else None


class Rule(Protocol):
    code: ClassVar[str]
    label: ClassVar[str]
    severity: ClassVar[Severity]
    citation: ClassVar[str]

    def check(self, ctx: CheckContext) -> list[Violation]: ...


class HardRule(Rule, Protocol):
    def constraints(self, mctx: ModelContext) -> Iterable[Linear]: ...


class SoftRule(Rule, Protocol):
    def penalties(self, mctx: ModelContext) -> tuple[list[Linear], list[Penalty]]: ...


def fmt_day(day: date) -> str:
    return day.isoformat()


def sum_terms(vars_: Sequence[Var], coef: int = 1) -> Terms:
    return tuple((v, coef) for v in vars_)
