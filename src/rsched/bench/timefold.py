"""Timefold Solver employee-scheduling demo instances, solved with rsched's engine.

The instances and the exact score are described in ``FORMAT.md`` next to them
(``/work/shared/benchmarks/timefold-demo``). Four independent pieces:

* :func:`read_instance` / :func:`parse_instance` read the JSON exchange format into frozen
  records; a file that is not of this format is refused with
  :class:`~rsched.domain.errors.InvalidInput` naming every missing or wrong field.
* :func:`score` is the independent scorer: Timefold's constraints C1..C8 computed from the
  assignment alone (no model, no solver), including the day-overlap quirk ``W(s, d)`` and
  the load-balance unfairness rounded to 6 significant digits as Java's ``BigDecimal`` does.
* :func:`to_program` maps an instance onto rsched's domain (employees → residents with
  their skills as tags, shifts → slots needing exactly one person, of a shift type per
  start, length and skill that requires the skill, unavailable dates → blocking absences
  over the day), so the engine's :func:`~rsched.rules.access.candidate_slots` decides who
  may work what; :func:`hard_constraints` adds to the engine's COVERAGE and NO_OVERLAP
  rows the two Timefold rules rsched's rules lack (10 h rest, one shift per start date).
* :func:`solve` runs CP-SAT (:func:`~rsched.solver.cpsat.solve_cpsat`) on a short series
  of models and re-scores every schedule it sees with :func:`score`.

The objective
-------------
Timefold's soft score is ``D − Un − U``: desired-day minutes ``D`` (a reward), undesired-day
minutes ``Un`` and the unfairness ``U = round6(sqrt(Σc² − S²/n))``, where ``c_e`` is the
number of shifts of employee ``e``. Every shift is staffed, so ``S`` is fixed and ``U`` is a
function of the integer ``Q = Σc²`` alone, increasing but concave: no single weight
between minutes and ``Q`` orders schedules as the score does. Three facts give an exact
method that stays easy for CP-SAT:

* an upper bound: ``soft ≤ D̄ − U(q_min)`` (:func:`score_bounds`), where ``D̄`` sums per
  desired date the heaviest set of compatible shifts touching it and ``q_min`` is the least
  Σc² the counts allow;
* ``Q = q_min`` holds exactly when every count lies in a band (``⌊S/n⌋..⌈S/n⌉`` when
  nobody is capped), which is linear in the assignment variables alone;
* ``U`` takes 6 significant digits, so ``K = 10^p`` makes every ``K·U(q)`` an integer.

Stage *ideal* asks CP-SAT for any schedule at the bound (bands, no undesired shift, every
desired date at its cap); one found is optimal, and on both demo instances one exists.
Stage *balanced* keeps the bands (``U`` fixed at ``U(q_min)``) and minimises
``Un + (D̄ − D)``: "desired minutes missed" carries ``D̄`` as its constant, so the term is
never negative. Stage *exact* minimises the whole ``K·(Un + D̄ − D) + K·U(Q)`` with
thermometer encodings (see :func:`exact_spec`); its objective equals ``K·(D̄ − soft)``
inside a window of Σc² values and lies below it above, so the solver's bound is a valid
bound and a proved optimum inside the window is the true optimum. The reported score is
always the one :func:`score` computes, never a model's.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import json
import math
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Context, Decimal, localcontext
from pathlib import Path
from typing import Any

from rsched.domain import (
    Absence,
    Period,
    Person,
    PersonKind,
    Program,
    ProgramData,
    ShiftKind,
    ShiftType,
    Slot,
)
from rsched.domain.errors import FieldError, InvalidInput
from rsched.rules.base import Aux, Linear, ModelContext, Penalty, Var, X

REST = timedelta(hours=10)
MAX_SHIFT = timedelta(hours=48)
"""The engine's shift types last at most 48 h; longer shifts are refused by the reader."""
BALANCE_WINDOW = 1000
"""How many values of Σc² above the least possible one the exact model costs exactly."""
_NS_PER_MINUTE = 60 * 10**9
_NS_PER_DAY = 86_400 * 10**9
_MAX_REPORTED_ERRORS = 50
_UNFAIRNESS_CONTEXT = Context(prec=6, rounding=ROUND_HALF_EVEN)

CONSTRAINTS: Mapping[str, str] = {
    "C1": "Missing required skill",
    "C2": "Overlapping shift",
    "C3": "At least 10 hours between 2 shifts",
    "C4": "Max one shift per day",
    "C5": "Unavailable employee",
    "C6": "Undesired day for employee",
    "C7": "Desired day for employee",
    "C8": "Balance employee shift assignments",
}


# --------------------------------------------------------------------------- records


@dataclass(frozen=True, slots=True, kw_only=True)
class Employee:
    name: str
    skills: frozenset[str]
    unavailable: frozenset[date] = frozenset()
    undesired: frozenset[date] = frozenset()
    desired: frozenset[date] = frozenset()


@dataclass(frozen=True, slots=True, kw_only=True)
class Shift:
    id: str
    start: datetime
    """Naive local datetime, as in the file."""
    end: datetime
    required_skill: str
    location: str = ""

    @property
    def days(self) -> frozenset[date]:
        """The dates a day-based constraint (C5..C7) matches: the start's and the end's."""
        return frozenset((self.start.date(), self.end.date()))


@dataclass(frozen=True, slots=True, kw_only=True)
class Instance:
    name: str
    employees: tuple[Employee, ...]
    shifts: tuple[Shift, ...]
    initial: Mapping[str, str] = field(default_factory=dict)
    """shift id → employee name for the shifts the file already assigns."""
    meta: Mapping[str, Any] = field(default_factory=dict)

    def employee(self, name: str) -> Employee:
        return self._employees[name]

    def shift(self, shift_id: str) -> Shift:
        return self._shifts[shift_id]

    @property
    def _employees(self) -> dict[str, Employee]:
        return {e.name: e for e in self.employees}

    @property
    def _shifts(self) -> dict[str, Shift]:
        return {s.id: s for s in self.shifts}


# --------------------------------------------------------------------------- reading


