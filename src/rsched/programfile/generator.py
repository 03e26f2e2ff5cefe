"""Synthetic programs from a seed: realistic, with no real names, feasible by construction.

``generate_program(size, seed)`` returns the mapping of a program file (dates as ISO
text, so it dumps to YAML or JSON and loads back); ``generate_programs("gme", seed)``
returns the several programs of a GME office. Same seed, same dict.

Content: five rotations (wards, ICU, nights, ambulatory clinic, elective); every
resident has one rotation per block by a cyclic scheme (resident k of PGY p is on
rotation ``(k + block + p) mod 5``), so each cohort is spread over the rotations. About
one resident in ten per block takes a week of vacation (whole local days, aligned to the
block's weeks); a few faculty take short absences; each block has a handful of
day-off requests. Slot patterns are made per rotation, block and week (weeks with the
same numbers are merged), from the members who are present that week.

Capacity argument (why a schedule meeting every hard rule exists). Per rotation and
week let A be the members present, S of them PGY ≥ 2:

* wards, nights: ``min = ⌊4A/7⌋`` 12-h shifts a day, so 7·min ≤ 4A: rotating through the
  members, each works at most 4 shifts (48 h) a week and has ≥ 3 days without duty, and
  a day without a day shift or without a night shift is ≥ 24 h free (36 h). ``pgy_min
  {2: 1}`` only when S ≥ 2: the seniors then cover one seat a day at ≤ 4 each.
* ICU: in-house call on ``c = ⌊7S/5⌋`` days a week (≤ 7), so a senior takes ≤ 1.4
  calls a week (≤ 6 a block, under ⌈non-leave days/3⌉ even after a week of leave); a
  call costs 3 day-units (24 h and the post-call day that the 14 h rest takes), and
  ``ICU_DAY min = ⌊(5A − 3c)/7⌋`` keeps 7·min + 3c ≤ 5A: ≤ 60 h a week on average, with
  ≥ 2 days off.
* clinic: AM and PM on weekdays, ``min = ⌊3A/4⌋``: ≤ 8 h a weekday (the two halves merge
  to a 9-h stretch), ≤ 40 h a week, weekends free.
* elective: home call 17:00-08:00, one a night when A ≥ 2 (every other night leaves
  33 h free); it does not count toward hours.

So each resident stays ≤ 60 h/week and ≥ 2 days off a week in every rotation, well
inside 80 h averaged over the block and one day off in seven; leave weeks leave both
numerator and denominator. A member on leave is not counted in A for that week.
Supervision: every day, the faculty needed at the *maximum* staffing of all concurrent
supervised slots (wards + ICU + the larger clinic half, Σ over levels of
⌈residents/ratio⌉, PGY-1s first) is at most the faculty present; maxima are lowered
until it is, and a faculty absence is placed only where one faculty stays spare at the
minimum staffing.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from rsched.domain.calendar import blocks_of_year

YEAR_START = date(2026, 7, 1)
BLOCK_DAYS = 28
ROTATIONS = ("wards", "icu", "nights", "clinic", "elective")
CALL_DAYS = ("mon", "thu", "sat", "tue", "fri", "sun", "wed")
WEEKDAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
OVERNIGHT = ("nights", "icu", "elective")
"""Rotations whose duty may run into the next block's first morning."""


@dataclass(frozen=True, slots=True)
class Size:
    residents_per_pgy: int
    faculty: int
    days: int
    programs: int = 1

    @property
    def residents(self) -> int:
        return 3 * self.residents_per_pgy * self.programs


SIZES: dict[str, Size] = {
    "small": Size(4, 4, 28),
    "medium": Size(12, 12, 28),
    "large": Size(30, 30, 28),
    "year": Size(12, 12, 364),
    "gme": Size(20, 20, 28, programs=5),
}
"""Reference sizes of DOMAIN.md (gme: five programs of 60 residents and 20 faculty)."""

