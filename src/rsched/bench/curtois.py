"""Curtois & Qu shift scheduling benchmark (schedulingbenchmarks.org/nrp, instances 1-24).

Three independent pieces:

* :func:`parse_instance` reads an ``InstanceN.txt`` file into frozen records and refuses any
  file that is not of this format with :class:`~rsched.domain.errors.InvalidInput`.
* :func:`evaluate` is the independent checker: it computes the benchmark's own objective for a
  roster and lists every hard-constraint breach, without using the solver or its model.
* :func:`solve` builds a dedicated CP-SAT model and returns a :class:`CurtoisResult`.

The semantics (boundary conventions included) follow ``FORMAT.md`` next to the instances:
day 0 is a Monday; weekend ``i`` is days ``7i+5`` and ``7i+6``; maximum runs see the days outside
the horizon as off; minimum runs (of shifts and of days off) never break at the horizon's edges.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rsched.domain.errors import FieldError, InvalidInput

SECTIONS: tuple[str, ...] = (
    "SECTION_HORIZON",
    "SECTION_SHIFTS",
    "SECTION_STAFF",
    "SECTION_DAYS_OFF",
    "SECTION_SHIFT_ON_REQUESTS",
    "SECTION_SHIFT_OFF_REQUESTS",
    "SECTION_COVER",
)
_REQUIRED_DATA = frozenset({"SECTION_HORIZON", "SECTION_SHIFTS", "SECTION_STAFF"})
_MAX_REPORTED_ERRORS = 20

RULE_NAMES: Mapping[int, str] = {
    0: "roster refers to an unknown employee, day or shift",
    1: "at most one shift per employee per day",
    2: "forbidden shift succession",
    3: "maximum shifts per type",
    4: "maximum total minutes",
    5: "minimum total minutes",
    6: "maximum consecutive shifts",
    7: "minimum consecutive shifts",
    8: "minimum consecutive days off",
    9: "maximum working weekends",
    10: "day off",
}

Roster = Mapping[tuple[str, int], str]
"""A roster: (employee_id, day) -> shift_id; a day without an entry is a day off."""

RosterInput = Roster | Iterable[tuple[str, int, str]]
"""What :func:`evaluate` accepts: a roster mapping or (employee_id, day, shift_id) triples
(triples can hold two shifts on one day, which breaks hard constraint 1)."""


# --------------------------------------------------------------------------- records


@dataclass(frozen=True, slots=True, kw_only=True)
class Shift:
    id: str
    minutes: int
    cannot_follow: tuple[str, ...]
    """Shift IDs that may not be worked on the day right after this shift."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Employee:
    id: str
    max_shifts: Mapping[str, int]
    """Per shift type, how many of it the employee may work over the horizon (0 = never)."""
    max_total_minutes: int
    min_total_minutes: int
    max_consecutive_shifts: int
    min_consecutive_shifts: int
    min_consecutive_days_off: int
    max_weekends: int
    days_off: frozenset[int] = frozenset()


@dataclass(frozen=True, slots=True, kw_only=True)
class ShiftRequest:
    employee: str
    day: int
    shift: str
    weight: int


@dataclass(frozen=True, slots=True, kw_only=True)
class CoverRequirement:
    day: int
    shift: str
    requirement: int
    weight_under: int
    weight_over: int


@dataclass(frozen=True, slots=True, kw_only=True)
class InstanceStats:
    days: int
    staff: int
    shift_types: int
    on_requests: int
    off_requests: int
    cover_lines: int


@dataclass(frozen=True, slots=True, kw_only=True)
class CurtoisInstance:
    name: str
    horizon: int
    shifts: tuple[Shift, ...]
    employees: tuple[Employee, ...]
    on_requests: tuple[ShiftRequest, ...]
    off_requests: tuple[ShiftRequest, ...]
    cover: tuple[CoverRequirement, ...]

    @property
    def shift_ids(self) -> tuple[str, ...]:
        return tuple(s.id for s in self.shifts)

    @property
    def employee_ids(self) -> tuple[str, ...]:
        return tuple(e.id for e in self.employees)

    @property
    def weekends(self) -> tuple[tuple[int, ...], ...]:
        """Days of each weekend (Saturday, Sunday) that fall inside the horizon."""
        out: list[tuple[int, ...]] = []
        for sat in range(5, self.horizon, 7):
            out.append(tuple(d for d in (sat, sat + 1) if d < self.horizon))
        return tuple(out)

    def stats(self) -> InstanceStats:
        return InstanceStats(
            days=self.horizon,
            staff=len(self.employees),
            shift_types=len(self.shifts),
            on_requests=len(self.on_requests),
            off_requests=len(self.off_requests),
            cover_lines=len(self.cover),
        )


# --------------------------------------------------------------------------- parser


class _Collector:
    def __init__(self) -> None:
        self.errors: list[FieldError] = []

    def add(self, path: str, message: str) -> None:
        self.errors.append(FieldError(path, message))


def _int_field(
    text: str, what: str, where: str, errs: _Collector, *, minimum: int = 0
) -> int | None:
    try:
        value = int(text)
    except ValueError:
        errs.add(where, f"{what} must be an integer, got {text!r}")
        return None
    if value < minimum:
        errs.add(where, f"{what} must be ≥ {minimum}, got {value}")
        return None
    return value


def _split_sections(
    lines: list[str], source: str
) -> dict[str, list[tuple[int, list[str]]]]:
    """Group data lines by section, checking keywords and their order."""
    if not any(raw.strip() == SECTIONS[0] for raw in lines):
        raise InvalidInput(
            FieldError(SECTIONS[0], f"missing {SECTIONS[0]}: not a Curtois & Qu instance file"),
            source=source,
        )
    sections: dict[str, list[tuple[int, list[str]]]] = {}
    current: str | None = None
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if line.startswith("#"):
            continue
        if not line:
            current = None  # a blank line ends a section's data
            continue
        if line.startswith("SECTION_"):
            if line not in SECTIONS:
                raise InvalidInput(
                    FieldError(f"line {number}", f"unknown section keyword {line!r}"),
                    source=source,
                )
            if line in sections:
                raise InvalidInput(
                    FieldError(f"line {number}", f"{line} appears twice"), source=source
                )
            expected = SECTIONS[len(sections)]
            if line != expected:
                raise InvalidInput(
                    FieldError(
                        f"line {number}",
                        f"found {line} where {expected} was expected (sections must come in "
                        f"the order {', '.join(SECTIONS)})",
                    ),
                    source=source,
                )
            sections[line] = []
            current = line
            continue
        if current is None:
            where = f"after {list(sections)[-1]}" if sections else "before SECTION_HORIZON"
            raise InvalidInput(
                FieldError(
                    f"line {number}",
                    f"bad line {number}: data {line[:40]!r} outside any section ({where}; "
                    "is a section keyword missing?)",
                ),
                source=source,
            )
        sections[current].append((number, [f.strip() for f in line.split(",")]))
    missing = [s for s in SECTIONS if s not in sections]
    if missing:
        raise InvalidInput(
            FieldError(missing[0], f"missing {missing[0]}: not a Curtois & Qu instance file"),
            source=source,
        )
    for name in SECTIONS:
        if name in _REQUIRED_DATA and not sections[name]:
            raise InvalidInput(FieldError(name, f"{name} has no data lines"), source=source)
    return sections


def parse_instance(path: str | os.PathLike[str]) -> CurtoisInstance:
    """Read one instance file; raise :class:`InvalidInput` naming what is wrong or missing."""
    p = Path(path)
    source = str(p)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidInput(FieldError(source, "file not found"), source=source) from None
    except IsADirectoryError:
        raise InvalidInput(
            FieldError(source, "is a directory, not a file"), source=source
        ) from None
    except UnicodeDecodeError:
        raise InvalidInput(
            FieldError(source, "not a text file (not UTF-8/ASCII)"), source=source
        ) from None
    except OSError as exc:
        raise InvalidInput(
            FieldError(source, f"cannot read: {exc.strerror}"), source=source
        ) from None
    return parse_text(text, name=p.stem, source=source)


