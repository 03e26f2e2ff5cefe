"""Per-slot staffing: SUPERVISION_RATIO and COVERAGE (min/max, PGY mix, faculty cap)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import ClassVar

from rsched.domain import Person, PersonKind, Severity, Slot
from rsched.rules.base import CheckContext, Linear, ModelContext, Var, Violation, X


def ratio_for(slot: Slot, pgy: int | None) -> int | None:
    """The local supervision ratio for a resident of level ``pgy`` (key 0: every other level)."""
    if pgy is not None and pgy in slot.supervision:
        return slot.supervision[pgy]
    return slot.supervision.get(0)


def faculty_needed(slot: Slot, residents: Sequence[Person]) -> int:
    """ceil(Σ residents_of_level ÷ ratio_of_level): one faculty supervises ``ratio`` residents
    of a level, and mixed levels share a faculty's capacity proportionally."""
    ratios = [r for p in residents if (r := ratio_for(slot, p.pgy)) is not None]
    if not ratios:
        return 0
    lcm = math.lcm(*ratios)
    return math.ceil(sum(lcm // r for r in ratios) / lcm)


def staff_of(slot: Slot, people: Iterable[Person]) -> list[Person]:
    return [p for p in people if p.kind is slot.staff_kind]


class SupervisionRatio:
    code: ClassVar[str] = "SUPERVISION_RATIO"
    label: ClassVar[str] = "Faculty on duty for the residents of each level (local ratios)"
    severity: ClassVar[Severity] = Severity.VIOLATION
    citation: ClassVar[str] = "ACGME CPR VI.A.2 (ratios are local policy)"

    def check(self, ctx: CheckContext) -> list[Violation]:
        out: list[Violation] = []
        for slot in ctx.data.slots:
            if not slot.supervision or slot.staff_kind is not PersonKind.RESIDENT:
                continue
            people = ctx.people_on.get(slot.id, [])
            residents = [p for p in people if p.is_resident]
            need = faculty_needed(slot, residents)
            have = sum(1 for p in people if not p.is_resident)
            if have < need:
                out.append(
                    Violation(
                        rule=self.code,
                        severity=self.severity,
                        slot=slot.id,
                        start=slot.start,
                        end=slot.end,
                        value=float(have),
                        limit=float(need),
                        message=(
                            f"slot {slot.id} has {len(residents)} resident(s) and {have} "
                            f"faculty; local policy needs {need}"
                        ),
                    )
                )
        return out

    def constraints(self, mctx: ModelContext) -> Iterable[Linear]:
        people = mctx.data.person_by_id
        for slot in mctx.data.slots:
            if not slot.supervision or slot.staff_kind is not PersonKind.RESIDENT:
                continue
            cands = mctx.candidates_of_slot.get(slot.id, [])
            ratios: dict[str, int] = {}
            for p in cands:
                r = ratio_for(slot, people[p].pgy) if people[p].is_resident else None
                if r is not None:
                    ratios[p] = r
            if not ratios:
                continue
            lcm = math.lcm(*ratios.values())
            terms: list[tuple[Var, int]] = [
                (X(p, slot.id), lcm) for p in cands if not people[p].is_resident
            ]
            terms += [(X(p, slot.id), -(lcm // r)) for p, r in ratios.items()]
            yield Linear(
                rule=self.code,
                name=f"{self.code} {slot.id}",
                terms=tuple(terms),
                lb=0,
                slot=slot.id,
            )


class Coverage:
    code: ClassVar[str] = "COVERAGE"
    label: ClassVar[str] = "Every slot staffed within its minimum and maximum"
    severity: ClassVar[Severity] = Severity.VIOLATION
    citation: ClassVar[str] = "program staffing requirement"

    def check(self, ctx: CheckContext) -> list[Violation]:
        out: list[Violation] = []
        for slot in ctx.data.slots:
            people = ctx.people_on.get(slot.id, [])
            n = len(staff_of(slot, people))

            def add(sev: Severity, value: int, limit: int, msg: str, s: Slot = slot) -> None:
                out.append(
                    Violation(
                        rule=self.code,
                        severity=sev,
                        slot=s.id,
                        start=s.start,
                        end=s.end,
                        value=float(value),
                        limit=float(limit),
                        message=msg,
                    )
                )

            if n < slot.min_staff:
                add(
                    Severity.VIOLATION,
                    n,
                    slot.min_staff,
                    f"slot {slot.id} has {n} {slot.staff_kind}(s); needs at least {slot.min_staff}",
                )
            elif n > slot.max_staff:
                add(
                    Severity.WARNING,
                    n,
                    slot.max_staff,
                    f"slot {slot.id} has {n} {slot.staff_kind}(s); at most {slot.max_staff}",
                )
            for level, need in sorted(slot.pgy_min.items()):
                have = sum(1 for p in people if p.is_resident and (p.pgy or 0) >= level)
                if have < need:
                    add(
                        Severity.VIOLATION,
                        have,
                        need,
                        f"slot {slot.id} has {have} resident(s) of PGY-{level}+; needs {need}",
                    )
            if slot.staff_kind is PersonKind.RESIDENT and slot.supervision:
                fac = sum(1 for p in people if not p.is_resident)
                if fac > slot.faculty_max:
                    add(
                        Severity.WARNING,
                        fac,
                        slot.faculty_max,
                        f"slot {slot.id} has {fac} faculty; at most {slot.faculty_max}",
                    )
        return out

    def constraints(self, mctx: ModelContext) -> Iterable[Linear]:
        people = mctx.data.person_by_id
        for slot in mctx.data.slots:
            cands = mctx.candidates_of_slot.get(slot.id, [])
            staff = [p for p in cands if people[p].kind is slot.staff_kind]
            yield Linear(
                rule=self.code,
                name=f"{self.code} {slot.id}",
                terms=tuple((X(p, slot.id), 1) for p in staff),
                lb=slot.min_staff,
                ub=slot.max_staff,
                slot=slot.id,
            )
            for level, need in sorted(slot.pgy_min.items()):
                seniors = [
                    p for p in cands if people[p].is_resident and (people[p].pgy or 0) >= level
                ]
                yield Linear(
                    rule=self.code,
                    name=f"{self.code} {slot.id} PGY-{level}+",
                    terms=tuple((X(p, slot.id), 1) for p in seniors),
                    lb=need,
                    slot=slot.id,
                )
            if slot.staff_kind is PersonKind.RESIDENT:
                faculty = [p for p in cands if not people[p].is_resident]
                if faculty:
                    yield Linear(
                        rule=self.code,
                        name=f"{self.code} {slot.id} faculty cap",
                        terms=tuple((X(p, slot.id), 1) for p in faculty),
                        ub=slot.faculty_max,
                        slot=slot.id,
                    )


def staffed_positions(slot: Slot, people: Sequence[Person]) -> int:
    """Positions of ``slot`` counted for the coverage figure (capped at the minimum)."""
    return min(len(staff_of(slot, people)), slot.min_staff)