def read_instance(path: str | Path) -> Instance:
    """Read an instance file; anything that is not of the format raises ``InvalidInput``."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(FieldError(str(p), f"cannot read the file: {exc}")) from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(
            FieldError("", f"not JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"),
            source=str(p),
        ) from None
    return parse_instance(doc, name=p.stem, source=str(p))


def _iso_date(value: object, path: str, errors: list[FieldError]) -> date | None:
    if not isinstance(value, str):
        errors.append(FieldError(path, f"must be an ISO date string, got {value!r}"))
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        errors.append(FieldError(path, f"not an ISO date: {value!r}"))
        return None


def _iso_datetime(value: object, path: str, errors: list[FieldError]) -> datetime | None:
    if not isinstance(value, str):
        errors.append(FieldError(path, f"must be an ISO datetime string, got {value!r}"))
        return None
    try:
        out = datetime.fromisoformat(value)
    except ValueError:
        errors.append(FieldError(path, f"not an ISO datetime: {value!r}"))
        return None
    if out.tzinfo is not None:
        errors.append(FieldError(path, f"must be a local datetime without offset: {value!r}"))
        return None
    return out


def _string(obj: Mapping[str, Any], key: str, path: str, errors: list[FieldError]) -> str | None:
    if key not in obj:
        errors.append(FieldError(f"{path}.{key}", "missing"))
        return None
    value = obj[key]
    if not isinstance(value, str) or not value:
        errors.append(FieldError(f"{path}.{key}", f"must be a non-empty string, got {value!r}"))
        return None
    return value


def _parse_employee(raw: object, path: str, errors: list[FieldError]) -> Employee | None:
    if not isinstance(raw, dict):
        errors.append(FieldError(path, "must be an object"))
        return None
    before = len(errors)
    name = _string(raw, "name", path, errors)
    skills: set[str] = set()
    if "skills" not in raw:
        errors.append(FieldError(f"{path}.skills", "missing"))
    elif not isinstance(raw["skills"], list):
        errors.append(FieldError(f"{path}.skills", "must be a list of skill names"))
    else:
        for i, sk in enumerate(raw["skills"]):
            if isinstance(sk, str) and sk:
                skills.add(sk)
            else:
                errors.append(FieldError(f"{path}.skills[{i}]", f"must be a string, got {sk!r}"))
    dates: dict[str, frozenset[date]] = {}
    for key in ("unavailableDates", "undesiredDates", "desiredDates"):
        value = raw.get(key, [])
        if not isinstance(value, list):
            errors.append(FieldError(f"{path}.{key}", "must be a list of ISO dates"))
            dates[key] = frozenset()
            continue
        parsed = [_iso_date(v, f"{path}.{key}[{i}]", errors) for i, v in enumerate(value)]
        dates[key] = frozenset(d for d in parsed if d is not None)
    if len(errors) > before or name is None:
        return None
    return Employee(
        name=name,
        skills=frozenset(skills),
        unavailable=dates["unavailableDates"],
        undesired=dates["undesiredDates"],
        desired=dates["desiredDates"],
    )


def _parse_shift(raw: object, path: str, errors: list[FieldError]) -> Shift | None:
    if not isinstance(raw, dict):
        errors.append(FieldError(path, "must be an object"))
        return None
    before = len(errors)
    shift_id = raw.get("id")
    if "id" not in raw:
        errors.append(FieldError(f"{path}.id", "missing"))
    elif isinstance(shift_id, int) and not isinstance(shift_id, bool):
        shift_id = str(shift_id)
    elif not isinstance(shift_id, str) or not shift_id:
        errors.append(FieldError(f"{path}.id", f"must be a non-empty string, got {shift_id!r}"))
    start = end = None
    for key in ("start", "end"):
        if key not in raw:
            errors.append(FieldError(f"{path}.{key}", "missing"))
        elif key == "start":
            start = _iso_datetime(raw[key], f"{path}.start", errors)
        else:
            end = _iso_datetime(raw[key], f"{path}.end", errors)
    skill = _string(raw, "requiredSkill", path, errors)
    location = raw.get("location", "")
    if not isinstance(location, str):
        errors.append(FieldError(f"{path}.location", f"must be a string, got {location!r}"))
    if start is not None and end is not None:
        if end <= start:
            errors.append(FieldError(f"{path}.end", "must be after start"))
        elif end - start > MAX_SHIFT:
            errors.append(FieldError(f"{path}.end", "shifts longer than 48 h are not supported"))
    if len(errors) > before or start is None or end is None or skill is None:
        return None
    return Shift(
        id=str(shift_id),
        start=start,
        end=end,
        required_skill=skill,
        location=location if isinstance(location, str) else "",
    )


def parse_instance(doc: object, *, name: str = "instance", source: str = "") -> Instance:
    """The instance in ``doc`` (a parsed JSON document); every problem is reported at once."""
    errors: list[FieldError] = []
    if not isinstance(doc, dict):
        raise InvalidInput(
            FieldError("", "must be a JSON object with 'employees' and 'shifts'"), source=source
        )
    for key in ("employees", "shifts"):
        if key not in doc:
            errors.append(FieldError(key, "missing (not a Timefold employee-scheduling file)"))
        elif not isinstance(doc[key], list):
            errors.append(FieldError(key, "must be a list"))
    if errors:
        raise InvalidInput(errors, source=source)
    employees: list[Employee] = []
    seen_names: set[str] = set()
    for i, raw in enumerate(doc["employees"]):
        emp = _parse_employee(raw, f"employees[{i}]", errors)
        if emp is None:
            continue
        if emp.name in seen_names:
            errors.append(FieldError(f"employees[{i}].name", f"duplicate name {emp.name!r}"))
            continue
        seen_names.add(emp.name)
        employees.append(emp)
    shifts: list[Shift] = []
    seen_ids: set[str] = set()
    initial: dict[str, str] = {}
    for i, raw in enumerate(doc["shifts"]):
        sh = _parse_shift(raw, f"shifts[{i}]", errors)
        if sh is None:
            continue
        if sh.id in seen_ids:
            errors.append(FieldError(f"shifts[{i}].id", f"duplicate id {sh.id!r}"))
            continue
        seen_ids.add(sh.id)
        shifts.append(sh)
        who = raw.get("employee") if isinstance(raw, dict) else None
        if who is None:
            continue
        if isinstance(who, dict):  # the REST model's full employee object
            who = who.get("name")
        if not isinstance(who, str) or who not in seen_names:
            errors.append(FieldError(f"shifts[{i}].employee", f"unknown employee {who!r}"))
            continue
        initial[sh.id] = who
    if not employees and not errors:
        errors.append(FieldError("employees", "must not be empty"))
    if errors:
        shown = errors[:_MAX_REPORTED_ERRORS]
        if len(errors) > len(shown):
            shown.append(FieldError("", f"… and {len(errors) - len(shown)} more error(s)"))
        raise InvalidInput(shown, source=source)
    meta = doc.get("meta")
    return Instance(
        name=name,
        employees=tuple(employees),
        shifts=tuple(shifts),
        initial=initial,
        meta=meta if isinstance(meta, dict) else {},
    )


# --------------------------------------------------------------------------- the exact score


def _ns(moment: datetime) -> int:
    """Nanoseconds since 0001-01-01 00:00 of a naive datetime (exact integer arithmetic)."""
    seconds = moment.toordinal() * 86_400 + moment.hour * 3600 + moment.minute * 60 + moment.second
    return (seconds * 10**6 + moment.microsecond) * 1000


def day_minutes(shift: Shift, day: date) -> int:
    """``W(s, d)`` of FORMAT.md: whole minutes of ``shift`` in ``[d 00:00, d 23:59:59.999999999]``.

    The day window ends one nanosecond before midnight, so a shift running to or past
    midnight counts one minute less on its start day (an N shift: 119 and 360)."""
    day_start = day.toordinal() * _NS_PER_DAY
    lo = max(_ns(shift.start), day_start)
    hi = min(_ns(shift.end), day_start + _NS_PER_DAY - 1)
    return max(0, hi - lo) // _NS_PER_MINUTE


def day_weight(shift: Shift, days: frozenset[date]) -> int:
    """Σ W(s, d) over the dates ``d`` of ``days`` that are the shift's start or end date."""
    return sum(day_minutes(shift, d) for d in shift.days & days)


