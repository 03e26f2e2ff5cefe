"""Who may work a slot at all: AVAILABILITY, NO_OVERLAP, ELIGIBILITY.

These rules also decide the model's candidate pairs: a (person, slot) pair that is
ineligible or unavailable gets no variable, so the solver can never choose it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

from rsched.domain import Person, PersonKind, ProgramData, Severity, Slot
from rsched.domain.calendar import local_date
from rsched.rules.base import CheckContext, Linear, ModelContext, Violation, X
from rsched.rules.timeline import overlaps


def blocking_absence(data: ProgramData, person: str, slot: Slot) -> str | None:
    """Id of a blocking absence of ``person`` overlapping ``slot``, if any."""
    for a in data.absences_by_person.get(person, ()):
        if a.blocking and overlaps(a.start, a.end, slot.start, slot.end):
            return a.id
    return None


def ineligibility(data: ProgramData, person: Person, slot: Slot) -> str | None:
    """Why ``person`` may not work ``slot`` (None when eligible)."""
    if not person.active:
        return f"{person.id} is inactive"
    shift = data.shift_type_by_code.get(slot.shift)
    if person.kind is PersonKind.FACULTY:
        if slot.staff_kind is PersonKind.FACULTY:
            return None
        allowed = shift.faculty if shift is not None else bool(slot.supervision)
        if not allowed or slot.faculty_max <= 0:
            return f"faculty {person.id} cannot staff {slot.shift}"
        return None
    if slot.staff_kind is not PersonKind.RESIDENT:
        return f"{slot.shift} is staffed by faculty only"
    if shift is None:
        return None
    if person.pgy not in shift.eligible_pgy:
        return f"PGY-{person.pgy} is not eligible for {slot.shift}"
    missing = shift.required_tags - person.tags
    if missing:
        return f"{person.id} lacks {', '.join(sorted(missing))} for {slot.shift}"
    if data.rotation_assignments:
        owners = [r for r in data.rotations if slot.shift in r.shift_types]
        if owners:
            block = data.block_number_of(local_date(slot.start, data.tz))
            rotation = data.rotation_of.get((person.id, block)) if block is not None else None
            if rotation not in {r.id for r in owners}:
                where = f"on {rotation}" if rotation else "on no rotation"
                return f"{person.id} is {where} in block {block}; {slot.shift} belongs to " + (
                    ", ".join(r.id for r in owners)
                )
    return None


def candidate_slots(data: ProgramData) -> dict[str, list[str]]:
    """person → slots the person may be given (eligible and not blocked by an absence).

    Eligibility depends on the slot only through its shift, staffing kind and block,
    so it is decided once per such key and person rather than once per slot."""
    keyed: dict[tuple[str, PersonKind, int | None, bool, bool], list[Slot]] = {}
    for s in data.slots:
        block = data.block_number_of(local_date(s.start, data.tz)) if data.rotations else None
        key = (s.shift, s.staff_kind, block, bool(s.supervision), s.faculty_max > 0)
        keyed.setdefault(key, []).append(s)
    order = {s.id: i for i, s in enumerate(data.slots)}
    out: dict[str, list[str]] = {}
    for person in data.people:
        mine: list[str] = []
        for group in keyed.values():
            if ineligibility(data, person, group[0]) is not None:
                continue
            mine.extend(s.id for s in group if blocking_absence(data, person.id, s) is None)
        if mine:
            mine.sort(key=order.__getitem__)
            out[person.id] = mine
    return out


class Availability:
    code: ClassVar[str] = "AVAILABILITY"
    label: ClassVar[str] = "No assignment during a blocking absence"
    severity: ClassVar[Severity] = Severity.VIOLATION
    citation: ClassVar[str] = "leave policy"

    def check(self, ctx: CheckContext) -> list[Violation]:
        out: list[Violation] = []
        for person_id, slots in ctx.slots_of.items():
            for slot in slots:
                absence = blocking_absence(ctx.data, person_id, slot)
                if absence is not None:
                    out.append(
                        Violation(
                            rule=self.code,
                            severity=self.severity,
                            person=person_id,
                            slot=slot.id,
                            start=slot.start,
                            end=slot.end,
                            message=f"{person_id} is on leave ({absence}) during {slot.id}",
                        )
                    )
        return out

    def constraints(self, mctx: ModelContext) -> Iterable[Linear]:
        return ()  # enforced by leaving unavailable pairs out of the candidates


class Eligibility:
    code: ClassVar[str] = "ELIGIBILITY"
    label: ClassVar[str] = "PGY level, credentials and rotation allow the shift"
    severity: ClassVar[Severity] = Severity.VIOLATION
    citation: ClassVar[str] = "program eligibility policy"

    def check(self, ctx: CheckContext) -> list[Violation]:
        out: list[Violation] = []
        people = ctx.data.person_by_id
        for person_id, slots in ctx.slots_of.items():
            for slot in slots:
                why = ineligibility(ctx.data, people[person_id], slot)
                if why is not None:
                    out.append(
                        Violation(
                            rule=self.code,
                            severity=self.severity,
                            person=person_id,
                            slot=slot.id,
                            start=slot.start,
                            end=slot.end,
                            message=why,
                        )
                    )
        return out

    def constraints(self, mctx: ModelContext) -> Iterable[Linear]:
        return ()  # enforced by leaving ineligible pairs out of the candidates


class NoOverlap:
    code: ClassVar[str] = "NO_OVERLAP"
    label: ClassVar[str] = "Nobody on two overlapping slots"
    severity: ClassVar[Severity] = Severity.VIOLATION
    citation: ClassVar[str] = "basic feasibility"

    def check(self, ctx: CheckContext) -> list[Violation]:
        out: list[Violation] = []
        for person_id, slots in ctx.slots_of.items():
            latest: Slot | None = None
            for slot in slots:  # sorted by start
                if latest is not None and slot.start < latest.end:
                    out.append(
                        Violation(
                            rule=self.code,
                            severity=self.severity,
                            person=person_id,
                            slot=slot.id,
                            start=slot.start,
                            end=min(slot.end, latest.end),
                            message=f"{person_id} is on {latest.id} and {slot.id} at once",
                        )
                    )
                if latest is None or slot.end > latest.end:
                    latest = slot
        return out

    def constraints(self, mctx: ModelContext) -> Iterable[Linear]:
        data = mctx.data
        for person_id, slot_ids in mctx.candidates.items():
            mine = sorted((data.slot_by_id[s] for s in slot_ids), key=lambda s: s.start)
            active: list[Slot] = []
            for i, slot in enumerate(mine):
                active = [s for s in active if s.end > slot.start]
                active.append(slot)
                last_at_this_start = i + 1 == len(mine) or mine[i + 1].start != slot.start
                if len(active) > 1 and last_at_this_start:
                    yield Linear(
                        rule=self.code,
                        name=f"{self.code} {person_id} at {slot.start.isoformat()}",
                        terms=tuple((X(person_id, s.id), 1) for s in active),
                        ub=1,
                        person=person_id,
                    )