def parse_text(text: str, *, name: str = "instance", source: str = "") -> CurtoisInstance:
    """Parse the content of an instance file (see :func:`parse_instance`)."""
    sections = _split_sections(text.splitlines(), source)
    errs = _Collector()

    def where(section: str, number: int) -> str:
        return f"{section} line {number}"

    def fields(section: str, number: int, row: list[str], count: int, layout: str) -> bool:
        if len(row) != count:
            errs.add(
                where(section, number),
                f"bad line {number}: expected {count} comma-separated fields ({layout}), "
                f"got {len(row)}",
            )
            return False
        return True

    # Horizon
    hz_lines = sections["SECTION_HORIZON"]
    horizon = 0
    if len(hz_lines) != 1 or len(hz_lines[0][1]) != 1:
        number = hz_lines[0][0]
        raise InvalidInput(
            FieldError(
                where("SECTION_HORIZON", number),
                "SECTION_HORIZON must hold exactly one integer (the number of days)",
            ),
            source=source,
        )
    h = _int_field(
        hz_lines[0][1][0], "horizon", where("SECTION_HORIZON", hz_lines[0][0]), errs, minimum=1
    )
    if h is None:
        raise InvalidInput(errs.errors, source=source)
    horizon = h

    # Shifts
    shifts_raw: list[tuple[int, str, int, list[str]]] = []
    shift_ids: set[str] = set()
    for number, row in sections["SECTION_SHIFTS"]:
        w = where("SECTION_SHIFTS", number)
        if not fields("SECTION_SHIFTS", number, row, 3, "ShiftID, LengthInMinutes, CannotFollow"):
            continue
        sid, length_text, follow = row
        if not sid:
            errs.add(w, "empty shift ID")
            continue
        if sid in shift_ids:
            errs.add(w, f"shift {sid!r} defined twice")
            continue
        length = _int_field(length_text, "LengthInMinutes", w, errs)
        if length is None:
            continue
        shift_ids.add(sid)
        follow_ids = [f for f in follow.split("|") if f] if follow else []
        shifts_raw.append((number, sid, length, follow_ids))
    shifts: list[Shift] = []
    for number, sid, length, follow_ids in shifts_raw:
        unknown = [f for f in follow_ids if f not in shift_ids]
        if unknown:
            errs.add(
                where("SECTION_SHIFTS", number), f"CannotFollow names unknown shift(s) {unknown}"
            )
        shifts.append(Shift(id=sid, minutes=length, cannot_follow=tuple(dict.fromkeys(follow_ids))))

    # Staff
    staff_layout = (
        "ID, MaxShifts, MaxTotalMinutes, MinTotalMinutes, MaxConsecutiveShifts, "
        "MinConsecutiveShifts, MinConsecutiveDaysOff, MaxWeekends"
    )
    staff_raw: list[dict[str, Any]] = []
    employee_ids: set[str] = set()
    for number, row in sections["SECTION_STAFF"]:
        w = where("SECTION_STAFF", number)
        if not fields("SECTION_STAFF", number, row, 8, staff_layout):
            continue
        eid = row[0]
        if not eid:
            errs.add(w, "empty employee ID")
            continue
        if eid in employee_ids:
            errs.add(w, f"employee {eid!r} defined twice")
            continue
        max_shifts: dict[str, int] = {}
        ok = True
        for item in row[1].split("|") if row[1] else []:
            sid, eq, value = item.partition("=")
            if not eq:
                errs.add(w, f"MaxShifts entry {item!r} is not ShiftID=max")
                ok = False
                continue
            if sid not in shift_ids:
                errs.add(w, f"MaxShifts names unknown shift {sid!r}")
                ok = False
                continue
            if sid in max_shifts:
                errs.add(w, f"MaxShifts lists shift {sid!r} twice")
                ok = False
                continue
            v = _int_field(value, f"MaxShifts[{sid}]", w, errs)
            if v is None:
                ok = False
                continue
            max_shifts[sid] = v
        missing = [s.id for s in shifts if s.id not in max_shifts]
        if ok and missing:
            errs.add(w, f"MaxShifts has no entry for shift(s) {missing}")
            ok = False
        names = (
            "MaxTotalMinutes",
            "MinTotalMinutes",
            "MaxConsecutiveShifts",
            "MinConsecutiveShifts",
            "MinConsecutiveDaysOff",
            "MaxWeekends",
        )
        values = [_int_field(t, n, w, errs) for t, n in zip(row[2:], names, strict=True)]
        if not ok or any(v is None for v in values):
            continue
        employee_ids.add(eid)
        staff_raw.append({"id": eid, "max_shifts": max_shifts, "values": values})

    # Days off
    days_off: dict[str, set[int]] = defaultdict(set)
    for number, row in sections["SECTION_DAYS_OFF"]:
        w = where("SECTION_DAYS_OFF", number)
        if len(row) < 2:
            errs.add(w, f"bad line {number}: expected EmployeeID, Day[, Day …]")
            continue
        if row[0] not in employee_ids:
            errs.add(w, f"unknown employee {row[0]!r}")
            continue
        for text_day in row[1:]:
            d = _int_field(text_day, "Day", w, errs)
            if d is None:
                continue
            if d >= horizon:
                errs.add(w, f"day {d} is outside the horizon 0..{horizon - 1}")
                continue
            days_off[row[0]].add(d)

    # Requests
    def requests(section: str) -> list[ShiftRequest]:
        out: list[ShiftRequest] = []
        for number, row in sections[section]:
            w = where(section, number)
            if not fields(section, number, row, 4, "EmployeeID, Day, ShiftID, Weight"):
                continue
            eid, day_text, sid, weight_text = row
            if eid not in employee_ids:
                errs.add(w, f"unknown employee {eid!r}")
                continue
            if sid not in shift_ids:
                errs.add(w, f"unknown shift {sid!r}")
                continue
            d = _int_field(day_text, "Day", w, errs)
            weight = _int_field(weight_text, "Weight", w, errs)
            if d is None or weight is None:
                continue
            if d >= horizon:
                errs.add(w, f"day {d} is outside the horizon 0..{horizon - 1}")
                continue
            out.append(ShiftRequest(employee=eid, day=d, shift=sid, weight=weight))
        return out

    on_requests = requests("SECTION_SHIFT_ON_REQUESTS")
    off_requests = requests("SECTION_SHIFT_OFF_REQUESTS")

    # Cover
    cover: list[CoverRequirement] = []
    seen_cover: set[tuple[int, str]] = set()
    for number, row in sections["SECTION_COVER"]:
        w = where("SECTION_COVER", number)
        if not fields(
            "SECTION_COVER", number, row, 5, "Day, ShiftID, Requirement, WeightUnder, WeightOver"
        ):
            continue
        day_text, sid, req_text, under_text, over_text = row
        if sid not in shift_ids:
            errs.add(w, f"unknown shift {sid!r}")
            continue
        d = _int_field(day_text, "Day", w, errs)
        req = _int_field(req_text, "Requirement", w, errs)
        under = _int_field(under_text, "WeightUnder", w, errs)
        over = _int_field(over_text, "WeightOver", w, errs)
        if d is None or req is None or under is None or over is None:
            continue
        if d >= horizon:
            errs.add(w, f"day {d} is outside the horizon 0..{horizon - 1}")
            continue
        if (d, sid) in seen_cover:
            errs.add(w, f"second cover line for day {d}, shift {sid!r}")
            continue
        seen_cover.add((d, sid))
        cover.append(
            CoverRequirement(
                day=d, shift=sid, requirement=req, weight_under=under, weight_over=over
            )
        )

    if errs.errors:
        shown = errs.errors[:_MAX_REPORTED_ERRORS]
        if len(errs.errors) > len(shown):
            shown.append(FieldError("", f"… and {len(errs.errors) - len(shown)} more error(s)"))
        raise InvalidInput(shown, source=source)

    employees = tuple(
        Employee(
            id=r["id"],
            max_shifts=dict(r["max_shifts"]),
            max_total_minutes=r["values"][0],
            min_total_minutes=r["values"][1],
            max_consecutive_shifts=r["values"][2],
            min_consecutive_shifts=r["values"][3],
            min_consecutive_days_off=r["values"][4],
            max_weekends=r["values"][5],
            days_off=frozenset(days_off.get(r["id"], ())),
        )
        for r in staff_raw
    )
    return CurtoisInstance(
        name=name,
        horizon=horizon,
        shifts=tuple(shifts),
        employees=employees,
        on_requests=tuple(on_requests),
        off_requests=tuple(off_requests),
        cover=tuple(cover),
    )