def _java_decimal_of_double(value: float) -> Decimal:
    """``BigDecimal.valueOf(double)``: the digits and scale of Java's ``Double.toString``.

    Java prints the shortest digits that round-trip (as Python's ``repr``), in plain
    notation with at least one fractional digit for 1e-3 ≤ |x| < 1e7, otherwise as
    ``d.ddd…E±n`` (again at least one fractional digit); the scale follows the text."""
    if value == 0:
        return Decimal("0.0")
    shortest = Decimal(repr(value)).normalize()
    sign, digits, exponent = shortest.as_tuple()
    assert isinstance(exponent, int)
    if 1e-3 <= abs(value) < 1e7:
        scale = max(1, -exponent)
        return shortest.quantize(Decimal(1).scaleb(-scale))
    mantissa_fraction = max(1, len(digits) - 1)
    adjusted = shortest.adjusted()
    padded = digits + (0,) * (mantissa_fraction + 1 - len(digits))
    return Decimal((sign, padded, adjusted - mantissa_fraction))


def _java_sqrt6(operand: Decimal) -> Decimal:
    """``operand.sqrt(new MathContext(6, HALF_EVEN))`` with Java's choice of scale.

    The value is the correctly rounded 6-digit root (Python's ``Decimal.sqrt`` also rounds
    correctly, half-even). Java then prefers the scale ``operand.scale() / 2`` (integer
    division): trailing zeros are stripped and zeros appended again up to that scale,
    never beyond 6 significant digits."""
    exponent = operand.as_tuple().exponent
    assert isinstance(exponent, int)
    preferred = int(-exponent / 2)  # Java's int division truncates toward zero
    if operand == 0:
        return Decimal(0).scaleb(-preferred)
    root = operand.sqrt(_UNFAIRNESS_CONTEXT)
    stripped = root.normalize()
    stripped_exp = stripped.as_tuple().exponent
    assert isinstance(stripped_exp, int)
    widest = -(stripped.adjusted() - (_UNFAIRNESS_CONTEXT.prec - 1))  # scale at 6 digits
    scale = min(max(-stripped_exp, preferred), widest)
    return stripped.quantize(Decimal(1).scaleb(-scale))


def unfairness(counts: Sequence[int]) -> Decimal:
    """Timefold's ``LoadBalance.unfairness()`` for per-employee shift counts ``counts``:
    ``sqrt(Σc² − S²/n)`` with the inner value in IEEE double and the root rounded to 6
    significant digits (FORMAT.md, U)."""
    n = len(counts)
    if n == 0:
        return Decimal(0)
    total = sum(counts)
    squares = sum(c * c for c in counts)
    if n == 1:
        return _java_sqrt6(Decimal(squares - total * total))
    tmp = float(-(total * total)) / float(n) + float(squares)
    return _java_sqrt6(_java_decimal_of_double(max(0.0, tmp)))


@dataclass(frozen=True, slots=True, kw_only=True)
class ScoreParts:
    """Each constraint's total weight (C7 as a positive reward) and the per-employee counts."""

    totals: Mapping[str, int | Decimal]
    counts: Mapping[str, int]
    unassigned: int

    @property
    def hard(self) -> int:
        return -sum(int(self.totals[c]) for c in ("C1", "C2", "C3", "C4", "C5"))

    @property
    def soft(self) -> Decimal:
        with localcontext() as ctx:
            ctx.prec = 60
            out = Decimal(int(self.totals["C7"])) - Decimal(int(self.totals["C6"]))
            out -= Decimal(self.totals["C8"])
        return out + 0 if out else abs(out)  # never a negative zero