GME_PROGRAMS = (
    ("im", "Internal Medicine", "America/New_York"),
    ("peds", "Pediatrics", "America/Chicago"),
    ("fm", "Family Medicine", "America/Denver"),
    ("em", "Emergency Medicine", "America/Phoenix"),
    ("psych", "Psychiatry", "America/Los_Angeles"),
)

SHIFT_TYPES: tuple[dict[str, Any], ...] = (
    {"code": "WARD_DAY", "name": "Wards day", "start": "07:00", "duration_hours": 12,
     "kind": "inpatient", "eligible_pgy": [1, 2, 3], "faculty": True},
    {"code": "NIGHT", "name": "Night float", "start": "19:00", "duration_hours": 12,
     "kind": "night_float", "eligible_pgy": [1, 2, 3]},
    {"code": "ICU_DAY", "name": "ICU day", "start": "07:00", "duration_hours": 12,
     "kind": "inpatient", "eligible_pgy": [1, 2, 3], "required_tags": ["acls"],
     "faculty": True},
    {"code": "ICU_CALL", "name": "ICU 24-hour call", "start": "07:00", "duration_hours": 24,
     "kind": "in_house_call", "eligible_pgy": [2, 3], "required_tags": ["acls"]},
    {"code": "CLINIC_AM", "name": "Clinic morning", "start": "08:00", "duration_hours": 4,
     "kind": "clinic", "eligible_pgy": [1, 2, 3], "faculty": True},
    {"code": "CLINIC_PM", "name": "Clinic afternoon", "start": "13:00", "duration_hours": 4,
     "kind": "clinic", "eligible_pgy": [1, 2, 3], "faculty": True},
    {"code": "HOME_CALL", "name": "Home call", "start": "17:00", "duration_hours": 15,
     "kind": "home_call", "counts_toward_hours": False, "eligible_pgy": [1, 2, 3]},
)
ROTATION_SHIFTS = {
    "wards": ["WARD_DAY"],
    "icu": ["ICU_DAY", "ICU_CALL"],
    "nights": ["NIGHT"],
    "clinic": ["CLINIC_AM", "CLINIC_PM"],
    "elective": ["HOME_CALL"],
}
ROTATION_NAMES = {
    "wards": "Inpatient wards",
    "icu": "Intensive care",
    "nights": "Night float",
    "clinic": "Ambulatory clinic",
    "elective": "Elective",
}
WARD_RATIO = {0: 4}
CLINIC_RATIO = {1: 2, 0: 4}


@dataclass(slots=True)
class _Need:
    """Staffing of one shift for one week of one rotation."""

    shift: str
    days: list[str] | str
    start: date
    end: date
    min: int
    max: int
    pgy_min: dict[int, int]
    supervision: dict[int, int]
    juniors: int = 0
    """PGY-1 members present (the worst case for the supervision ratio)."""

    def faculty(self, staff: int) -> int:
        """Faculty needed for ``staff`` residents, PGY-1s first (Σ over levels of ⌈n/ratio⌉)."""
        if not self.supervision:
            return 0
        ratio_1 = self.supervision.get(1, self.supervision[0])
        first = min(self.juniors, staff)
        return math.ceil(first / ratio_1) + math.ceil((staff - first) / self.supervision[0])

    def on(self, day: date) -> bool:
        return self.start <= day <= self.end and (
            self.days == "daily"
            or (self.days == "weekdays" and day.weekday() < 5)
            or (isinstance(self.days, list) and WEEKDAY_NAMES[day.weekday()] in self.days)
        )


def generate_program(size: str, seed: int) -> dict[str, Any]:
    """One synthetic program file (for ``gme``, the first of its programs)."""
    return generate_programs(size, seed)[0]


def generate_programs(size: str, seed: int) -> list[dict[str, Any]]:
    """The program files of ``size`` (one, or several for ``gme``), deterministic per seed."""
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r} (one of {', '.join(SIZES)})")
    spec = SIZES[size]
    if spec.programs == 1:
        name = ("synthetic", "Internal Medicine", "America/New_York")
        return [_program(spec, name, f"synthetic-{size}", random.Random(seed), "")]
    return [
        _program(spec, GME_PROGRAMS[i], f"gme-{GME_PROGRAMS[i][0]}",
                 random.Random(seed * 1009 + i), f"{GME_PROGRAMS[i][0]}-")
        for i in range(spec.programs)
    ]