# --------------------------------------------------------------------------- evaluator


@dataclass(frozen=True, slots=True, kw_only=True)
class Breach:
    """One broken hard constraint (``rule`` is its number in FORMAT.md; 0 = malformed roster)."""

    rule: int
    employee: str
    day: int | None
    message: str

    @property
    def rule_name(self) -> str:
        return RULE_NAMES.get(self.rule, "?")

    def __str__(self) -> str:
        at = f" day {self.day}" if self.day is not None else ""
        return f"[{self.rule}] {self.employee}{at}: {self.message}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Evaluation:
    objective: int
    on_request_penalty: int
    off_request_penalty: int
    under_cover_penalty: int
    over_cover_penalty: int
    breaches: tuple[Breach, ...]

    @property
    def feasible(self) -> bool:
        return not self.breaches


def _roster_triples(roster: RosterInput) -> list[tuple[str, int, str]]:
    if isinstance(roster, Mapping):
        return [(e, d, s) for (e, d), s in roster.items()]
    return [(e, d, s) for e, d, s in roster]


def _runs(flags: list[bool], value: bool) -> list[tuple[int, int]]:
    """Maximal runs [start, end] (inclusive) of ``value`` in ``flags``."""
    out: list[tuple[int, int]] = []
    start: int | None = None
    for d, f in enumerate(flags):
        if f == value and start is None:
            start = d
        elif f != value and start is not None:
            out.append((start, d - 1))
            start = None
    if start is not None:
        out.append((start, len(flags) - 1))
    return out


def evaluate(instance: CurtoisInstance, roster: RosterInput) -> Evaluation:
    """Objective in the benchmark's terms plus every hard-constraint breach of ``roster``.

    Written directly from FORMAT.md and sharing nothing with the CP-SAT model, so that it can
    re-check the solver's answer.
    """
    horizon = instance.horizon
    shifts = {s.id: s for s in instance.shifts}
    emps = {e.id: e for e in instance.employees}
    breaches: list[Breach] = []

    # (employee, day) -> shifts worked (normally 0 or 1)
    worked: dict[str, list[list[str]]] = {e: [[] for _ in range(horizon)] for e in emps}
    for eid, day, sid in _roster_triples(roster):
        if eid not in emps:
            breaches.append(Breach(rule=0, employee=str(eid), day=None, message="unknown employee"))
            continue
        if not isinstance(day, int) or isinstance(day, bool) or not 0 <= day < horizon:
            breaches.append(
                Breach(rule=0, employee=eid, day=None, message=f"day {day!r} outside the horizon")
            )
            continue
        if sid not in shifts:
            breaches.append(Breach(rule=0, employee=eid, day=day, message=f"unknown shift {sid!r}"))
            continue
        worked[eid][day].append(sid)

    for eid, emp in emps.items():
        days = worked[eid]
        # 1. one shift per day
        for d, on in enumerate(days):
            if len(on) > 1:
                breaches.append(
                    Breach(rule=1, employee=eid, day=d, message=f"{len(on)} shifts: {on}")
                )
        # 2. forbidden successions
        for d in range(horizon - 1):
            for s in days[d]:
                for t in days[d + 1]:
                    if t in shifts[s].cannot_follow:
                        breaches.append(
                            Breach(
                                rule=2, employee=eid, day=d + 1,
                                message=f"{t} on day {d + 1} may not follow {s} on day {d}",
                            )
                        )
        # 3. max shifts per type
        counts: dict[str, int] = defaultdict(int)
        minutes = 0
        for on in days:
            for s in on:
                counts[s] += 1
                minutes += shifts[s].minutes
        for s, n in counts.items():
            limit = emp.max_shifts.get(s, 0)
            if n > limit:
                breaches.append(
                    Breach(rule=3, employee=eid, day=None, message=f"{n} × {s}, at most {limit}")
                )
        # 4./5. total minutes
        if minutes > emp.max_total_minutes:
            breaches.append(
                Breach(
                    rule=4, employee=eid, day=None,
                    message=f"{minutes} minutes, at most {emp.max_total_minutes}",
                )
            )
        if minutes < emp.min_total_minutes:
            breaches.append(
                Breach(
                    rule=5, employee=eid, day=None,
                    message=f"{minutes} minutes, at least {emp.min_total_minutes}",
                )
            )
        flags = [bool(on) for on in days]
        # 6. max consecutive shifts (outside the horizon counts as off)
        # 7. min consecutive shifts (runs touching either edge never break it)
        for start, end in _runs(flags, True):
            length = end - start + 1
            if length > emp.max_consecutive_shifts:
                breaches.append(
                    Breach(
                        rule=6, employee=eid, day=start,
                        message=f"{length} consecutive working days from day {start}, "
                        f"at most {emp.max_consecutive_shifts}",
                    )
                )
            if start > 0 and end < horizon - 1 and length < emp.min_consecutive_shifts:
                breaches.append(
                    Breach(
                        rule=7, employee=eid, day=start,
                        message=f"{length} consecutive working day(s) from day {start}, "
                        f"at least {emp.min_consecutive_shifts}",
                    )
                )
        # 8. min consecutive days off (same edge convention)
        for start, end in _runs(flags, False):
            length = end - start + 1
            if start > 0 and end < horizon - 1 and length < emp.min_consecutive_days_off:
                breaches.append(
                    Breach(
                        rule=8, employee=eid, day=start,
                        message=f"{length} consecutive day(s) off from day {start}, "
                        f"at least {emp.min_consecutive_days_off}",
                    )
                )
        # 9. max working weekends
        worked_weekends = [wk for wk in instance.weekends if any(flags[d] for d in wk)]
        if len(worked_weekends) > emp.max_weekends:
            breaches.append(
                Breach(
                    rule=9, employee=eid, day=None,
                    message=f"{len(worked_weekends)} weekends worked, at most {emp.max_weekends}",
                )
            )
        # 10. days off
        for d in sorted(emp.days_off):
            if days[d]:
                breaches.append(
                    Breach(rule=10, employee=eid, day=d, message=f"works {days[d]} on a day off")
                )

    def on_shift(eid: str, day: int, sid: str) -> bool:
        return eid in worked and sid in worked[eid][day]

    on_pen = sum(r.weight for r in instance.on_requests if not on_shift(r.employee, r.day, r.shift))
    off_pen = sum(r.weight for r in instance.off_requests if on_shift(r.employee, r.day, r.shift))
    assigned: dict[tuple[int, str], int] = defaultdict(int)
    for days in worked.values():
        for d, on in enumerate(days):
            for s in on:
                assigned[(d, s)] += 1
    under_pen = over_pen = 0
    for c in instance.cover:
        x = assigned[(c.day, c.shift)]
        under_pen += max(0, c.requirement - x) * c.weight_under
        over_pen += max(0, x - c.requirement) * c.weight_over
    return Evaluation(
        objective=on_pen + off_pen + under_pen + over_pen,
        on_request_penalty=on_pen,
        off_request_penalty=off_pen,
        under_cover_penalty=under_pen,
        over_cover_penalty=over_pen,
        breaches=tuple(breaches),
    )


# --------------------------------------------------------------------------- solver
#
# Strategy (chosen by measurement on instances 1-12, 60 s, 2 cores; see benchmarks/):
#
# 1. A first roster: the whole model *without* the run-length automaton, CP-SAT's default
#    portfolio on all workers, for INITIAL_SHARE of the time (longer until it has a roster).
#    It proves the smallest instances optimal on its own.
# 2. Then, side by side (workers ≥ 2):
#    * the whole model *with* the automaton of rules 6-8 (its linear relaxation is the
#      network-flow hull of the work/off sequences, which lifts the lower bound from near 0 to
#      near the optimum on most of instances 1-11) on workers − 1 threads with full LP
#      (linearization level 2, constraints not added lazily). It gives the bound, and proves
#      instances optimal. If its bound is still useless after FULL_GIVE_UP_SHARE of the time,
#      its thread turns to the neighbourhood search too;
#    * a large neighbourhood search (LNS) on one thread: each step frees a set of
#      (employee, day) cells (a few employees over the whole horizon, a window of days for
#      everybody, a block of employees × weeks, or the staff able to fill a badly covered shift
#      around its day; the kind is picked by a bandit on recent gain per second), fixes every
#      other cell to the best roster and re-optimises that sub-model with CP-SAT, with the roster
#      as a complete hint. Sub-models are built with the fixed cells folded in as constants, so
#      their size follows the neighbourhood, not the instance; the size adapts to how often the
#      sub-models are solved to optimality.
#    With one worker, the same two searches run one after the other.
# 3. Instances above LARGE_MODEL_VARS assignment variables (Instance23/24) skip the whole model:
#    the first roster is built one employee group at a time, then improved by the LNS.
#
# Every (sub-)model holds all hard constraints, so every accepted roster is feasible; callers
# re-check the result with :func:`evaluate`, which shares no code with the model.


