"""Program file (YAML or JSON) → ``ProgramData``, or every error at once.

Two passes. The first validates the structure with the models of ``schema``; when it
fails, each section and each record is validated again on its own so that the
well-formed records still get the second pass. The second pass checks meaning:
references (``slots[12].shift: unknown shift type 'X'``), duplicate ids, the time zone,
the horizon, overlapping absences, blocks. A reference to a record that itself failed
the first pass is not reported a second time.

The errors of both passes are raised together as one ``InvalidInput`` of ``FieldError``s
whose paths read like the file (``people[3].pgy``). Nothing is half loaded: the result
is a complete ``ProgramData`` or the exception.

Block numbers (``rotation_assignments[].block``) count the blocks of the academic year
that contains the horizon's first day, 1..n, continuing into the next year if the
horizon does.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import BaseModel

from rsched.domain.calendar import Period, blocks_of_year, default_periods, local_midnight, zone
from rsched.domain.enums import PersonKind
from rsched.domain.errors import FieldError, InvalidInput
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
from rsched.domain.problem import ProgramData
from rsched.domain.settings import ObjectiveWeights, ProgramSettings, RuleSettings
from rsched.programfile.patterns import check_staffing, expand_slots
from rsched.programfile.reading import Format, Parts, file_order, first_pass, read_document
from rsched.programfile.schema import AbsenceSpec

__all__ = ["load_program", "parse_program"]


def load_program(source: str | os.PathLike[str], *, fmt: Format | None = None) -> ProgramData:
    """Load a program file (a path, or YAML/JSON text); every problem in one ``InvalidInput``."""
    document, name = read_document(source, fmt)
    return parse_program(document, source=name)


def parse_program(mapping: Any, *, source: str = "") -> ProgramData:
    """A parsed file (a mapping) → ``ProgramData``; every problem in one ``InvalidInput``."""
    if not isinstance(mapping, Mapping):
        raise InvalidInput(
            FieldError("", "a program file is a mapping (format, program, horizon, people, …)"),
            source=source,
        )
    parts, errors = first_pass(mapping)
    builder = _Builder(parts, errors)
    try:
        data = builder.build()
    except InvalidInput as exc:  # a domain record refused what the checks let through
        builder.errors.extend(exc.errors)
        data = None
    if builder.errors or data is None:
        errors = builder.errors or [FieldError("", "the file could not be loaded")]
        raise InvalidInput(sorted(errors, key=file_order), source=source)
    return data


# ------------------------------------------------------------ second pass


class _Builder:
    """Checks meaning and builds the domain records; collects every error."""

    def __init__(self, parts: Parts, errors: list[FieldError]) -> None:
        self.parts = parts
        self.errors = errors
        self.tz: ZoneInfo | None = None
        self.horizon: tuple[date, date] | None = None

    def error(self, path: str, message: str) -> None:
        self.errors.append(FieldError(path, message))

    def build(self) -> ProgramData | None:
        program = self._program()
        self._horizon()
        blocks = self._blocks()
        periods = self._periods()
        people = self._people()
        shift_types = self._shift_types()
        rotations = self._rotations(shift_types)
        assignments = self._rotation_assignments(people, rotations, blocks)
        slots = self._slots(shift_types)
        absences = self._absences(people)
        requests = self._requests(people, shift_types)
        if self.errors or program is None or self.horizon is None or slots is None:
            return None
        return ProgramData(
            program=program,
            start=self.horizon[0],
            end=self.horizon[1],
            periods=tuple(periods or ()),
            people=tuple(people.values()),
            slots=tuple(slots),
            shift_types=tuple(shift_types.values()),
            rotations=tuple(rotations.values()),
            rotation_assignments=tuple(assignments),
            blocks=tuple(blocks or ()),
            absences=tuple(absences),
            requests=tuple(requests),
        )

    def _items(self, section: str) -> list[tuple[int, Any]]:
        return self.parts.lists.get(section, [])

    def _unique(self, section: str, key: str, index: int, seen: dict[str, int]) -> bool:
        if key in seen:
            self.error(f"{section}[{index}].{'code' if section == 'shift_types' else 'id'}",
                       f"duplicate {key!r} (also {section}[{seen[key]}])")
            return False
        seen[key] = index
        return True

    def _program(self) -> Program | None:
        spec, settings = self.parts.program, self.parts.settings
        if spec is None:
            return None
        try:
            self.tz = zone(spec.timezone)
        except InvalidInput as exc:
            self.errors.extend(exc.errors)
        rules = RuleSettings(**_values(settings.rules)) if settings else RuleSettings()
        weights = ObjectiveWeights(**_values(settings.weights)) if settings else None
        return Program(
            id=spec.id,
            name=spec.name,
            timezone=spec.timezone,
            academic_year_start=spec.academic_year_start,
            block_length_days=spec.block_length_days,
            settings=ProgramSettings(rules=rules, weights=weights or ObjectiveWeights()),
        )

    def _horizon(self) -> None:
        spec = self.parts.horizon
        if spec is None:
            return
        if spec.end < spec.start:
            self.error("horizon.end", f"must not be before horizon.start ({spec.start})")
        else:
            self.horizon = (spec.start, spec.end)

    def _blocks(self) -> list[Period] | None:
        spec = self.parts.program
        if spec is None or self.horizon is None:
            return None
        start, end = self.horizon
        year = spec.academic_year_start
        while year > start:
            year = year.replace(year=year.year - 1)
        while year.replace(year=year.year + 1) <= start:
            year = year.replace(year=year.year + 1)
        blocks: list[Period] = []
        while year <= end:
            blocks.extend(blocks_of_year(year, spec.block_length_days))
            year = year.replace(year=year.year + 1)
        return blocks

    def _periods(self) -> list[Period] | None:
        if self.horizon is None or self.parts.program is None:
            return None
        start, end = self.horizon
        items = self._items("periods")
        if not items and not self.parts.broken.get("periods"):
            spec = self.parts.program
            return default_periods(start, end, spec.academic_year_start, spec.block_length_days)
        periods: list[Period] = []
        for i, p in items:
            if p.end < p.start:
                self.error(f"periods[{i}].end", "must not be before start")
            elif p.start < start or p.end > end:
                self.error(f"periods[{i}]", f"must lie inside the horizon {start}..{end}")
            elif periods and p.start <= periods[-1].end:
                self.error(f"periods[{i}].start", "must start after the previous period ends")
            else:
                periods.append(Period(start=p.start, end=p.end))
        return periods

    def _people(self) -> dict[str, Person]:
        people: dict[str, Person] = {}
        seen: dict[str, int] = {}
        for i, p in self._items("people"):
            if not self._unique("people", p.id, i, seen):
                continue
            if p.kind is PersonKind.RESIDENT and p.pgy is None:
                self.error(f"people[{i}].pgy", "required for a resident (1..7)")
                self.parts.mark("people", p.id)
            elif p.kind is PersonKind.FACULTY and p.pgy is not None:
                self.error(f"people[{i}].pgy", "must be empty for faculty")
                self.parts.mark("people", p.id)
            else:
                people[p.id] = Person(
                    id=p.id, name=p.name, kind=p.kind, pgy=p.pgy, tags=frozenset(p.tags),
                    active=p.active, military_status=p.military_status,
                    accommodation_notes=p.accommodation_notes,
                )
        return people

    def _shift_types(self) -> dict[str, ShiftType]:
        out: dict[str, ShiftType] = {}
        seen: dict[str, int] = {}
        for i, t in self._items("shift_types"):
            if not self._unique("shift_types", t.code, i, seen):
                continue
            if (t.duration_hours is None) == (t.duration_minutes is None):
                self.error(f"shift_types[{i}]", "needs one of duration_hours, duration_minutes")
                self.parts.mark("shift_types", t.code)
                continue
            minutes = t.duration_minutes
            if minutes is None:
                minutes = round(t.duration_hours * 60)
                if abs(minutes - t.duration_hours * 60) > 1e-6:
                    self.error(f"shift_types[{i}].duration_hours", "must be whole minutes")
                    self.parts.mark("shift_types", t.code)
                    continue
            out[t.code] = ShiftType(
                code=t.code, name=t.name, start=t.start, duration_minutes=minutes, kind=t.kind,
                counts_toward_hours=t.counts_toward_hours, eligible_pgy=frozenset(t.eligible_pgy),
                required_tags=frozenset(t.required_tags), faculty=t.faculty,
            )
        return out

    def _known_shift(self, code: str, path: str, shift_types: Mapping[str, ShiftType]) -> bool:
        if code in shift_types or self.parts.excused("shift_types", code):
            return code in shift_types
        self.error(path, f"unknown shift type {code!r}")
        return False

    def _known_person(self, pid: str, path: str, people: Mapping[str, Person]) -> Person | None:
        if pid not in people and not self.parts.excused("people", pid):
            self.error(path, f"unknown person {pid!r}")
        return people.get(pid)

    def _rotations(self, shift_types: Mapping[str, ShiftType]) -> dict[str, Rotation]:
        out: dict[str, Rotation] = {}
        seen: dict[str, int] = {}
        for i, r in self._items("rotations"):
            if not self._unique("rotations", r.id, i, seen):
                continue
            ok = r.min_residents <= r.max_residents
            if not ok:
                self.error(f"rotations[{i}].max_residents", "must be ≥ min_residents")
            for j, code in enumerate(r.shift_types):
                ok = self._known_shift(code, f"rotations[{i}].shift_types[{j}]", shift_types) and ok
            if not ok:
                self.parts.mark("rotations", r.id)
            else:
                out[r.id] = Rotation(
                    id=r.id, name=r.name, eligible_pgy=frozenset(r.eligible_pgy),
                    min_residents=r.min_residents, max_residents=r.max_residents,
                    shift_types=frozenset(r.shift_types),
                )
        return out

    def _rotation_assignments(
        self,
        people: Mapping[str, Person],
        rotations: Mapping[str, Rotation],
        blocks: list[Period] | None,
    ) -> list[RotationAssignment]:
        out: list[RotationAssignment] = []
        seen: dict[tuple[str, int], int] = {}
        for i, a in self._items("rotation_assignments"):
            path = f"rotation_assignments[{i}]"
            person = self._known_person(a.person, f"{path}.person", people)
            rotation = rotations.get(a.rotation)
            if rotation is None and not self.parts.excused("rotations", a.rotation):
                self.error(f"{path}.rotation", f"unknown rotation {a.rotation!r}")
            if blocks is not None and a.block > len(blocks):
                self.error(f"{path}.block", f"unknown block {a.block} (1..{len(blocks)})")
            elif (a.person, a.block) in seen:
                self.error(path, f"{a.person!r} already has block {a.block} at "
                           f"rotation_assignments[{seen[(a.person, a.block)]}]")
            seen.setdefault((a.person, a.block), i)
            if person is not None and not person.is_resident:
                self.error(f"{path}.person", f"{a.person!r} is faculty, not a resident")
            elif person is not None and rotation is not None:
                if person.pgy not in rotation.eligible_pgy:
                    self.error(f"{path}.rotation",
                               f"PGY-{person.pgy} {a.person!r} is not eligible for {a.rotation!r}")
            out.append(
                RotationAssignment(person_id=a.person, block=a.block, rotation_id=a.rotation)
            )
        return out

    def _slots(self, shift_types: Mapping[str, ShiftType]) -> list[Slot] | None:
        def excused(code: str) -> bool:
            return self.parts.excused("shift_types", code)

        ok: dict[str, list[tuple[int, Any]]] = {}
        for section in ("slot_patterns", "slots"):
            ok[section] = []
            for i, spec in self._items(section):
                found = check_staffing(spec, f"{section}[{i}]", shift_types, excused, self.horizon)
                self.errors.extend(found)
                if not found and spec.shift in shift_types:
                    ok[section].append((i, spec))
        if self.tz is None or self.horizon is None:
            return None
        try:
            patterns, slots = ok["slot_patterns"], ok["slots"]
            return expand_slots(patterns, slots, shift_types, self.tz, self.horizon)
        except InvalidInput as exc:
            self.errors.extend(exc.errors)
            return None

    def _absences(self, people: Mapping[str, Person]) -> list[Absence]:
        out: list[tuple[int, Absence]] = []
        seen: dict[str, int] = {}
        reserved = {a.id for _, a in self._items("absences") if a.id}
        for i, a in self._items("absences"):
            aid = a.id or _auto_id("absence", i, reserved)
            self._known_person(a.person, f"absences[{i}].person", people)
            if not self._unique("absences", aid, i, seen) or self.tz is None:
                continue
            start, end = self._instant(a, "start", self.tz), self._instant(a, "end", self.tz)
            if end <= start:
                self.error(f"absences[{i}].end", "must be after start")
                continue
            out.append((i, Absence(id=aid, person_id=a.person, start=start, end=end,
                                   leave_type=a.leave_type, blocking=a.blocking)))
        last: dict[str, tuple[int, Absence]] = {}
        for i, absence in sorted(out, key=lambda item: (item[1].person_id, item[1].start)):
            prev = last.get(absence.person_id)
            if prev is not None and absence.start < prev[1].end:
                self.error(f"absences[{i}].start", f"overlaps absences[{prev[0]}] (same person)")
            if prev is None or absence.end > prev[1].end:
                last[absence.person_id] = (i, absence)
        return [absence for _, absence in out]

    @staticmethod
    def _instant(spec: AbsenceSpec, key: str, tz: ZoneInfo) -> datetime:
        value = getattr(spec, key)
        if isinstance(value, datetime):
            return value
        return local_midnight(value + timedelta(days=1) if key == "end" else value, tz)

    def _requests(
        self, people: Mapping[str, Person], shift_types: Mapping[str, ShiftType]
    ) -> list[Request]:
        out: list[Request] = []
        seen: dict[str, int] = {}
        reserved = {r.id for _, r in self._items("requests") if r.id}
        for i, r in self._items("requests"):
            rid = r.id or _auto_id("request", i, reserved)
            ok = self._unique("requests", rid, i, seen)
            ok = self._known_person(r.person, f"requests[{i}].person", people) is not None and ok
            if r.shift is not None:
                ok = self._known_shift(r.shift, f"requests[{i}].shift", shift_types) and ok
            if self.horizon and not self.horizon[0] <= r.day <= self.horizon[1]:
                lo, hi = self.horizon
                self.error(f"requests[{i}].date", f"outside the horizon {lo}..{hi}")
            elif ok:
                out.append(Request(id=rid, person_id=r.person, day=r.day, wants=r.wants,
                                   weight=r.weight, shift=r.shift))
        return out


def _auto_id(prefix: str, index: int, reserved: set[str]) -> str:
    """``prefix-N`` for the N-th record, avoiding ids written in the file."""
    candidate, n = f"{prefix}-{index + 1}", 1
    while candidate in reserved:
        n += 1
        candidate = f"{prefix}-{index + 1}-{n}"
    return candidate


def _values(model: BaseModel) -> dict[str, Any]:
    return model.model_dump()
