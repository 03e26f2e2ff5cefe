"""The schedule grid as the pages show it: people × local days, each cell with its shifts
(colour per shift type, AM/PM/night/call label, times) and the breaches that concern it.

Rows and cells come from :func:`rsched.services.schedules.grid` (which also decides who
may read the version: coordinators any, faculty and residents the active ones). Breaches
come from a fresh validation of the version against the program as it is now (the same
rule engine as the publish gate) and are placed on cells as the stand-alone HTML export
places them (:mod:`rsched.interchange.html_grid`). Coordinators see every breach; faculty
and residents see the breaches of their own row only.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from rsched.db.mapping import load_program_data
from rsched.db.models import AssignmentRow
from rsched.domain import Assignment, AssignmentSource, ProgramData, Severity, ShiftKind, Slot
from rsched.interchange.html_grid import _cells as breach_cells
from rsched.rules.base import Violation
from rsched.rules.report import ValidationReport, validate
from rsched.services import schedules
from rsched.services.access import Actor, Role
from rsched.services.schemas import Grid

PALETTE_SIZE = 12
"""Shift colours: classes ``c0``..``c11`` of app.css (dark text on light fills)."""
MAX_PAGE_DAYS = 92


@dataclass(frozen=True, slots=True)
class CellShift:
    slot_id: str
    code: str
    css: str
    label: str
    """AM, PM, Eve, Night, Call or Home call: what the half-day grid calls it."""
    call: bool
    title: str


@dataclass(frozen=True, slots=True)
class Mark:
    rule: str
    severity: str
    value: str
    limit: str
    message: str
    window: str


@dataclass(slots=True)
class Cell:
    shifts: list[CellShift] = field(default_factory=list)
    marks: list[Mark] = field(default_factory=list)
    weekend: bool = False

    @property
    def level(self) -> str | None:
        if not self.marks:
            return None
        return "v" if any(m.severity == Severity.VIOLATION.value for m in self.marks) else "w"

    @property
    def rules(self) -> str:
        return ", ".join(sorted({m.rule for m in self.marks}))


@dataclass(slots=True)
class Row:
    person_id: str
    name: str
    who: str
    pgy: int | None
    rotations: str
    me: bool
    cells: list[Cell]


@dataclass(frozen=True, slots=True)
class LegendItem:
    code: str
    css: str
    name: str
    label: str
    kind: str


@dataclass(slots=True)
class GridView:
    program_name: str
    timezone: str
    version_id: str
    status: str
    days: list[date]
    rows: list[Row]
    legend: list[LegendItem]
    breaches: list[tuple[str, Mark]]
    """(person or slot, mark) for the list below the grid."""
    violations: int
    warnings: int
    by_rule: dict[str, int]
    shown_breaches: str
    """"all" for coordinators, "own" for faculty and residents."""
    coverage: float | None
    total_people: int


def half_day(slot: Slot, tz: object) -> str:
    if slot.kind is ShiftKind.IN_HOUSE_CALL:
        return "Call"
    if slot.kind is ShiftKind.HOME_CALL:
        return "Home call"
    if slot.kind is ShiftKind.NIGHT_FLOAT:
        return "Night"
    hour = slot.start.astimezone(tz).hour  # type: ignore[arg-type]
    return "AM" if hour < 12 else "PM" if hour < 17 else "Eve"


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:g}"


def _local(instant: datetime | None, data: ProgramData) -> str:
    return "" if instant is None else instant.astimezone(data.tz).strftime("%Y-%m-%d %H:%M")


def _mark(v: Violation, data: ProgramData) -> Mark:
    window = ""
    if v.start is not None and v.end is not None:
        window = f"{_local(v.start, data)} – {_local(v.end, data)}"
    return Mark(
        rule=v.rule,
        severity=str(v.severity),
        value=_num(v.value),
        limit=_num(v.limit),
        message=v.message,
        window=window,
    )


def version_assignments(session: Session, program_id: str, version_id: str) -> list[Assignment]:
    """The assignments of a version (the caller has already been authorised to read it)."""
    rows = session.execute(
        select(AssignmentRow.person_id, AssignmentRow.slot_id, AssignmentRow.source).where(
            AssignmentRow.program_id == program_id, AssignmentRow.version_id == version_id
        )
    )
    return [Assignment(person_id=p, slot_id=s, source=AssignmentSource(src)) for p, s, src in rows]


def colours(data: ProgramData) -> dict[str, str]:
    codes = sorted({t.code for t in data.shift_types} | {s.shift for s in data.slots})
    return {code: f"c{i % PALETTE_SIZE}" for i, code in enumerate(codes)}


def _rotations_in(data: ProgramData, start: date, end: date) -> dict[str, list[str]]:
    """Person → the rotation ids of the blocks overlapping start..end, in block order."""
    numbers = [i for i, b in enumerate(data.blocks, start=1) if b.start <= end and b.end >= start]
    out: dict[str, list[str]] = defaultdict(list)
    for (person, block), rotation in sorted(data.rotation_of.items(), key=lambda x: x[0][1]):
        if block in numbers and rotation not in out[person]:
            out[person].append(rotation)
    return out


def build(
    session: Session,
    *,
    actor: Actor,
    program_id: str,
    version_id: str,
    start: date,
    end: date,
    pgy: str = "",
    rotation: str = "",
    only_person: str | None = None,
) -> GridView:
    """The grid of one version over start..end, filtered by PGY (``"1"``.. or
    ``"faculty"``) and by rotation (residents on it in a block of the range)."""
    grid: Grid = schedules.grid(
        session, actor=actor, program_id=program_id, version_id=version_id, start=start, end=end
    )
    role = actor.role_in(program_id)
    me = actor.person_in(program_id)
    manages = role in (Role.ADMIN, Role.COORDINATOR)
    data = load_program_data(session, program_id)
    assignments = version_assignments(session, program_id, version_id)
    report: ValidationReport = validate(data, assignments)
    tz = data.tz
    css = colours(data)
    kinds = {t.code: t for t in data.shift_types}

    worked: dict[tuple[str, date], list[Slot]] = defaultdict(list)
    people_on: dict[str, list[str]] = defaultdict(list)
    for a in assignments:
        slot = data.slot_by_id.get(a.slot_id)
        if slot is not None:
            worked[a.person_id, slot.start.astimezone(tz).date()].append(slot)
            people_on[slot.id].append(a.person_id)

    column = {d: i for i, d in enumerate(grid.days)}
    marks: dict[tuple[str, date], list[Mark]] = defaultdict(list)
    listed: list[tuple[str, Mark]] = []
    by_rule: dict[str, int] = defaultdict(int)
    shown_v = shown_w = 0
    for v in (*report.violations, *report.warnings):
        if not manages and v.person != me:
            continue
        mark = _mark(v, data)
        listed.append((v.person or (f"slot {v.slot}" if v.slot else "program"), mark))
        by_rule[v.rule] += 1
        if v.severity is Severity.VIOLATION:
            shown_v += 1
        else:
            shown_w += 1
        for place in breach_cells(v, data, worked, people_on):
            if place[1] in column and (manages or place[0] == me):
                marks[place].append(mark)

    rotation_names = {r.id: r.name for r in data.rotations}
    rotations = _rotations_in(data, grid.days[0], grid.days[-1]) if grid.days else {}
    rows: list[Row] = []
    for r in grid.rows:
        if only_person is not None and r.person_id != only_person:
            continue
        if pgy == "faculty" and r.kind != "faculty":
            continue
        if pgy.isdigit() and r.pgy != int(pgy):
            continue
        if rotation and rotation not in rotations.get(r.person_id, []):
            continue
        cells: list[Cell] = []
        for day in grid.days:
            cell = Cell(weekend=day.weekday() >= 5, marks=marks.get((r.person_id, day), []))
            for slot in sorted(worked.get((r.person_id, day), []), key=lambda s: s.start):
                t = kinds.get(slot.shift)
                local_start = slot.start.astimezone(tz).strftime("%H:%M")
                local_end = slot.end.astimezone(tz).strftime("%H:%M")
                label = half_day(slot, tz)
                name = t.name if t is not None else slot.shift
                cell.shifts.append(
                    CellShift(
                        slot_id=slot.id,
                        code=slot.shift,
                        css=css.get(slot.shift, "c0"),
                        label=label,
                        call=slot.kind in (ShiftKind.IN_HOUSE_CALL, ShiftKind.HOME_CALL),
                        title=f"{name}: {local_start}–{local_end} ({slot.kind})",
                    )
                )
            cells.append(cell)
        who = f"PGY-{r.pgy}" if r.pgy is not None else str(r.kind)
        rows.append(
            Row(
                person_id=r.person_id,
                name=r.name,
                who=who,
                pgy=r.pgy,
                rotations=", ".join(
                    rotation_names.get(x, x) for x in rotations.get(r.person_id, [])
                ),
                me=r.person_id == me,
                cells=cells,
            )
        )

    legend = []
    for code, cls in css.items():
        t = kinds.get(code)
        sample = next((s for s in data.slots if s.shift == code), None)
        legend.append(
            LegendItem(
                code=code,
                css=cls,
                name=t.name if t is not None else code,
                label=half_day(sample, tz) if sample is not None else "",
                kind=str(t.kind) if t is not None else "",
            )
        )
    return GridView(
        program_name=data.program.name,
        timezone=data.program.timezone,
        version_id=version_id,
        status=str(grid.status),
        days=grid.days,
        rows=rows,
        legend=legend,
        breaches=listed,
        violations=shown_v,
        warnings=shown_w,
        by_rule=dict(sorted(by_rule.items())),
        shown_breaches="all" if manages else "own",
        coverage=report.coverage if manages else None,
        total_people=len(grid.rows),
    )


def default_range(first: date, last: date) -> tuple[date, date]:
    """The first 28 days of a version (its whole range when shorter)."""
    return first, min(last, first + timedelta(days=27))