@dataclass(frozen=True, slots=True, kw_only=True)
class CurtoisProgress:
    """Sent to ``on_progress`` at each improving solution."""

    objective: int
    best_bound: int | None
    solutions_found: int
    elapsed: float
    """Seconds since :func:`solve` was called (model building included)."""
    phase: str = "full"
    """``full`` (the whole model) or ``lns`` (neighbourhood search)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CurtoisResult:
    instance: str
    status: str
    """OPTIMAL (proven), FEASIBLE, INFEASIBLE, UNKNOWN (no roster found) or MODEL_INVALID."""
    roster: Roster
    objective: int | None
    best_bound: int | None
    gap: float | None
    """(objective − bound) / objective, 0 when proven optimal; None without a solution."""
    time_to_first: float | None
    """Seconds from the call of :func:`solve` (model building included) to the first solution."""
    solutions_found: int
    """Improving solutions found (by the full model and by the neighbourhood search)."""
    wall_time: float
    """Seconds spent in :func:`solve`, model building included."""
    build_time: float
    aborted: bool = False
    workers: int = 2
    seed: int = 0
    lns_steps: int = 0
    lns_improvements: int = 0
    parameters: Mapping[str, Any] = field(default_factory=dict)

    @property
    def has_solution(self) -> bool:
        return self.status in ("OPTIMAL", "FEASIBLE")


# Tuning, chosen by measurement on instances 1-12 (see benchmarks/curtois_run.py).
# CP-SAT parameters of the full model (with the run-length automaton, whose linear relaxation
# gives the lower bound) on one worker, and on several.
FULL_SINGLE_PARAMETERS: Mapping[str, Any] = {
    "linearization_level": 2,
    "add_lp_constraints_lazily": False,
}
FULL_MULTI_PARAMETERS: Mapping[str, Any] = {"subsolvers": ["max_lp"]}
# With one worker: share of the time limit for the full model before the neighbourhood search.
FULL_MODEL_SHARE = 0.15
# With several: when FULL_GIVE_UP_SHARE of the time is spent and the full model's bound is still
# below (1 − FULL_GIVE_UP_GAP) × the best objective, its workers join the neighbourhood search.
FULL_GIVE_UP_SHARE = 0.3
FULL_GIVE_UP_GAP = 0.5
# With several: share of the time limit for the quick first roster the neighbourhood search
# starts from (the search keeps going past it until it has a roster).
INITIAL_SHARE = 0.05
LNS_STEP_SECONDS = 1.0
# Instances with more assignment variables than this skip the whole model: a first roster is
# built employee group by employee group (sub-models of about CONSTRUCT_GROUP_VARS variables),
# then improved by the neighbourhood search.
LARGE_MODEL_VARS = 150_000
CONSTRUCT_GROUP_VARS = 4_000
CONSTRUCT_MIN_SECONDS = 0.5
LNS_INITIAL_EMPLOYEES = 8.0  # initial neighbourhood size, in employees × horizon cells
LNS_MIN_EMPLOYEES = 2.0
LNS_INITIAL_VARS = 6_000  # … and at most about this many assignment variables
LNS_GROW = 1.1
LNS_SHRINK = 0.9
LNS_AUTOMATON = False
LNS_BANDIT_FLOOR = 0.1
LNS_BANDIT_DECAY = 0.3
LNS_SUB_PARAMETERS: Mapping[str, Any] = {"linearization_level": 2}
ABORT_POLL_SECONDS = 0.1

_Lit = Any  # a CP-SAT Boolean variable, or the int 0 / 1 for a fixed value


@dataclass(frozen=True, slots=True)
class _Prepared:
    """Instance data in index form, computed once per solve."""

    n_emps: int
    horizon: int
    minutes: tuple[int, ...]
    allowed: tuple[tuple[int, ...], ...]
    """Per employee, the shift indices with MaxShifts > 0."""
    max_shifts: tuple[tuple[int, ...], ...]
    follow_groups: tuple[tuple[tuple[tuple[int, ...], tuple[int, ...]], ...], ...]
    """Per employee: (group of shifts with one CannotFollow set, that set) restricted to allowed."""
    days_off: tuple[frozenset[int], ...]
    request_weight: Mapping[tuple[int, int, int], int]
    """Net request weight of x[e,d,s]: + off-request weight − on-request weight."""
    request_constant: int
    """Σ on-request weights (each is paid unless the employee gets the shift)."""
    cover: tuple[tuple[int, int, int, int, int], ...]
    """(day, shift index, requirement, weight under, weight over)."""
    minutes_bounds: tuple[tuple[int, int], ...]
    """Per employee (MinTotalMinutes, MaxTotalMinutes)."""
    limits: tuple[tuple[int, int, int, int], ...]
    """Per employee (MaxConsecutiveShifts, MinConsecutiveShifts, MinConsecutiveDaysOff,
    MaxWeekends)."""


def _prepare(instance: CurtoisInstance) -> _Prepared:
    shift_index = {s.id: i for i, s in enumerate(instance.shifts)}
    emp_index = {e.id: i for i, e in enumerate(instance.employees)}
    follow = [[shift_index[t] for t in s.cannot_follow] for s in instance.shifts]
    allowed: list[tuple[int, ...]] = []
    groups_all: list[tuple[tuple[tuple[int, ...], tuple[int, ...]], ...]] = []
    for emp in instance.employees:
        ok = tuple(si for si, s in enumerate(instance.shifts) if emp.max_shifts.get(s.id, 0) > 0)
        allowed.append(ok)
        ok_set = set(ok)
        groups: dict[tuple[int, ...], list[int]] = defaultdict(list)
        for si in ok:
            forbidden = tuple(sorted(ti for ti in follow[si] if ti in ok_set))
            if forbidden:
                groups[forbidden].append(si)
        groups_all.append(tuple((tuple(g), f) for f, g in groups.items()))
    weight: dict[tuple[int, int, int], int] = defaultdict(int)
    constant = 0
    for r in instance.on_requests:
        constant += r.weight
        weight[(emp_index[r.employee], r.day, shift_index[r.shift])] -= r.weight
    for r in instance.off_requests:
        weight[(emp_index[r.employee], r.day, shift_index[r.shift])] += r.weight
    return _Prepared(
        n_emps=len(instance.employees),
        horizon=instance.horizon,
        minutes=tuple(s.minutes for s in instance.shifts),
        allowed=tuple(allowed),
        max_shifts=tuple(
            tuple(e.max_shifts.get(s.id, 0) for s in instance.shifts) for e in instance.employees
        ),
        follow_groups=tuple(groups_all),
        days_off=tuple(e.days_off for e in instance.employees),
        request_weight={k: v for k, v in weight.items() if v},
        request_constant=constant,
        cover=tuple(
            (c.day, shift_index[c.shift], c.requirement, c.weight_under, c.weight_over)
            for c in instance.cover
        ),
        minutes_bounds=tuple(
            (e.min_total_minutes, e.max_total_minutes) for e in instance.employees
        ),
        limits=tuple(
            (
                e.max_consecutive_shifts,
                e.min_consecutive_shifts,
                e.min_consecutive_days_off,
                e.max_weekends,
            )
            for e in instance.employees
        ),
    )


@dataclass(slots=True)
class _Model:
    model: Any
    x: dict[tuple[int, int, int], Any]
    """(employee index, day, shift index) -> BoolVar, for the free cells that can take it."""


class _Builder:
    """Adds constraints whose terms may be fixed (0/1) literals, folding the constants in."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def at_most(self, items: Iterable[_Lit], bound: int) -> None:
        """Σ items ≤ bound."""
        vs: list[Any] = []
        for it in items:
            if isinstance(it, int):
                bound -= it
            else:
                vs.append(it)
        if len(vs) <= bound:
            return
        if bound < 0:
            self.model.add_bool_or([])  # cannot hold
        elif bound == 0:
            self.model.add_bool_and([v.Not() for v in vs])
        elif bound == 1:
            self.model.add_at_most_one(vs)
        else:
            self.model.add(sum(vs) <= bound)

    def clause(self, lits: Iterable[tuple[_Lit, bool]]) -> None:
        """OR of (literal, positive) pairs."""
        out: list[Any] = []
        for v, positive in lits:
            if isinstance(v, int):
                if bool(v) == positive:
                    return  # satisfied by a fixed value
                continue
            out.append(v if positive else v.Not())
        self.model.add_bool_or(out)