def score_parts(instance: Instance, assignment: Mapping[str, str | None]) -> ScoreParts:
    """Timefold's constraints C1..C8 (FORMAT.md, section 2) for ``assignment``.

    ``assignment`` maps shift id → employee name; a shift that is missing or maps to None
    is unassigned (ignored, as Timefold's ``for_each`` skips it). An unknown shift id or
    employee name is an input error."""
    employees = {e.name: e for e in instance.employees}
    shifts = {s.id: s for s in instance.shifts}
    errors = [
        FieldError(f"assignment.{sid}", "unknown shift") for sid in assignment if sid not in shifts
    ] + [
        FieldError(f"assignment.{sid}", f"unknown employee {name!r}")
        for sid, name in assignment.items()
        if name is not None and name not in employees
    ]
    if errors:
        raise InvalidInput(errors[:_MAX_REPORTED_ERRORS])
    mine: dict[str, list[Shift]] = defaultdict(list)
    for s in instance.shifts:
        name = assignment.get(s.id)
        if name is not None:
            mine[name].append(s)
    totals: dict[str, int | Decimal] = dict.fromkeys(("C1", "C2", "C3", "C4", "C5", "C6", "C7"), 0)
    c1 = c2 = c3 = c4 = c5 = c6 = c7 = 0
    for name, items in mine.items():
        emp = employees[name]
        items.sort(key=lambda s: (s.start, s.end, s.id))
        starts = [_ns(s.start) for s in items]
        ends = [_ns(s.end) for s in items]
        per_date: dict[date, int] = defaultdict(int)
        for i, s in enumerate(items):
            if s.required_skill not in emp.skills:
                c1 += 1
            per_date[s.start.date()] += 1
            c5 += day_weight(s, emp.unavailable)
            c6 += day_weight(s, emp.undesired)
            c7 += day_weight(s, emp.desired)
            # C2: later-starting shifts that begin before this one ends (each pair once;
            # equal starts are ordered by the sort, so the pair is still seen once).
            for j in range(i + 1, len(items)):
                if starts[j] >= ends[i]:
                    break
                overlap = min(ends[i], ends[j]) - max(starts[i], starts[j])
                c2 += overlap // _NS_PER_MINUTE
            # C3: ordered pairs (s, b) with s.end ≤ b.start and gap < 10 h.
            lo = bisect.bisect_left(starts, ends[i])
            hi = bisect.bisect_left(starts, ends[i] + REST // timedelta(microseconds=1) * 1000)
            for j in range(lo, hi):
                gap_minutes = (starts[j] - ends[i]) // _NS_PER_MINUTE
                c3 += 600 - gap_minutes
        c4 += sum(k * (k - 1) // 2 for k in per_date.values())
    counts = {e.name: len(mine.get(e.name, ())) for e in instance.employees}
    totals.update(C1=c1, C2=c2, C3=c3, C4=c4, C5=c5, C6=c6, C7=c7)
    totals["C8"] = unfairness(list(counts.values()))
    unassigned = sum(1 for s in instance.shifts if assignment.get(s.id) is None)
    return ScoreParts(totals=totals, counts=counts, unassigned=unassigned)


def score(instance: Instance, assignment: Mapping[str, str | None]) -> tuple[int, Decimal]:
    """(hard, soft) exactly as Timefold scores ``assignment`` (see :func:`score_parts`)."""
    parts = score_parts(instance, assignment)
    return parts.hard, parts.soft


def format_score(hard: int, soft: Decimal) -> str:
    """Timefold's ``HardSoftDecimalScore`` text, e.g. ``0hard/2878.28730soft`` (plain digits,
    the soft part keeping the scale of the rounded unfairness)."""
    return f"{hard}hard/{format(soft, 'f')}soft"


# --------------------------------------------------------------------------- the engine's view


def _aware(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC)


def shift_type_code(shift: Shift) -> str:
    minutes = int((shift.end - shift.start) / timedelta(minutes=1))
    return f"{shift.required_skill}@{shift.start:%H:%M}+{minutes}m"


def to_program(instance: Instance) -> ProgramData:
    """The instance as rsched domain records (local clock read as UTC: no DST in the file).

    Employees become residents (one PGY level for all, so only tags decide eligibility)
    whose tags are their skills; each shift a slot of min = max = 1 whose shift type (one
    per start time, length and skill) requires its skill; each unavailable date a blocking
    absence over that whole day. The engine's AVAILABILITY leaves out every slot touching
    the day, a superset of what C5 punishes (a shift whose start or end date is the day
    and with W > 0), equal on the demo data."""
    if instance.shifts:
        first = min(s.start.date() for s in instance.shifts)
        last = max(s.end.date() for s in instance.shifts)
    else:
        first = last = date(2025, 1, 6)
    types: dict[str, ShiftType] = {}
    slots: list[Slot] = []
    for s in instance.shifts:
        code = shift_type_code(s)
        if code not in types:
            types[code] = ShiftType(
                code=code,
                name=code,
                start=s.start.time(),
                duration_minutes=int((s.end - s.start) / timedelta(minutes=1)) or 1,
                kind=ShiftKind.INPATIENT,
                required_tags=frozenset({s.required_skill}),
            )
        slots.append(
            Slot(
                id=s.id,
                shift=code,
                kind=ShiftKind.INPATIENT,
                start=_aware(s.start),
                end=_aware(s.end),
                min_staff=1,
                max_staff=1,
            )
        )
    people = tuple(
        Person(id=e.name, name=e.name, kind=PersonKind.RESIDENT, pgy=1, tags=e.skills)
        for e in instance.employees
    )
    absences = tuple(
        Absence(
            id=f"{e.name} unavailable {d.isoformat()}",
            person_id=e.name,
            start=datetime.combine(d, datetime.min.time(), tzinfo=UTC),
            end=datetime.combine(d + timedelta(days=1), datetime.min.time(), tzinfo=UTC),
            leave_type="unavailable",
            blocking=True,
        )
        for e in instance.employees
        for d in sorted(e.unavailable)
    )
    program = Program(
        id=f"timefold-{instance.name}",
        name=f"Timefold demo {instance.name}",
        timezone="UTC",
        academic_year_start=date(first.year if first.month >= 7 else first.year - 1, 7, 1),
    )
    return ProgramData(
        program=program,
        start=first,
        end=last,
        periods=(Period(start=first, end=last),),
        people=people,
        slots=tuple(slots),
        shift_types=tuple(types.values()),
        absences=absences,
    )


def _conflicts(a: Shift, b: Shift) -> bool:
    """Whether one employee working both ``a`` and ``b`` breaks a hard constraint: the
    same start date (C4), an overlap of a minute or more (C2 counts whole minutes) or a
    gap under 10 h (C3)."""
    if a.start.date() == b.start.date():
        return True
    overlap = min(a.end, b.end) - max(a.start, b.start)
    if overlap > timedelta(0):
        return overlap >= timedelta(minutes=1)
    first, second = (a, b) if a.end <= b.start else (b, a)
    return second.start - first.end < REST


def _best_independent(items: Sequence[tuple[Shift, int]]) -> int:
    """Largest total weight of pairwise non-conflicting shifts (tiny sets: brute force)."""
    best = 0

    def walk(i: int, chosen: list[Shift], total: int) -> None:
        nonlocal best
        best = max(best, total)
        for j in range(i, len(items)):
            s, w = items[j]
            if all(not _conflicts(s, c) for c in chosen):
                chosen.append(s)
                walk(j + 1, chosen, total + w)
                chosen.pop()

    walk(0, [], 0)
    return best


def possible_pairs(instance: Instance) -> dict[str, list[str]]:
    """employee → the shifts a 0-hard schedule may give them: the skill is held (C1) and
    no unavailable date has W > 0 (C5). The engine's candidates are a subset of these."""
    out: dict[str, list[str]] = {}
    for e in instance.employees:
        out[e.name] = [
            s.id
            for s in instance.shifts
            if s.required_skill in e.skills and day_weight(s, e.unavailable) == 0
        ]
    return out


def desired_caps(
    instance: Instance, pairs: Mapping[str, Sequence[str]]
) -> dict[tuple[str, date], list[tuple[Shift, int, int]]]:
    """(employee, desired date) → the most desired minutes any hard-feasible schedule can
    grant there, with the shifts touching the date: the heaviest set of the employee's
    pairwise compatible shifts whose start or end date it is (480 on the demo data).
    Each value is a list of (shift, W, cap) with the same cap repeated."""
    shifts = {s.id: s for s in instance.shifts}
    out: dict[tuple[str, date], list[tuple[Shift, int, int]]] = {}
    for e in instance.employees:
        if not e.desired:
            continue
        touching: dict[date, list[tuple[Shift, int]]] = defaultdict(list)
        for sid in pairs.get(e.name, ()):
            s = shifts[sid]
            for d in s.days & e.desired:
                w = day_minutes(s, d)
                if w > 0:
                    touching[d].append((s, w))
        for d, items in sorted(touching.items()):
            items.sort(key=lambda sw: (sw[0].start, -sw[1]))
            cap = _best_independent(items)
            out[(e.name, d)] = [(s, w, cap) for s, w in items]
    return out


def _count_caps(instance: Instance, pairs: Mapping[str, Sequence[str]]) -> dict[str, int]:
    """employee → most shifts a hard-feasible schedule can give them (one per start date)."""
    shifts = {s.id: s for s in instance.shifts}
    return {
        e.name: len({shifts[sid].start.date() for sid in pairs.get(e.name, ())})
        for e in instance.employees
    }


def _least_squares_profile(total: int, caps: Sequence[int]) -> list[int] | None:
    """Counts 0 ≤ c_e ≤ caps[e] with Σc = total and the least Σc² (None if impossible).

    Greedy increments on the lowest count that may still grow: optimal for a separable
    convex objective."""
    if total > sum(caps):
        return None
    counts = [0] * len(caps)
    heap = [(0, i) for i in range(len(caps)) if caps[i] > 0]
    heapq.heapify(heap)
    for _ in range(total):
        c, i = heapq.heappop(heap)
        counts[i] = c + 1
        if counts[i] < caps[i]:
            heapq.heappush(heap, (counts[i], i))
    return counts


def _most_squares(total: int, caps: Sequence[int]) -> int:
    """The largest Σc² over 0 ≤ c_e ≤ caps[e] with Σc = total: fill the largest caps first."""
    most, remaining = 0, total
    for cap in sorted(caps, reverse=True):
        c = min(cap, remaining)
        most += c * c
        remaining -= c
    return most


def _unfairness_of(total: int, n: int, squares: int) -> Decimal:
    """U for ``n`` employees, ``total`` shifts and Σc² = ``squares``."""
    if n == 1:
        return _java_sqrt6(Decimal(squares - total * total))
    tmp = float(-(total * total)) / float(n) + float(squares)
    return _java_sqrt6(_java_decimal_of_double(max(0.0, tmp)))


@dataclass(frozen=True, slots=True, kw_only=True)
class Bounds:
    """What no schedule with 0 hard can beat (every shift assigned, so S is fixed)."""

    desired: int
    """D̄: the most desired-day minutes (Σ of :func:`desired_caps`)."""
    q_min: int
    """The least Σc² the count caps allow."""
    q_max: int
    soft: Decimal
    """D̄ − U(q_min): an upper bound on the soft score (undesired minutes are ≥ 0)."""
    bands: Mapping[str, tuple[int, int]] | None
    """employee → (lo, hi): the counts with Σc² = q_min (None if the caps cannot cover S)."""


def score_bounds(instance: Instance, pairs: Mapping[str, Sequence[str]] | None = None) -> Bounds:
    """Upper bound on the soft score of any 0-hard schedule, and the balanced count bands.

    Σc² = q_min holds exactly when every count lies in its band: the least-squares profile
    fills every employee to a level L (or L + 1) unless their cap is lower, and with Σc
    fixed the number at L + 1 is fixed too."""
    pairs = possible_pairs(instance) if pairs is None else pairs
    caps_by = _count_caps(instance, pairs)
    names = [e.name for e in instance.employees]
    caps = [caps_by[n] for n in names]
    total = len(instance.shifts)
    n = len(names)
    d_bar = sum(items[0][2] for items in desired_caps(instance, pairs).values())
    profile = _least_squares_profile(total, caps)
    if profile is None:
        q_min = _most_squares(total, caps)  # no 0-hard schedule exists; any value will do
        return Bounds(
            desired=d_bar,
            q_min=q_min,
            q_max=q_min,
            soft=Decimal(d_bar) - _unfairness_of(total, n, q_min),
            bands=None,
        )
    q_min = sum(c * c for c in profile)
    uncapped = [c for c, cap in zip(profile, caps, strict=True) if c < cap]
    level = min(uncapped) if uncapped else max(profile, default=0)
    bands = {
        name: (c, c) if c < level else (min(level, cap), min(level + 1, cap))
        for name, c, cap in zip(names, profile, caps, strict=True)
    }
    return Bounds(
        desired=d_bar,
        q_min=q_min,
        q_max=_most_squares(total, caps),
        soft=Decimal(d_bar) - _unfairness_of(total, n, q_min),
        bands=bands,
    )


# --------------------------------------------------------------------------- the models


def hard_constraints(instance: Instance, mctx: ModelContext) -> list[Linear]:
    """The engine's COVERAGE (min = max = 1) and NO_OVERLAP, plus Timefold's C3 and C4.

    C4: at most one shift per employee and start date. C3 (with C2): the intervals
    ``[start, end + 10 h)`` of one employee's shifts may not overlap, an interval graph
    whose maximal cliques a sweep over the start times finds, one ≤ 1 row each (the
    pairwise rows x_a + x_b ≤ 1 of every pair less than 10 h apart, merged)."""
    from rsched.rules.access import NoOverlap
    from rsched.rules.staffing import Coverage

    shifts = {s.id: s for s in instance.shifts}
    hard: list[Linear] = [*Coverage().constraints(mctx), *NoOverlap().constraints(mctx)]
    for e in instance.employees:
        mine = sorted((shifts[s] for s in mctx.candidates.get(e.name, ())), key=lambda s: s.start)
        by_date: dict[date, list[Shift]] = defaultdict(list)
        for s in mine:
            by_date[s.start.date()].append(s)
        for d, group in sorted(by_date.items()):
            if len(group) > 1:
                hard.append(
                    Linear(
                        rule="TF_ONE_PER_DAY",
                        name=f"TF_ONE_PER_DAY {e.name} {d.isoformat()}",
                        terms=tuple((X(e.name, s.id), 1) for s in group),
                        ub=1,
                        person=e.name,
                    )
                )
        active: list[Shift] = []
        for i, s in enumerate(mine):
            active = [a for a in active if a.end + REST > s.start]
            active.append(s)
            last_here = i + 1 == len(mine) or mine[i + 1].start != s.start
            if last_here and len({a.start.date() for a in active}) > 1:
                hard.append(
                    Linear(
                        rule="TF_REST_10H",
                        name=f"TF_REST_10H {e.name} at {s.start.isoformat()}",
                        terms=tuple((X(e.name, a.id), 1) for a in active),
                        ub=1,
                        person=e.name,
                    )
                )
    return hard


def _count_terms(mctx: ModelContext, name: str) -> tuple[tuple[Var, int], ...]:
    return tuple((X(name, s), 1) for s in mctx.candidates.get(name, ()))


def _band_constraints(mctx: ModelContext, bands: Mapping[str, tuple[int, int]]) -> list[Linear]:
    return [
        Linear(
            rule="TF_BALANCE_BAND",
            name=f"TF_BALANCE_BAND {name} works {lo}..{hi} shifts",
            terms=_count_terms(mctx, name),
            lb=lo,
            ub=hi,
            person=name,
        )
        for name, (lo, hi) in bands.items()
    ]


def _minute_penalties(
    instance: Instance, mctx: ModelContext, desired_bound: int, weight: int
) -> list[Penalty]:
    """C6 as a penalty and C7 as "desired minutes missed": the bound D̄ as the constant
    minus the granted minutes, so the term is never negative and the objective stays a
    plain minimisation (``weight``·(Un + D̄ − D))."""
    shifts = {s.id: s for s in instance.shifts}
    undesired: list[tuple[Var, int]] = []
    desired: list[tuple[Var, int]] = []
    for e in instance.employees:
        for sid in mctx.candidates.get(e.name, ()):
            s = shifts[sid]
            if (w := day_weight(s, e.undesired)) > 0:
                undesired.append((X(e.name, sid), w))
            if (w := day_weight(s, e.desired)) > 0:
                desired.append((X(e.name, sid), -w))
    return [
        Penalty(name="C6 undesired-day minutes", terms=tuple(undesired), weight=weight),
        Penalty(
            name="C7 desired-day minutes missed (D̄ minus granted)",
            terms=tuple(desired),
            weight=weight,
            constant=desired_bound,
        ),
    ]


def _spec(mctx: ModelContext, hard: list[Linear], soft: list[Linear], pens: list[Penalty]) -> Any:
    from rsched.solver.model import ModelSpec

    by_rule: dict[str, int] = defaultdict(int)
    for lin in hard:
        by_rule[lin.rule] += 1
    return ModelSpec(
        mctx=mctx,
        hard=hard,
        soft=soft,
        penalties=pens,
        constraints_by_rule=dict(sorted(by_rule.items())),
    )


@dataclass(kw_only=True)
class Base:
    """What every stage shares: the domain view, the engine's candidates, the hard rows
    and the bounds."""

    instance: Instance
    data: ProgramData
    mctx: ModelContext
    hard: list[Linear]
    bounds: Bounds

    @property
    def pairs(self) -> int:
        return sum(len(v) for v in self.mctx.candidates.values())


def base_model(instance: Instance) -> Base:
    from rsched.rules.access import candidate_slots

    data = to_program(instance)
    mctx = ModelContext(data=data, candidates=candidate_slots(data))
    return Base(
        instance=instance,
        data=data,
        mctx=mctx,
        hard=hard_constraints(instance, mctx),
        bounds=score_bounds(instance),
    )


def ideal_spec(base: Base) -> Any | None:
    """Stage 1, a pure feasibility model of a schedule at the bound ``bounds.soft``: no
    shift touching an undesired date (one row Σ x ≤ 0 that presolve turns into fixings),
    every desired date granted its cap (Σ W·x ≥ cap), every count in its band
    (Σc² = q_min). A solution scores exactly the bound when the engine's candidates allow
    every cap (they do on the demo data), and is then optimal."""
    bounds, instance, mctx = base.bounds, base.instance, base.mctx
    if bounds.bands is None:
        return None
    shifts = {s.id: s for s in instance.shifts}
    extra = _band_constraints(mctx, bounds.bands)
    banned = [
        (X(e.name, sid), 1)
        for e in instance.employees
        for sid in mctx.candidates.get(e.name, ())
        if day_weight(shifts[sid], e.undesired) > 0
    ]
    if banned:
        extra.append(
            Linear(rule="TF_UNDESIRED_NONE", name="TF_UNDESIRED_NONE", terms=tuple(banned), ub=0)
        )
    for (name, d), items in desired_caps(instance, mctx.candidates).items():
        extra.append(
            Linear(
                rule="TF_DESIRED_TARGET",
                name=f"TF_DESIRED_TARGET {name} {d.isoformat()}",
                terms=tuple((X(name, s.id), w) for s, w, _ in items),
                lb=items[0][2],
                person=name,
            )
        )
    return _spec(mctx, base.hard + extra, [], [])


def balanced_spec(base: Base) -> Any | None:
    """Stage 2: every count in its band (so U = U(q_min) is fixed), minimise Un + D̄ − D.
    Only x variables: a complete hint and search-friendly."""
    if base.bounds.bands is None:
        return None
    hard = base.hard + _band_constraints(base.mctx, base.bounds.bands)
    pens = _minute_penalties(base.instance, base.mctx, base.bounds.desired, 1)
    return _spec(base.mctx, hard, [], pens)


def free_spec(base: Base) -> Any:
    """Fallback when no balanced schedule exists: minimise Un + D̄ − D, balance ignored."""
    pens = _minute_penalties(base.instance, base.mctx, base.bounds.desired, 1)
    return _spec(base.mctx, base.hard, [], pens)


@dataclass(frozen=True, slots=True, kw_only=True)
class BalanceModel:
    """How stage 3 linearises the unfairness (see the module docstring)."""

    q_min: int
    q_max: int
    q_window_max: int
    """Σc² up to here is costed exactly."""
    scale: int
    """K: model units per unit of soft score."""
    base: int
    """K·U(q_min)."""
    steps: tuple[int, ...]
    """K·(U(q_min + 2j) − U(q_min + 2j − 2)) for j = 1.. (non-increasing: U is concave)."""
    tail: bool
    """Whether Σc² can exceed the window; there it costs K·U(window top), which is below
    K·U because U (rounded) never decreases."""


def _balance_model(total: int, n: int, q_min: int, q_max: int, window: int) -> BalanceModel:
    values = list(range(q_min, q_max + 1, 2))  # Σc² ≡ Σc = S (mod 2): every other value
    exact = values[: max(1, window + 1)]
    costs = [_unfairness_of(total, n, q) for q in exact]
    places = 0
    for value in costs:
        exponent = value.as_tuple().exponent
        assert isinstance(exponent, int)
        places = max(places, -exponent)
    scaled = [int(v.scaleb(places)) for v in costs]
    return BalanceModel(
        q_min=q_min,
        q_max=q_max,
        q_window_max=exact[-1],
        scale=10**places,
        base=scaled[0],
        steps=tuple(b - a for a, b in itertools.pairwise(scaled)),
        tail=len(values) > len(exact),
    )


def exact_spec(base: Base, *, window: int = BALANCE_WINDOW) -> tuple[Any, BalanceModel]:
    """Stage 3, the whole objective: K·(Un + D̄ − D) + K·U(Σc²).

    Per employee a thermometer b[e,k] ("works at least k shifts"): Σ_k b ≥ c_e, and
    Σc² ≤ Σ_{e,k} (2k − 1)·b[e,k], tight at the optimum because every b costs through U.
    Σc² is then costed by a second thermometer u[j] ("Σc² ≥ q_min + 2j", ordered
    u[j] ≥ u[j+1] as U's steps shrink) of ``window`` steps, each carrying K·ΔU exactly,
    and above the window one integer ``excess`` (allowed once every u is on) priced by a
    line below K·U. So the model objective equals K·(D̄ − soft) inside the window and is
    below it elsewhere: the solver's bound is valid and a proved optimum inside the
    window is the true optimum."""
    instance, bounds, mctx = base.instance, base.bounds, base.mctx
    total = len(instance.shifts)
    n = len(instance.employees)
    caps = _count_caps(instance, mctx.candidates)
    bm = _balance_model(total, n, bounds.q_min, max(bounds.q_min, bounds.q_max), window)
    soft: list[Linear] = []
    square_terms: list[tuple[Var, int]] = []
    for e in instance.employees:
        bs = [Aux(f"tf.works[{e.name}]>={k}") for k in range(1, caps[e.name] + 1)]
        if not bs:
            continue
        soft.append(
            Linear(
                rule="TF_BALANCE",
                name=f"TF_BALANCE {e.name}: at-least flags cover the count",
                terms=tuple((b, 1) for b in bs)
                + tuple((x, -1) for x, _ in _count_terms(mctx, e.name)),
                lb=0,
                person=e.name,
            )
        )
        square_terms += [(b, 2 * k + 1) for k, b in enumerate(bs)]
    us = [Aux(f"tf.squares>={bm.q_min + 2 * j}") for j in range(1, len(bm.steps) + 1)]
    cover: list[tuple[Var, int]] = [(u, -2) for u in us]
    cost: list[tuple[Var, int]] = [(u, step) for u, step in zip(us, bm.steps, strict=True)]
    for a, b in itertools.pairwise(us):
        soft.append(
            Linear(
                rule="TF_BALANCE",
                name=f"TF_BALANCE {b.name} implies {a.name}",
                terms=((a, 1), (b, -1)),
                lb=0,
            )
        )
    if bm.tail:
        span = bm.q_max - bm.q_window_max
        excess = Aux("tf.squares.excess", 0, span)
        cover.append((excess, -1))
        gate: list[tuple[Var, int]] = [(excess, 1)]
        if us:
            gate.append((us[-1], -span))
        soft.append(
            Linear(
                rule="TF_BALANCE",
                name="TF_BALANCE excess only above the window",
                terms=tuple(gate),
                ub=0,
            )
        )
    soft.append(
        Linear(
            rule="TF_BALANCE",
            name="TF_BALANCE Σc² within the thermometer",
            terms=tuple(square_terms) + tuple(cover),
            ub=bm.q_min,
        )
    )
    pens = _minute_penalties(instance, mctx, bounds.desired, bm.scale)
    pens.append(
        Penalty(name="C8 unfairness U(Σc²), scaled", terms=tuple(cost), weight=1, constant=bm.base)
    )
    return _spec(mctx, base.hard, soft, pens), bm


# --------------------------------------------------------------------------- solving


@dataclass(frozen=True, slots=True, kw_only=True)
class TimefoldProgress:
    elapsed: float
    stage: str
    solutions: int
    score: str
    soft_bound: Decimal


@dataclass(frozen=True, slots=True, kw_only=True)
class StageReport:
    stage: str
    status: str
    seconds: float
    solutions: int
    model_size: Mapping[str, object]
    model_soft: Decimal | None = None
    """The soft score the stage's objective claims for its last schedule (None for the
    feasibility stage)."""
    soft: Decimal | None = None
    """The scorer's soft score of that schedule (equal to ``model_soft`` when the model is
    exact there)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TimefoldResult:
    instance: str
    status: str
    """``optimal`` (proved), ``feasible``, ``infeasible`` (proved) or ``unknown``."""
    assignment: Mapping[str, str]
    hard: int | None
    soft: Decimal | None
    parts: ScoreParts | None
    soft_bound: Decimal
    """No 0-hard schedule scores more soft than this."""
    time_to_feasible: float | None
    """Seconds from ``started`` to the first 0-hard schedule."""
    time_to_best: float | None
    wall_time: float
    workers: int
    seed: int
    stages: tuple[StageReport, ...] = ()
    trajectory: tuple[tuple[float, str], ...] = ()
    """(seconds from ``started``, score) of each improving schedule."""
    notes: tuple[str, ...] = ()

    @property
    def score(self) -> str | None:
        if self.hard is None or self.soft is None:
            return None
        return format_score(self.hard, self.soft)

    @property
    def has_solution(self) -> bool:
        return bool(self.assignment)


class _Best:
    """The best schedule over all stages, by the exact score (thread-safe)."""

    def __init__(
        self,
        instance: Instance,
        t_start: float,
        bound: Decimal,
        on_progress: Callable[[TimefoldProgress], None] | None,
    ) -> None:
        self.instance = instance
        self.t_start = t_start
        self.bound = bound
        self.on_progress = on_progress
        self.lock = threading.Lock()
        self.key: tuple[int, Decimal] | None = None
        self.pairs: frozenset[tuple[str, str]] = frozenset()
        self.first_feasible: float | None = None
        self.at: float | None = None
        self.count = 0
        self.trajectory: list[tuple[float, str]] = []
        self.stage = ""

    def offer(self, pairs: Iterable[tuple[str, str]]) -> None:
        chosen = frozenset(pairs)
        hard, soft = score(self.instance, {s: p for p, s in chosen})
        now = time.monotonic() - self.t_start
        with self.lock:
            self.count += 1
            if hard == 0 and self.first_feasible is None:
                self.first_feasible = now
            if self.key is not None and (hard, soft) <= self.key:
                return
            self.key = (hard, soft)
            self.pairs = chosen
            self.at = now
            self.trajectory.append((round(now, 3), format_score(hard, soft)))
            progress = TimefoldProgress(
                elapsed=now,
                stage=self.stage,
                solutions=self.count,
                score=format_score(hard, soft),
                soft_bound=self.bound,
            )
        if self.on_progress is not None:
            self.on_progress(progress)

    @property
    def reached_bound(self) -> bool:
        with self.lock:
            return self.key is not None and self.key == (0, self.bound)


STAGES: tuple[str, ...] = ("ideal", "balanced", "exact")
IDEAL_SHARE = 0.5
"""Share of the remaining time stage 1 may use before the others take over."""
EXACT_MAX_PAIRS = 6000
"""Stage 3 (the exact model) runs only up to this many candidate pairs: on bigger
instances its auxiliary thermometers keep CP-SAT from finding any first schedule."""


def solve(
    instance: Instance,
    *,
    time_limit: float,
    workers: int = 2,
    seed: int = 0,
    started: float | None = None,
    on_progress: Callable[[TimefoldProgress], None] | None = None,
    should_abort: Callable[[], bool] | None = None,
    window: int = BALANCE_WINDOW,
    stages: Collection[str] = STAGES,
) -> TimefoldResult:
    """Solve ``instance`` within ``time_limit`` seconds counted from ``started`` (a
    ``time.monotonic()`` instant; default now), model building included.

    Stages, each on CP-SAT through :func:`rsched.solver.cpsat.solve_cpsat`, each hinted
    with the best schedule so far, stopping as soon as a schedule reaches the upper
    bound :attr:`Bounds.soft` (then it is optimal):

    1. *ideal* (at most half the time): feasibility of a schedule at the bound
       (:func:`ideal_spec`);
    2. *balanced*: the best minutes with Σc² at its least (:func:`balanced_spec`);
    3. *exact* on instances up to :data:`EXACT_MAX_PAIRS` candidate pairs: the whole
       objective (:func:`exact_spec`); on bigger ones stage 2 keeps the time, and
       *free* (:func:`free_spec`) runs only if no balanced schedule was found.

    ``stages`` leaves stages out (tests use it to exercise one model alone).
    """
    if not (math.isfinite(time_limit) and time_limit > 0):
        raise InvalidInput(FieldError("time_limit", f"must be a positive number, got {time_limit}"))
    if workers < 1:
        raise InvalidInput(FieldError("workers", f"must be ≥ 1, got {workers}"))
    from rsched.solver.control import Control
    from rsched.solver.cpsat import CpSatParams, solve_cpsat
    from rsched.solver.result import SolveStatus

    t_start = time.monotonic() if started is None else started
    deadline = t_start + time_limit
    abort = should_abort or (lambda: False)
    base = base_model(instance)
    bounds = base.bounds
    notes: list[str] = []
    covered = set(base.mctx.candidates_of_slot)
    empty = [s.id for s in instance.shifts if s.id not in covered]
    if empty:
        notes.append(
            "no eligible, available employee for shift(s) "
            + ", ".join(empty[:10])
            + (" …" if len(empty) > 10 else "")
        )
    best = _Best(instance, t_start, bounds.soft, on_progress)
    reports: list[StageReport] = []
    proved_optimal = False
    proved_infeasible = False
    run_exact = base.pairs <= EXACT_MAX_PAIRS

    # A stage stops within a poll of its end; then the best schedule is scored and written
    # and the process exits (freeing a large model takes a few tenths of a second): keep
    # that out of the budget.
    reserve = min(1.0, 0.3 + 0.01 * time_limit)

    def remaining() -> float:
        return deadline - time.monotonic() - reserve

    def run(stage: str, spec: Any, share: float, to_soft: Callable[[float], Decimal] | None) -> Any:
        best.stage = stage
        t0 = time.monotonic()
        limit = max(0.05, remaining() * share)
        stage_end = t0 + limit  # CP-SAT's own clock starts after the model is built

        def stop() -> bool:
            return abort() or best.reached_bound or time.monotonic() >= stage_end

        result = solve_cpsat(
            spec,
            CpSatParams(time_limit=limit, workers=workers, seed=seed),
            Control(
                should_abort=stop,
                on_checkpoint=lambda cp: best.offer(cp.pairs),
                hint=best.pairs,
                poll_seconds=0.1,
            ),
        )
        stage_soft = model_soft = None
        if result.assignments:
            pairs = [(a.person_id, a.slot_id) for a in result.assignments]
            best.offer(pairs)
            stage_soft = score(instance, {s: p for p, s in pairs})[1]
            if to_soft is not None and result.objective is not None:
                model_soft = to_soft(result.objective)
        reports.append(
            StageReport(
                stage=stage,
                status=str(result.status),
                seconds=round(time.monotonic() - t0, 3),
                solutions=result.solutions,
                model_size=spec.size(),
                model_soft=model_soft,
                soft=stage_soft,
            )
        )
        return result

    u_min = _unfairness_of(len(instance.shifts), len(instance.employees), bounds.q_min)

    def balanced_soft(objective: float) -> Decimal:
        return Decimal(bounds.desired) - Decimal(round(objective)) - u_min

    unknown = set(stages) - set(STAGES)
    if unknown:
        raise InvalidInput(FieldError("stages", f"unknown stage(s) {sorted(unknown)}"))
    if "ideal" in stages and not empty and remaining() > 0 and not abort():
        spec = ideal_spec(base)
        if spec is not None:
            run("ideal", spec, IDEAL_SHARE, None)
    run_exact = run_exact and "exact" in stages
    if "balanced" in stages and not best.reached_bound and not empty and remaining() > 0:
        spec = balanced_spec(base)
        if spec is not None and not abort():
            run("balanced", spec, 0.5 if run_exact else 1.0, balanced_soft)
    if not best.reached_bound and remaining() > 0.05 and not abort():
        if run_exact:
            spec, bm = exact_spec(base, window=window)

            def exact_soft(objective: float) -> Decimal:
                with localcontext() as ctx:
                    ctx.prec = 60
                    return Decimal(bounds.desired) - Decimal(round(objective)) / bm.scale

            result = run("exact", spec, 1.0, exact_soft)
            if result.status is SolveStatus.INFEASIBLE:
                proved_infeasible = True
            elif result.status is SolveStatus.OPTIMAL and best.key is not None:
                with best.lock:
                    pairs = best.pairs
                counts: dict[str, int] = defaultdict(int)
                for p, _s in pairs:
                    counts[p] += 1
                if sum(c * c for c in counts.values()) <= bm.q_window_max:
                    proved_optimal = True
        elif best.key is None:
            result = run("free", free_spec(base), 1.0, None)
            proved_infeasible = result.status is SolveStatus.INFEASIBLE
    if best.reached_bound:
        proved_optimal = True

    with best.lock:
        pairs = best.pairs
    assignment = {s: p for p, s in pairs}
    parts = score_parts(instance, assignment) if assignment else None
    if parts is not None and parts.hard != 0:
        notes.append(f"the scorer finds hard score {parts.hard}: model and scorer disagree")
        proved_optimal = False
    if proved_optimal:
        status = "optimal"
    elif parts is not None:
        status = "feasible"
    elif proved_infeasible or empty:
        status = "infeasible"
    else:
        status = "unknown"
    return TimefoldResult(
        instance=instance.name,
        status=status,
        assignment=dict(sorted(assignment.items(), key=lambda kv: _id_key(kv[0]))),
        hard=parts.hard if parts else None,
        soft=parts.soft if parts else None,
        parts=parts,
        soft_bound=parts.soft if status == "optimal" and parts else bounds.soft,
        time_to_feasible=best.first_feasible,
        time_to_best=best.at,
        wall_time=time.monotonic() - t_start,
        workers=workers,
        seed=seed,
        stages=tuple(reports),
        trajectory=tuple(best.trajectory),
        notes=tuple(notes),
    )


def _id_key(shift_id: str) -> tuple[int, int | str]:
    return (0, int(shift_id)) if shift_id.isdigit() else (1, shift_id)


def process_start() -> float:
    """The ``time.monotonic()`` instant this process started (Linux ``/proc``), so that a
    command's time budget can include interpreter start-up and imports; now elsewhere.
    A process older than a minute is a long-lived host calling the command in-process
    (a test run, a server): its budget starts now, not at its own start."""
    import os

    now = time.monotonic()
    try:
        with open("/proc/self/stat", encoding="ascii") as fh:
            stat = fh.read()
        with open("/proc/uptime", encoding="ascii") as fh:
            uptime = float(fh.read().split()[0])
        start_ticks = int(stat[stat.rindex(")") + 2 :].split()[19])  # field 22, starttime
        age = uptime - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return now
    return now - age if 0 <= age < 60 else now


# --------------------------------------------------------------------------- solution files


def solution_document(instance: Instance, result: TimefoldResult) -> dict[str, Any]:
    parts = result.parts
    return {
        "instance": instance.name,
        "assignment": dict(result.assignment),
        "score": result.score,
        "hard": result.hard,
        "soft": None if result.soft is None else format(result.soft, "f"),
        "constraints": (
            None
            if parts is None
            else {
                f"{c} {CONSTRAINTS[c]}": (format(v, "f") if isinstance(v, Decimal) else v)
                for c, v in parts.totals.items()
            }
        ),
        "shifts_per_employee": None if parts is None else dict(parts.counts),
        "status": result.status,
        "solver": "rsched cp_sat",
        "time_to_feasible": result.time_to_feasible,
        "wall_time": round(result.wall_time, 3),
    }


def write_solution(path: str | Path, instance: Instance, result: TimefoldResult) -> Path:
    """Write the solution JSON atomically (nothing is left behind on failure)."""
    from rsched.fileio import write_atomic

    doc = solution_document(instance, result)
    return write_atomic(path, json.dumps(doc, indent=2, ensure_ascii=False) + "\n")


def read_assignment(path: str | Path) -> dict[str, str]:
    """The ``assignment`` of a solution file (shift id → employee name)."""
    p = Path(path)
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInput(FieldError(str(p), f"cannot read a solution: {exc}")) from None
    raw = doc.get("assignment") if isinstance(doc, dict) else None
    if not isinstance(raw, dict):
        raise InvalidInput(FieldError("assignment", "missing (an object shift id → employee)"))
    bad = [k for k, v in raw.items() if not isinstance(v, str)]
    if bad:
        raise InvalidInput([FieldError(f"assignment.{k}", "must be an employee name") for k in bad])
    return {str(k): v for k, v in raw.items()}


def assignment_pairs(assignment: Mapping[str, str]) -> Iterable[tuple[str, str]]:
    return ((p, s) for s, p in assignment.items())
