"""ProgramData: everything the rules and the solvers need about one program and horizon."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from functools import cached_property
from zoneinfo import ZoneInfo

from rsched.domain.calendar import Period, local_midnight, zone
from rsched.domain.model import (
    Absence,
    Person,
    Program,
    Request,
    Rotation,
    RotationAssignment,
    ShiftType,
    Slot,
)


@dataclass(frozen=True, kw_only=True, eq=False)
class ProgramData:
    """Compared and hashed by identity, so derived indexes can be cached per instance."""

    program: Program
    start: date
    end: date
    """Inclusive horizon."""
    periods: tuple[Period, ...]
    people: tuple[Person, ...]
    slots: tuple[Slot, ...]
    shift_types: tuple[ShiftType, ...] = ()
    """May be empty when loaded from an interchange file alone (eligibility is then unchecked)."""
    rotations: tuple[Rotation, ...] = ()
    rotation_assignments: tuple[RotationAssignment, ...] = ()
    blocks: tuple[Period, ...] = field(default_factory=tuple)
    """Numbered 1..n in order; rotation assignments refer to these numbers."""
    absences: tuple[Absence, ...] = ()
    requests: tuple[Request, ...] = ()

    @cached_property
    def tz(self) -> ZoneInfo:
        return zone(self.program.timezone)

    @cached_property
    def person_by_id(self) -> dict[str, Person]:
        return {p.id: p for p in self.people}

    @cached_property
    def slot_by_id(self) -> dict[str, Slot]:
        return {s.id: s for s in self.slots}

    @cached_property
    def shift_type_by_code(self) -> dict[str, ShiftType]:
        return {t.code: t for t in self.shift_types}

    @cached_property
    def rotation_by_id(self) -> dict[str, Rotation]:
        return {r.id: r for r in self.rotations}

    @cached_property
    def absences_by_person(self) -> dict[str, list[Absence]]:
        out: dict[str, list[Absence]] = defaultdict(list)
        for a in self.absences:
            out[a.person_id].append(a)
        for items in out.values():
            items.sort(key=lambda a: a.start)
        return dict(out)

    @cached_property
    def rotation_of(self) -> dict[tuple[str, int], str]:
        """(person, block number) → rotation id."""
        return {(r.person_id, r.block): r.rotation_id for r in self.rotation_assignments}

    @cached_property
    def horizon_instants(self) -> tuple[datetime, datetime]:
        return local_midnight(self.start, self.tz), local_midnight(
            self.end + timedelta(days=1), self.tz
        )

    def block_number_of(self, day: date) -> int | None:
        for n, block in enumerate(self.blocks, start=1):
            if block.start <= day <= block.end:
                return n
        return None

    def residents(self) -> list[Person]:
        return [p for p in self.people if p.is_resident and p.active]

    def with_slots(self, slots: Sequence[Slot]) -> ProgramData:
        return replace(self, slots=tuple(slots))