def _run_automaton(
    max_on: int, min_on: int, min_off: int
) -> tuple[list[int], list[tuple[int, int, int]]]:
    """Final states and transitions (state, worked 0/1, next state) of the automaton that
    accepts exactly the work/off sequences allowed by rules 6-8 with FORMAT.md's boundaries.

    States: 0 start; 1 off-run touching day 0 (exempt from MinConsecutiveDaysOff); on-runs
    touching day 0 (exempt from MinConsecutiveShifts) of length r; on-runs of length r; off-runs of
    length r (capped at MinConsecutiveDaysOff). Every state is final: runs touching the last day
    are exempt from the minimums.
    """
    max_on = max(max_on, 0)
    min_off = max(min_off, 1)
    on_exempt = {r: 1 + r for r in range(1, max_on + 1)}
    on = {r: 1 + max_on + r for r in range(1, max_on + 1)}
    off = {r: 1 + 2 * max_on + r for r in range(1, min_off + 1)}
    trans: list[tuple[int, int, int]] = [(0, 0, 1)]
    if max_on >= 1:
        trans += [(0, 1, on_exempt[1]), (1, 1, on[1])]
    trans.append((1, 0, 1))
    for r in range(1, max_on + 1):
        if r < max_on:
            trans += [(on_exempt[r], 1, on_exempt[r + 1]), (on[r], 1, on[r + 1])]
        trans.append((on_exempt[r], 0, off[1]))
        if r >= min_on:
            trans.append((on[r], 0, off[1]))
    for r in range(1, min_off + 1):
        trans.append((off[r], 0, off[min(r + 1, min_off)]))
        if r >= min_off and max_on >= 1:
            trans.append((off[r], 1, on[1]))
    states = sorted({t[0] for t in trans} | {t[2] for t in trans})
    return states, trans


def _build_model(
    prep: _Prepared,
    *,
    free: Mapping[int, Iterable[int]] | None = None,
    current: list[list[int]] | None = None,
    automaton: bool = True,
    hint: list[list[int]] | None = None,
) -> _Model:
    """The CP-SAT model; with ``free``, only those (employee -> days) cells are decided and every
    other cell keeps its value from ``current`` (``current[e][d]`` = shift index or −1).
    ``hint`` (same form, usually ``current``) becomes a complete solution hint."""
    from ortools.sat.python import cp_model

    model = cp_model.CpModel()
    b = _Builder(model)
    horizon = prep.horizon
    weekends = [
        tuple(d for d in (sat, sat + 1) if d < horizon) for sat in range(5, horizon, 7)
    ]
    x: dict[tuple[int, int, int], Any] = {}
    cover_vars: dict[tuple[int, int], list[Any]] = defaultdict(list)
    cover_fixed: dict[tuple[int, int], int] = defaultdict(int)
    obj_vars: list[Any] = []
    obj_coefs: list[int] = []
    constant = prep.request_constant
    rw = prep.request_weight
    hints: list[tuple[Any, int]] = []
    hint_counts: dict[tuple[int, int], int] = defaultdict(int)
    if hint is not None:
        for row in hint:
            for d, si in enumerate(row):
                if si >= 0:
                    hint_counts[(d, si)] += 1

    for ei in range(prep.n_emps):
        if free is None:
            free_days: set[int] | range = range(horizon)
        else:
            free_days = set(free.get(ei, ()))
        cur = current[ei] if current is not None else None
        if not free_days:
            assert cur is not None
            for d, si in enumerate(cur):
                if si >= 0:
                    cover_fixed[(d, si)] += 1
                    constant += rw.get((ei, d, si), 0)
            continue
        allowed = prep.allowed[ei]
        off = prep.days_off[ei]
        # cells[d]: {shift: literal} for a free day, or the fixed shift index (−1 = off).
        day_vars: list[dict[int, Any] | None] = []
        fixed_shift: list[int] = []
        w: list[_Lit] = []
        for d in range(horizon):
            if d in free_days:
                fixed_shift.append(-1)
                if d in off or not allowed:
                    day_vars.append(None)
                    w.append(0)
                    continue
                vs: dict[int, Any] = {}
                for si in allowed:
                    v = model.new_bool_var(f"x{ei}_{d}_{si}")
                    x[(ei, d, si)] = v
                    if hint is not None:
                        hints.append((v, int(hint[ei][d] == si)))
                    vs[si] = v
                    cover_vars[(d, si)].append(v)
                    coef = rw.get((ei, d, si))
                    if coef:
                        obj_vars.append(v)
                        obj_coefs.append(coef)
                day_vars.append(vs)
                if len(vs) == 1:
                    w.append(next(iter(vs.values())))
                else:
                    wv = model.new_bool_var(f"w{ei}_{d}")
                    model.add(sum(vs.values()) == wv)  # 1. at most one shift per day
                    if hint is not None:
                        hints.append((wv, int(hint[ei][d] >= 0)))
                    w.append(wv)
            else:
                assert cur is not None
                si = cur[d]
                day_vars.append(None)
                fixed_shift.append(si)
                w.append(1 if si >= 0 else 0)
                if si >= 0:
                    cover_fixed[(d, si)] += 1
                    constant += rw.get((ei, d, si), 0)

        def cell(
            d: int, si: int, day_vars: list[dict[int, Any] | None] = day_vars,
            fixed_shift: list[int] = fixed_shift,
        ) -> _Lit:
            dv = day_vars[d]
            if dv is not None:
                return dv.get(si, 0)
            return 1 if fixed_shift[d] == si else 0

        # 2. forbidden successions: Σ_{s∈G} x[d,s] + Σ_{t∈F} x[d+1,t] ≤ 1 per group G with set F
        for d in range(horizon - 1):
            if isinstance(w[d], int) and isinstance(w[d + 1], int):
                continue
            for group, forbidden in prep.follow_groups[ei]:
                b.at_most(
                    [cell(d, si) for si in group] + [cell(d + 1, ti) for ti in forbidden], 1
                )
        # 3. max shifts per type
        for si in allowed:
            b.at_most((cell(d, si) for d in range(horizon)), prep.max_shifts[ei][si])
        # 4./5. total minutes
        mins_const = 0
        mvars: list[Any] = []
        mcoefs: list[int] = []
        for d in range(horizon):
            dv = day_vars[d]
            if dv is None:
                if fixed_shift[d] >= 0:
                    mins_const += prep.minutes[fixed_shift[d]]
                continue
            for si, v in dv.items():
                mvars.append(v)
                mcoefs.append(prep.minutes[si])
        lo, hi = prep.minutes_bounds[ei]
        if mvars:
            model.add_linear_constraint(
                cp_model.LinearExpr.weighted_sum(mvars, mcoefs), lo - mins_const, hi - mins_const
            )
            # redundant: the number of worked days implied by the minutes
            lengths = [prep.minutes[si] for si in allowed]
            if min(lengths) > 0:
                w_vars = [v for v in w if not isinstance(v, int)]
                w_const = sum(v for v in w if isinstance(v, int))
                model.add_linear_constraint(
                    sum(w_vars),
                    math.ceil(lo / max(lengths)) - w_const,
                    hi // min(lengths) - w_const,
                )
        elif not lo <= mins_const <= hi:
            model.add_bool_or([])
        max_on, min_on, min_off, max_weekends = prep.limits[ei]
        # 6. max consecutive shifts: every Max+1 consecutive days hold a day off
        for d in range(horizon - max_on):
            b.at_most(w[d : d + max_on + 1], max_on)
        # 7. min consecutive shifts: w[d-1]=0 ∧ w[d]=1 ⇒ w[d+j]=1 for d+j inside the horizon
        # 8. min consecutive days off: w[d-1]=1 ∧ w[d]=0 ⇒ w[d+j]=0
        for d in range(1, horizon):
            for j in range(1, min_on):
                if d + j >= horizon:
                    break
                b.clause([(w[d], False), (w[d - 1], True), (w[d + j], True)])
            for j in range(1, min_off):
                if d + j >= horizon:
                    break
                b.clause([(w[d - 1], False), (w[d], True), (w[d + j], False)])
        if automaton and any(not isinstance(v, int) for v in w):
            model.add_automaton(w, 0, *_run_automaton(max_on, min_on, min_off))
        # 9. max working weekends (a weekend is worked if either day is)
        weekend_lits: list[_Lit] = []
        for days in weekends:
            lits = [w[d] for d in days]
            if any(v == 1 for v in lits if isinstance(v, int)):
                weekend_lits.append(1)
                continue
            vs_w = [v for v in lits if not isinstance(v, int)]
            if not vs_w:
                continue
            if len(vs_w) == 1:
                weekend_lits.append(vs_w[0])
                continue
            wk = model.new_bool_var(f"wk{ei}_{days[0]}")
            if hint is not None:
                hints.append((wk, int(any(hint[ei][d] >= 0 for d in days))))
            for v in vs_w:
                model.add_implication(v, wk)
            model.add_bool_or([wk.Not(), *vs_w])
            weekend_lits.append(wk)
        b.at_most(weekend_lits, max_weekends)
        # redundant, for the LP: at most 2 · MaxWeekends weekend days worked, and a worked
        # weekend is a weekend with a worked day
        b.at_most((w[d] for days in weekends for d in days), 2 * max_weekends)

    # Cover: Σ x − over + under = requirement, with the fixed cells as a constant.
    for day, si, req, w_under, w_over in prep.cover:
        vs_c = cover_vars.get((day, si), [])
        fixed = cover_fixed.get((day, si), 0)
        if not vs_c:
            constant += max(0, req - fixed) * w_under + max(0, fixed - req) * w_over
            continue
        under = model.new_int_var(0, max(0, req - fixed), f"under{day}_{si}")
        over = model.new_int_var(0, max(0, fixed + len(vs_c) - req), f"over{day}_{si}")
        if hint is not None:
            n = hint_counts.get((day, si), 0)
            hints += [(under, max(0, req - n)), (over, max(0, n - req))]
        model.add(sum(vs_c) + under - over == req - fixed)
        obj_vars.extend([under, over])
        obj_coefs.extend([w_under, w_over])
    model.minimize(cp_model.LinearExpr.weighted_sum(obj_vars, obj_coefs) + constant)
    for var, value in hints:
        model.add_hint(var, value)
    return _Model(model=model, x=x)