def _program(
    size: Size, names: tuple[str, str, str], pid: str, rng: random.Random, prefix: str
) -> dict[str, Any]:
    _, title, tz = names
    end = YEAR_START + timedelta(days=size.days - 1)
    blocks = [b for b in blocks_of_year(YEAR_START, BLOCK_DAYS) if b.start <= end]
    n, width = size.residents_per_pgy, max(2, len(str(3 * size.residents_per_pgy)))
    residents: list[dict[str, Any]] = [
        {"id": f"{prefix}r{i + 1:0{width}d}", "name": f"Resident {i + 1:0{width}d}",
         "kind": "resident", "pgy": i // n + 1, "tags": ["bls", "acls"]}
        for i in range(3 * n)
    ]
    fwidth = max(2, len(str(size.faculty)))
    faculty: list[dict[str, Any]] = [
        {"id": f"{prefix}f{i + 1:0{fwidth}d}", "name": f"Faculty {i + 1:0{fwidth}d}",
         "kind": "faculty", "pgy": None, "tags": ["attending"]}
        for i in range(size.faculty)
    ]
    assignments: list[dict[str, Any]] = []
    patterns: list[dict[str, Any]] = []
    absences: list[dict[str, Any]] = []
    requests: list[dict[str, Any]] = []
    counts: dict[str, list[int]] = {r: [] for r in ROTATIONS}
    for number, block in enumerate(blocks, start=1):
        last = min(block.end, end)
        members: dict[str, list[dict[str, Any]]] = {r: [] for r in ROTATIONS}
        for i, person in enumerate(residents):
            rotation = _rotation(i % n, person["pgy"], number)
            members[rotation].append(person)
            assignments.append({"person": person["id"], "block": number, "rotation": rotation})
        for r in ROTATIONS:
            counts[r].append(len(members[r]))
        weeks = [(d, min(d + timedelta(days=6), last))
                 for d in _days(block.start, last)[::7]]
        away = _vacations(rng, residents, weeks, absences)
        # Day 1 of a later block: who was on nights, ICU or home call may still be on duty.
        tired = {p["id"] for i, p in enumerate(residents)
                 if number > 1 and _rotation(i % n, p["pgy"], number - 1) in OVERNIGHT}
        needs = [need for r in ROTATIONS for seg, gone in _segments(weeks, tired)
                 for need in _needs(r, members[r], seg, away, gone)]
        present = _faculty_absences(rng, faculty, needs, block.start, last, absences)
        _cap_to_faculty(needs, present, block.start, last)
        patterns.extend(_merged(needs))
        _requests(rng, residents, away, block.start, last, requests)
    return {
        "format": "rsched.program/1",
        "program": {"id": pid, "name": f"{title} (synthetic)", "timezone": tz,
                    "academic_year_start": YEAR_START.isoformat(),
                    "block_length_days": BLOCK_DAYS},
        "horizon": {"start": YEAR_START.isoformat(), "end": end.isoformat()},
        "people": residents + faculty,
        "shift_types": [dict(t) for t in SHIFT_TYPES],
        "rotations": [
            {"id": r, "name": ROTATION_NAMES[r], "eligible_pgy": [1, 2, 3],
             "min_residents": min(counts[r]), "max_residents": max(counts[r]),
             "shift_types": list(ROTATION_SHIFTS[r])}
            for r in ROTATIONS
        ],
        "rotation_assignments": assignments,
        "slot_patterns": patterns,
        "absences": absences,
        "requests": requests,
    }


def _rotation(k: int, pgy: int, block: int) -> str:
    """The cyclic scheme: resident k of a PGY cohort, in a block."""
    return ROTATIONS[(k + block + pgy) % len(ROTATIONS)]


def _segments(
    weeks: list[tuple[date, date]], tired: set[str]
) -> list[tuple[tuple[date, date], set[str]]]:
    """The block's weeks, the first day apart (without ``tired``) when anyone is tired."""
    if not tired:
        return [(w, set()) for w in weeks]
    (first, end), rest = weeks[0], weeks[1:]
    head = [((first, first), tired)]
    if end > first:
        head.append(((first + timedelta(days=1), end), set()))
    return head + [(w, set()) for w in rest]


def _days(first: date, last: date) -> list[date]:
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def _vacations(
    rng: random.Random,
    residents: list[dict[str, Any]],
    weeks: list[tuple[date, date]],
    absences: list[dict[str, Any]],
) -> dict[str, tuple[date, date]]:
    """About one resident in ten takes one whole week of the block off."""
    away: dict[str, tuple[date, date]] = {}
    full = [w for w in weeks if (w[1] - w[0]).days == 6]
    if not full:
        return away
    for person in rng.sample(residents, max(1, round(len(residents) / 10))):
        week = rng.choice(full)
        away[person["id"]] = week
        absences.append({"id": f"a{len(absences) + 1:04d}", "person": person["id"],
                         "start": week[0].isoformat(), "end": week[1].isoformat(),
                         "leave_type": "vacation", "blocking": True})
    return away


def _needs(
    rotation: str,
    members: list[dict[str, Any]],
    week: tuple[date, date],
    away: dict[str, tuple[date, date]],
    gone: set[str],
) -> list[_Need]:
    """The staffing one rotation needs in one week (or part), from the members present.

    Overnight duty (ICU call, home call) counts only members also present the next
    morning, since a call on the eve of a leave week would run into it.
    """
    start, end = week

    def present(m: dict[str, Any], lo: date, hi: date) -> bool:
        leave = away.get(m["id"])
        return m["id"] not in gone and not (leave and leave[0] <= hi and lo <= leave[1])

    here = [m for m in members if present(m, start, end)]
    overnight = [m for m in here if present(m, end + timedelta(days=1), end + timedelta(days=1))]
    a = len(here)
    s = sum(1 for m in here if m["pgy"] >= 2)
    j = a - s
    if a == 0:
        return []
    if rotation in ("wards", "nights"):
        least = 4 * a // 7
        seniors = {2: 1} if s >= 2 and least >= 1 else {}
        if rotation == "nights":
            return [_Need("NIGHT", "daily", start, end, least, min(a, least + 1), seniors, {})]
        most = min(a, least + max(1, a // 4))
        return [_Need("WARD_DAY", "daily", start, end, least, most, seniors, WARD_RATIO, j)]
    if rotation == "icu":
        calls = min(7, 7 * sum(1 for m in overnight if m["pgy"] >= 2) // 5)
        least = max(0, (5 * a - 3 * calls) // 7)
        out = [_Need("ICU_DAY", "daily", start, end, least, min(a, least + 1),
                     {2: 1} if s >= 3 and least >= 1 else {}, WARD_RATIO, j)]
        if calls:
            days: list[str] | str = "daily" if calls == 7 else sorted(
                CALL_DAYS[:calls], key=WEEKDAY_NAMES.index)
            out.append(_Need("ICU_CALL", days, start, end, 1, 1, {}, {}))
        return out
    if rotation == "clinic":
        least = max(1 if a >= 2 else 0, 2 * a // 5)
        return [_Need(code, "weekdays", start, end, least, a, {}, CLINIC_RATIO, j)
                for code in ("CLINIC_AM", "CLINIC_PM")]
    least = 1 if len(overnight) >= 2 else 0
    return [_Need("HOME_CALL", "daily", start, end, least, 1, {}, {})]


def _demand(needs: list[_Need], day: date, at_max: bool) -> int:
    """Faculty needed on ``day``: wards + ICU + the larger clinic half (AM and PM share)."""
    total, clinic = 0, 0
    for need in needs:
        if need.supervision and need.on(day):
            f = need.faculty(need.max if at_max else need.min)
            if need.shift.startswith("CLINIC"):
                clinic = max(clinic, f)
            else:
                total += f
    return total + clinic


def _faculty_absences(
    rng: random.Random,
    faculty: list[dict[str, Any]],
    needs: list[_Need],
    first: date,
    last: date,
    absences: list[dict[str, Any]],
) -> dict[date, int]:
    """A few short faculty absences, each kept only if one faculty stays spare at min staffing."""
    present = {d: len(faculty) for d in _days(first, last)}
    span = (last - first).days + 1
    for _ in range(max(1, len(faculty) // 8)):
        person = rng.choice(faculty)
        length = rng.randint(2, 4)
        if span <= length:
            break
        start = first + timedelta(days=rng.randrange(span - length))
        days = _days(start, start + timedelta(days=length - 1))
        clash = any(a["person"] == person["id"] and a["start"] <= d.isoformat() <= a["end"]
                    for a in absences for d in days)
        if clash or any(present[d] - 1 < _demand(needs, d, False) + 1 for d in days):
            continue
        for d in days:
            present[d] -= 1
        absences.append({"id": f"a{len(absences) + 1:04d}", "person": person["id"],
                         "start": days[0].isoformat(), "end": days[-1].isoformat(),
                         "leave_type": rng.choice(["conference", "vacation"]), "blocking": True})
    return present


def _cap_to_faculty(needs: list[_Need], present: dict[date, int], first: date, last: date) -> None:
    """Lower maxima (clinic first, then wards, then ICU) until faculty suffice at max staffing."""
    def group(need: _Need) -> str:  # AM and PM clinic are lowered together
        return "CLINIC" if need.shift.startswith("CLINIC") else need.shift

    order = sorted((n for n in needs if n.supervision),
                   key=lambda n: ("CLINIC", "WARD_DAY", "ICU_DAY").index(group(n)))
    for day in _days(first, last):
        while _demand(needs, day, True) > present[day]:
            shrinkable = [n for n in order if n.on(day) and n.max > n.min]
            if not shrinkable:
                raise RuntimeError(f"{day}: too few faculty to supervise the minimum staffing")
            for need in shrinkable:
                if group(need) == group(shrinkable[0]):
                    need.max -= 1


def _merged(needs: list[_Need]) -> list[dict[str, Any]]:
    """Slot patterns, consecutive weeks with the same staffing merged into one."""
    out: list[dict[str, Any]] = []
    last_of: dict[str, dict[str, Any]] = {}
    for need in needs:
        if need.max == 0:
            continue
        pattern: dict[str, Any] = {"shift": need.shift, "days": need.days,
                                   "from": need.start.isoformat(), "to": need.end.isoformat(),
                                   "min": need.min, "max": need.max}
        if need.pgy_min:
            pattern["pgy_min"] = dict(need.pgy_min)
        if need.supervision:
            pattern["supervision"] = dict(need.supervision)
            pattern["faculty_max"] = max(1, need.faculty(need.max))
        prev = last_of.get(need.shift)
        if (
            prev is not None
            and _staffing(prev) == _staffing(pattern)
            and date.fromisoformat(prev["to"]) + timedelta(days=1) == need.start
        ):
            prev["to"] = pattern["to"]
            continue
        out.append(pattern)
        last_of[need.shift] = pattern
    return out


def _staffing(pattern: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in pattern.items() if k not in ("from", "to")}


def _requests(
    rng: random.Random,
    residents: list[dict[str, Any]],
    away: dict[str, tuple[date, date]],
    first: date,
    last: date,
    requests: list[dict[str, Any]],
) -> None:
    """A handful of day-off wishes per block (weight 1-5), never on a leave day."""
    taken = {(r["person"], r["date"]) for r in requests}
    days = _days(first, last)
    for _ in range(max(2, len(residents) // 6)):
        person = rng.choice(residents)
        day = rng.choice(days)
        leave = away.get(person["id"])
        if (leave and leave[0] <= day <= leave[1]) or (person["id"], day.isoformat()) in taken:
            continue
        taken.add((person["id"], day.isoformat()))
        requests.append({"id": f"q{len(requests) + 1:04d}", "person": person["id"],
                         "date": day.isoformat(), "wants": False, "weight": rng.randint(1, 5)})