def _cells_from_values(
    values: Any, x: Mapping[tuple[int, int, int], Any], prep: _Prepared,
    base: list[list[int]] | None = None, free: Mapping[int, Iterable[int]] | None = None,
) -> list[list[int]]:
    """The roster (e -> d -> shift index or −1) of a solution of a (sub-)model."""
    if base is None or free is None:
        cells = [[-1] * prep.horizon for _ in range(prep.n_emps)]
    else:
        cells = [row[:] for row in base]
        for ei, days in free.items():
            for d in days:
                cells[ei][d] = -1
    for (ei, d, si), var in x.items():
        if values[var.index]:
            cells[ei][d] = si
    return cells


class _Stopper:
    """Polls ``should_abort`` from a thread and stops the attached solvers; also stops a solver
    at its phase deadline once its ``ready()`` predicate holds."""

    def __init__(self, should_abort: Callable[[], bool] | None) -> None:
        self.should_abort = should_abort
        self.aborted = threading.Event()
        self.finished = threading.Event()
        """Set when the search should end (abort, or optimality proven)."""
        self._lock = threading.Lock()
        self._solvers: dict[int, tuple[Any, float | None, Callable[[], bool]]] = {}
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.poll():
            return
        self._thread = threading.Thread(target=self._run, name="curtois-stopper", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join()

    def attach(
        self, solver: Any, deadline: float | None = None,
        ready: Callable[[], bool] | None = None,
    ) -> None:
        with self._lock:
            self._solvers[id(solver)] = (solver, deadline, ready or (lambda: True))
        if self.finished.is_set():
            solver.stop_search()

    def detach(self, solver: Any) -> None:
        with self._lock:
            self._solvers.pop(id(solver), None)

    def finish(self) -> None:
        """End the whole search (e.g. optimality proven)."""
        self.finished.set()
        with self._lock:
            solvers = [s for s, _, _ in self._solvers.values()]
        for s in solvers:
            s.stop_search()

    def poll(self) -> bool:
        """Ask ``should_abort``; on True, abort everything. Returns whether aborted."""
        if self.aborted.is_set():
            return True
        if self.should_abort is None:
            return False
        try:
            stop = bool(self.should_abort())
        except Exception:  # a broken predicate must not leave the solver running
            stop = True
        if stop:
            self.aborted.set()
            self.finish()
        return stop

    def _run(self) -> None:
        while not self._done.wait(ABORT_POLL_SECONDS):
            if self.poll() or self.finished.is_set():
                # keep stopping: a solver may have been attached just before it started solving
                with self._lock:
                    solvers = [s for s, _, _ in self._solvers.values()]
                for s in solvers:
                    s.stop_search()
                continue
            now = time.monotonic()
            with self._lock:
                due = [
                    (key, s) for key, (s, dl, ready) in self._solvers.items()
                    if dl is not None and now >= dl and ready()
                ]
                for key, s in due:
                    self._solvers[key] = (s, None, lambda: True)
            for _, s in due:
                s.stop_search()


class _Incumbent:
    """The best roster found by any search thread, and the best lower bound."""

    def __init__(
        self, started: float, on_progress: Callable[[CurtoisProgress], None] | None
    ) -> None:
        self.started = started
        self.on_progress = on_progress
        self.lock = threading.Lock()
        self.objective: int | None = None
        self.cells: list[list[int]] | None = None
        self.bound: int | None = None
        self.first: float | None = None
        self.count = 0

    def better(self, objective: int) -> bool:
        with self.lock:
            return self.objective is None or objective < self.objective

    def offer(self, objective: int, cells: list[list[int]], phase: str) -> bool:
        with self.lock:
            if self.objective is not None and objective >= self.objective:
                return False
            elapsed = time.monotonic() - self.started
            self.objective, self.cells = objective, cells
            self.count += 1
            if self.first is None:
                self.first = elapsed
            count, bound = self.count, self.bound
        if self.on_progress is not None:
            self.on_progress(
                CurtoisProgress(
                    objective=objective, best_bound=bound, solutions_found=count,
                    elapsed=elapsed, phase=phase,
                )
            )
        return True

    def raise_bound(self, bound: float) -> None:
        if not math.isfinite(bound):
            return
        value = math.ceil(bound - 1e-6)
        with self.lock:
            if self.bound is None or value > self.bound:
                self.bound = value

    def proven(self) -> bool:
        with self.lock:
            return (
                self.objective is not None and self.bound is not None
                and self.objective <= self.bound
            )

    def snapshot(self) -> tuple[int | None, list[list[int]] | None]:
        with self.lock:
            return self.objective, self.cells


def _make_callback(
    on_solution: Callable[[Any], None], stopper: _Stopper, errors: list[BaseException]
) -> Any:
    from ortools.sat.python import cp_model

    class SolutionCallback(cp_model.CpSolverSolutionCallback):
        def on_solution_callback(self) -> None:
            try:
                on_solution(self)
                if stopper.poll():
                    self.stop_search()
            except BaseException as exc:  # surfaced after Solve returns
                errors.append(exc)
                stopper.finish()
                self.stop_search()

    return SolutionCallback()


def _cover_penalties(prep: _Prepared, cells: list[list[int]]) -> list[tuple[int, int, int]]:
    """(penalty, day, shift) of every cover line that is not met exactly."""
    counts: dict[tuple[int, int], int] = defaultdict(int)
    for row in cells:
        for d, si in enumerate(row):
            if si >= 0:
                counts[(d, si)] += 1
    out = []
    for day, si, req, w_under, w_over in prep.cover:
        n = counts.get((day, si), 0)
        pen = max(0, req - n) * w_under + max(0, n - req) * w_over
        if pen:
            out.append((pen, day, si))
    return out


def _neighbourhood(
    kind: str, size: float, prep: _Prepared, cells: list[list[int]], rng: random.Random
) -> dict[int, set[int]]:
    """Cells to free: employee -> days."""
    n_emps, horizon = prep.n_emps, prep.horizon
    target = max(1, round(size))
    if kind == "cover":
        faults = _cover_penalties(prep, cells)
        if faults:
            _, day, si = rng.choices(faults, weights=[f[0] for f in faults])[0]
            length = min(horizon, rng.choice((7, 14, 21, 28)))
            start = min(max(0, day - rng.randrange(length)), horizon - length)
            eligible = [
                ei for ei in range(n_emps)
                if si in prep.allowed[ei] and day not in prep.days_off[ei]
            ]
            n = max(2, min(n_emps, target // length))
            chosen = set(rng.sample(eligible, min(len(eligible), n)))
            while len(chosen) < n:
                chosen.add(rng.randrange(n_emps))
            return {ei: set(range(start, start + length)) for ei in chosen}
        kind = "block"
    if kind == "employees":
        n = max(1, min(n_emps, round(target / horizon)))
        return {ei: set(range(horizon)) for ei in rng.sample(range(n_emps), n)}
    if kind == "window":
        length = min(horizon, max(2, round(target / n_emps)))
        start = rng.randrange(horizon - length + 1)
        return {ei: set(range(start, start + length)) for ei in range(n_emps)}
    # block: some employees over some weeks
    length = min(horizon, rng.choice((7, 14, 21, 28, 42, 56)))
    n = max(2, min(n_emps, round(target / length)))
    start = rng.randrange(horizon - length + 1)
    return {ei: set(range(start, start + length)) for ei in rng.sample(range(n_emps), n)}


NEIGHBOURHOODS: tuple[str, ...] = ("employees", "window", "block", "cover")


class _Bandit:
    """Picks the next neighbourhood kind: each is tried once, then with probability growing with
    its recent objective gain per second (every kind keeps a floor chance)."""

    def __init__(self, kinds: tuple[str, ...], rng: random.Random) -> None:
        self.kinds = kinds
        self.rng = rng
        self.rate: dict[str, float | None] = dict.fromkeys(kinds)

    def choose(self) -> str:
        untried = [k for k in self.kinds if self.rate[k] is None]
        if untried:
            return untried[0]
        rates = [self.rate[k] or 0.0 for k in self.kinds]
        top = max(rates)
        if top <= 0:
            return self.rng.choice(self.kinds)
        weights = [max(r, LNS_BANDIT_FLOOR * top) for r in rates]
        return self.rng.choices(self.kinds, weights=weights)[0]

    def reward(self, kind: str, gain: int, seconds: float) -> None:
        rate = max(0, gain) / max(seconds, 0.05)
        old = self.rate[kind]
        self.rate[kind] = rate if old is None else (1 - LNS_BANDIT_DECAY) * old + (
            LNS_BANDIT_DECAY * rate
        )


def solve(
    instance: CurtoisInstance,
    *,
    time_limit: float,
    workers: int = 2,
    seed: int = 0,
    on_progress: Callable[[CurtoisProgress], None] | None = None,
    should_abort: Callable[[], bool] | None = None,
    parameters: Mapping[str, Any] | None = None,
    use_lns: bool = True,
) -> CurtoisResult:
    """Solve ``instance`` within ``time_limit`` seconds (model building included).

    With ``workers`` ≥ 2 and ``use_lns``, the full model runs on ``workers − 1`` threads while the
    neighbourhood search runs on one; with one worker they run one after the other.
    ``on_progress`` is called at each improving roster (possibly from a solver thread);
    ``should_abort`` is polled at each solution and every ``ABORT_POLL_SECONDS`` by a timer
    thread, so an abort is honoured even before the first solution (the best roster so far is
    returned). ``parameters`` overrides CP-SAT parameters of the full model.
    """
    if not (math.isfinite(time_limit) and time_limit > 0):
        raise InvalidInput(FieldError("time_limit", f"must be a positive number, got {time_limit}"))
    if workers < 1:
        raise InvalidInput(FieldError("workers", f"must be ≥ 1, got {workers}"))
    from ortools.sat.python import cp_model

    started = time.monotonic()
    deadline = started + time_limit
    prep = _prepare(instance)
    inc = _Incumbent(started, on_progress)
    stopper = _Stopper(should_abort)
    errors: list[BaseException] = []
    estimated_vars = sum(
        len(prep.allowed[e]) * (prep.horizon - len(prep.days_off[e])) for e in range(prep.n_emps)
    )
    large = estimated_vars > LARGE_MODEL_VARS
    concurrent = use_lns and workers >= 2
    full_workers = workers - 1 if concurrent else workers
    full_params: dict[str, Any] = dict(
        FULL_SINGLE_PARAMETERS if full_workers == 1 else FULL_MULTI_PARAMETERS
    )
    full_params.update(parameters or {})
    outcome: dict[str, Any] = {"full_status": None, "build_time": None, "steps": 0, "impr": 0}

    def make_solver(
        limit: float, n_workers: int, solver_seed: int, extra: Mapping[str, Any]
    ) -> Any:
        solver = cp_model.CpSolver()
        solver.parameters.max_time_in_seconds = max(0.01, limit)
        solver.parameters.num_workers = n_workers
        solver.parameters.random_seed = solver_seed
        solver.parameters.log_search_progress = False
        for key, value in extra.items():
            if isinstance(value, list | tuple):
                getattr(solver.parameters, key).extend(value)
            else:
                setattr(solver.parameters, key, value)
        return solver

    def check_proven() -> None:
        if inc.proven():
            stopper.finish()

    def solve_whole(
        automaton: bool, n_workers: int, params: Mapping[str, Any], phase: str,
        until: float | None, ready: Callable[[], bool] | None = None,
    ) -> int:
        """Solve the whole model; stop at ``until`` once ``ready()`` holds (by default: once a
        roster exists). Returns the CP-SAT status."""
        built = _build_model(prep, automaton=automaton, hint=inc.snapshot()[1])
        if outcome["build_time"] is None:
            outcome["build_time"] = time.monotonic() - started
        x = built.x

        def on_solution(cb: Any) -> None:
            objective = round(cb.objective_value)
            inc.raise_bound(cb.best_objective_bound)
            if inc.better(objective):
                inc.offer(objective, _cells_from_values(cb.response_proto.solution, x, prep), phase)
            check_proven()

        solver = make_solver(deadline - time.monotonic(), n_workers, seed, params)

        def on_bound(bound: float) -> None:
            inc.raise_bound(bound)
            check_proven()

        solver.best_bound_callback = on_bound
        callback = _make_callback(on_solution, stopper, errors)
        stopper.attach(solver, until, ready or (lambda: inc.objective is not None))
        try:
            if stopper.finished.is_set() or deadline - time.monotonic() <= 0:
                return int(cp_model.UNKNOWN)
            status = int(solver.solve(built.model, callback))
        finally:
            stopper.detach(solver)
        if status in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            objective = round(solver.objective_value)
            if inc.better(objective):
                values = solver.response_proto.solution
                inc.offer(objective, _cells_from_values(values, x, prep), phase)
            if status == cp_model.OPTIMAL:
                inc.raise_bound(objective)
            else:
                inc.raise_bound(solver.best_objective_bound)
            check_proven()
        elif status == cp_model.UNKNOWN and not stopper.finished.is_set():
            inc.raise_bound(solver.best_objective_bound)
        return status

    def run_full(until: float | None) -> None:
        try:
            outcome["full_status"] = solve_whole(True, full_workers, full_params, "full", until)
            if outcome["full_status"] in (cp_model.INFEASIBLE, cp_model.MODEL_INVALID):
                stopper.finish()
        except BaseException as exc:
            errors.append(exc)
            stopper.finish()

    def bound_is_poor() -> bool:
        objective, bound = inc.objective, inc.bound
        if objective is None:
            return False
        return bound is None or bound < (1 - FULL_GIVE_UP_GAP) * objective

    def run_full_then_lns() -> None:
        """The full model beside the neighbourhood search; if its bound is still poor when its
        share of the time is spent, its workers join the neighbourhood search instead."""
        try:
            give_up = started + FULL_GIVE_UP_SHARE * time_limit
            status = solve_whole(True, full_workers, full_params, "full", give_up, bound_is_poor)
            outcome["full_status"] = status
            if status in (cp_model.INFEASIBLE, cp_model.MODEL_INVALID):
                stopper.finish()
            elif status != cp_model.OPTIMAL and deadline - time.monotonic() > 0.5:
                run_lns(full_workers, seed + 1)
        except BaseException as exc:
            errors.append(exc)
            stopper.finish()

    def run_lns(n_workers: int, lns_seed: int) -> None:
        rng = random.Random(lns_seed)
        horizon_cells = prep.n_emps * prep.horizon
        vars_per_cell = max(1.0, estimated_vars / max(1, horizon_cells))
        size = float(
            min(
                horizon_cells,
                LNS_INITIAL_EMPLOYEES * prep.horizon,
                LNS_INITIAL_VARS / vars_per_cell,
            )
        )
        min_size = min(size, float(min(horizon_cells, LNS_MIN_EMPLOYEES * prep.horizon)))
        cur_obj, cells = inc.snapshot()
        bandit = _Bandit(NEIGHBOURHOODS, rng)
        while not stopper.finished.is_set() and not errors:
            if deadline - time.monotonic() < 0.05:
                break
            obj, best_cells = inc.snapshot()
            if best_cells is None:
                break
            if cur_obj is None or cells is None or (obj is not None and obj < cur_obj):
                cur_obj, cells = obj, best_cells
            assert cur_obj is not None and cells is not None
            kind = bandit.choose()
            step_started, step_obj = time.monotonic(), cur_obj
            free = _neighbourhood(kind, size, prep, cells, rng)
            sub = _build_model(
                prep, free=free, current=cells, automaton=LNS_AUTOMATON, hint=cells
            )
            solver = make_solver(
                min(LNS_STEP_SECONDS, deadline - time.monotonic()),
                n_workers, rng.randrange(1 << 30), LNS_SUB_PARAMETERS,
            )
            stopper.attach(solver)
            try:
                sub_status = solver.solve(sub.model)
            finally:
                stopper.detach(solver)
            with inc.lock:
                outcome["steps"] += 1
            if sub_status in (cp_model.OPTIMAL, cp_model.FEASIBLE):
                objective = round(solver.objective_value)
                if objective <= cur_obj:
                    values = solver.response_proto.solution
                    new_cells = _cells_from_values(values, sub.x, prep, cells, free)
                    if objective < cur_obj and inc.offer(objective, new_cells, "lns"):
                        with inc.lock:
                            outcome["impr"] += 1
                    cur_obj, cells = objective, new_cells
                    check_proven()
            bandit.reward(kind, step_obj - cur_obj, time.monotonic() - step_started)
            if sub_status == cp_model.OPTIMAL:
                size = min(float(horizon_cells), size * LNS_GROW)
            else:
                size = max(min_size, size * LNS_SHRINK)

    def construct(n_workers: int) -> None:
        """A first roster for instances too large for the whole model: employees in small
        groups, each solved with the groups before it fixed (and the later ones still empty,
        which the sub-model does not constrain). The last sub-model sees every employee, so its
        objective is the roster's."""
        outcome["build_time"] = time.monotonic() - started
        per_employee = max(1, estimated_vars // max(1, prep.n_emps))
        group = max(1, CONSTRUCT_GROUP_VARS // per_employee)
        order = list(range(prep.n_emps))
        chunks = [order[i : i + group] for i in range(0, len(order), group)]
        cells = [[-1] * prep.horizon for _ in range(prep.n_emps)]
        objective = None
        for k, chunk in enumerate(chunks):
            if stopper.finished.is_set():
                return
            remaining = deadline - time.monotonic()
            free = {ei: range(prep.horizon) for ei in chunk}
            sub = _build_model(prep, free=free, current=cells, automaton=False)
            share = 0.8 * (deadline - time.monotonic()) / (len(chunks) - k)
            solver = make_solver(max(CONSTRUCT_MIN_SECONDS, remaining), n_workers, seed, {})
            found = threading.Event()

            def on_found(_: Any, found: threading.Event = found) -> None:
                found.set()

            callback = _make_callback(on_found, stopper, errors)
            stopper.attach(solver, time.monotonic() + share, found.is_set)
            try:
                status = solver.solve(sub.model, callback)
            finally:
                stopper.detach(solver)
            if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
                if status == cp_model.INFEASIBLE:
                    outcome["full_status"] = status
                    stopper.finish()
                return
            objective = round(solver.objective_value)
            cells = _cells_from_values(solver.response_proto.solution, sub.x, prep, cells, free)
        if objective is not None:
            inc.offer(objective, cells, "initial")

    stopper.start()
    try:
        if large:
            construct(workers)
            if not errors and use_lns:
                run_lns(workers, seed)
        elif concurrent:
            # A first roster from the lighter model (no automaton) on all workers, then the full
            # model and the neighbourhood search side by side.
            init_until = started + INITIAL_SHARE * time_limit
            outcome["full_status"] = solve_whole(False, workers, {}, "initial", init_until)
            if not (errors or stopper.finished.is_set() or inc.objective is None):
                full_thread = threading.Thread(target=run_full_then_lns, name="curtois-full")
                full_thread.start()
                try:
                    run_lns(1, seed)
                finally:
                    stopper.finish()  # the search ends with the neighbourhood search
                    full_thread.join()
        else:
            run_full(started + FULL_MODEL_SHARE * time_limit if use_lns else None)
            if use_lns and not errors:
                run_lns(workers, seed)
    finally:
        stopper.close()
    if errors:
        raise errors[0]

    objective, cells = inc.snapshot()
    bound = inc.bound
    roster: dict[tuple[str, int], str] = {}
    gap: float | None = None
    full_status = outcome["full_status"]
    if cells is not None and objective is not None:
        emp_ids, shift_ids = instance.employee_ids, instance.shift_ids
        for ei, row in enumerate(cells):
            for d, si in enumerate(row):
                if si >= 0:
                    roster[(emp_ids[ei], d)] = shift_ids[si]
        if bound is not None and objective <= bound:
            status_name, bound = "OPTIMAL", objective
        else:
            status_name = "FEASIBLE"
        if bound is not None:
            gap = max(0.0, (objective - bound) / max(1, abs(objective)))
    elif full_status is not None and full_status in (cp_model.INFEASIBLE, cp_model.MODEL_INVALID):
        status_name = "INFEASIBLE" if full_status == cp_model.INFEASIBLE else "MODEL_INVALID"
    else:
        status_name = "UNKNOWN"
    return CurtoisResult(
        instance=instance.name,
        status=status_name,
        roster=roster,
        objective=objective,
        best_bound=bound,
        gap=gap,
        time_to_first=inc.first,
        solutions_found=inc.count,
        wall_time=time.monotonic() - started,
        build_time=outcome["build_time"] or 0.0,
        aborted=stopper.aborted.is_set(),
        workers=workers,
        seed=seed,
        lns_steps=outcome["steps"],
        lns_improvements=outcome["impr"],
        parameters=full_params,
    )


# --------------------------------------------------------------------------- roster files


def write_roster(result: CurtoisResult | Roster, path: str | os.PathLike[str]) -> None:
    """Write ``employee_id<TAB>day<TAB>shift_id`` lines (no line for a day off) atomically."""
    roster = result.roster if isinstance(result, CurtoisResult) else result
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            for (eid, day), sid in roster.items():
                fh.write(f"{eid}\t{day}\t{sid}\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def read_roster(path: str | os.PathLike[str]) -> list[tuple[str, int, str]]:
    """Read a roster file written by :func:`write_roster` as (employee, day, shift) triples."""
    p = Path(path)
    out: list[tuple[str, int, str]] = []
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(
            FieldError(str(p), f"cannot read roster: {exc}"), source=str(p)
        ) from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != 3 or not parts[1].strip().isdigit():
            raise InvalidInput(
                FieldError(f"line {number}", "expected employee_id<TAB>day<TAB>shift_id"),
                source=str(p),
            )
        out.append((parts[0], int(parts[1]), parts[2].strip()))
    return out
