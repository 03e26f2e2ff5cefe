"""The synthetic program generator: sizes, determinism, no real names, and feasibility.

Feasibility is shown, not assumed: a plain greedy builds a schedule for each generated
program and the rule engine's own validator must find no hard violation (and, with the
greedy's 8 h / 14 h rest margins, no warning) and full coverage.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from datetime import date, datetime, timedelta

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rsched.domain import Assignment, Person, PersonKind, ProgramData, ShiftKind, Slot
from rsched.programfile.generator import SIZES, generate_program, generate_programs
from rsched.programfile.loader import load_program, parse_program
from rsched.rules.report import validate
from rsched.rules.staffing import faculty_needed

HOUR = timedelta(hours=1)


def _people(mapping: dict) -> tuple[list[dict], list[dict]]:
    people = mapping["people"]
    return [p for p in people if p["kind"] == "resident"], [
        p for p in people if p["kind"] == "faculty"
    ]


@pytest.mark.parametrize(
    ("size", "per_pgy", "faculty", "days"),
    [("small", 4, 4, 28), ("medium", 12, 12, 28), ("large", 30, 30, 28), ("year", 12, 12, 364)],
)
def test_sizes_have_the_headcounts_of_the_domain(size, per_pgy, faculty, days) -> None:
    mapping = generate_program(size, 1)
    residents, fac = _people(mapping)
    by_pgy = defaultdict(int)
    for r in residents:
        by_pgy[r["pgy"]] += 1
    assert dict(by_pgy) == {1: per_pgy, 2: per_pgy, 3: per_pgy}
    assert len(fac) == faculty
    start = date.fromisoformat(mapping["horizon"]["start"])
    end = date.fromisoformat(mapping["horizon"]["end"])
    assert start == date(2026, 7, 1)
    assert (end - start).days + 1 == days


def test_gme_is_several_programs_with_300_residents_and_100_faculty() -> None:
    programs = generate_programs("gme", 1)
    assert len(programs) >= 2
    assert sum(len(_people(p)[0]) for p in programs) == 300
    assert sum(len(_people(p)[1]) for p in programs) == 100
    assert len({p["program"]["id"] for p in programs}) == len(programs)
    assert len({p["program"]["timezone"] for p in programs}) > 1
    assert generate_program("gme", 1) == programs[0]


def test_same_seed_same_program_other_seed_other_program() -> None:
    assert generate_program("medium", 7) == generate_program("medium", 7)
    assert generate_program("medium", 7) != generate_program("medium", 8)
    assert generate_programs("gme", 2) == generate_programs("gme", 2)


def test_unknown_size_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown size"):
        generate_program("huge", 1)


@pytest.mark.parametrize("size", list(SIZES))
def test_no_real_names(size: str) -> None:
    for mapping in generate_programs(size, 3):
        for person in mapping["people"]:
            assert re.fullmatch(r"(Resident|Faculty) \d{2,3}", person["name"]), person
            assert re.fullmatch(r"([a-z]+-)?[rf]\d{2,3}", person["id"]), person


@pytest.mark.parametrize("size", list(SIZES))
def test_every_size_loads(size: str) -> None:
    for mapping in generate_programs(size, 1):
        data = parse_program(mapping)
        assert len(data.people) == len(mapping["people"])
        assert data.slots and data.rotation_assignments and data.absences and data.requests
        assert {s.shift for s in data.slots} == {t.code for t in data.shift_types}


def test_generated_file_round_trips_through_yaml_and_json(tmp_path) -> None:
    mapping = generate_program("small", 5)
    direct = parse_program(mapping)
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(mapping, sort_keys=False), "utf-8")
    (tmp_path / "p.json").write_text(json.dumps(mapping), "utf-8")
    for name in ("p.yaml", "p.json"):
        loaded = load_program(tmp_path / name)
        assert loaded.slots == direct.slots
        assert loaded.people == direct.people
        assert loaded.absences == direct.absences


def test_vacations_are_whole_weeks_of_about_one_resident_in_ten() -> None:
    mapping = generate_program("year", 4)
    residents = {p["id"] for p in _people(mapping)[0]}
    vacations = [a for a in mapping["absences"] if a["person"] in residents]
    for a in vacations:
        assert (date.fromisoformat(a["end"]) - date.fromisoformat(a["start"])).days == 6
        assert a["leave_type"] == "vacation"
    per_block = len(vacations) / 13
    assert 0.05 * len(residents) <= per_block <= 0.15 * len(residents)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(min_value=0, max_value=2**31))
def test_generated_small_programs_load_for_any_seed(seed: int) -> None:
    data = parse_program(generate_program("small", seed))
    assert len(data.residents()) == 12


# ------------------------------------------------------------------ feasibility


def _witness(data: ProgramData) -> list[Assignment]:
    """A greedy schedule: each slot's PGY seats then its minimum, least-loaded first,
    keeping 8 h rest (14 h after a 24-h call), ≤ 5 duty days and ≤ 60 h a block week;
    then the faculty that supervision needs."""
    tz = data.tz
    types = data.shift_type_by_code
    leave = defaultdict(list)
    for a in data.absences:
        if a.blocking:
            leave[a.person_id].append((a.start, a.end))
    work: dict[str, list[Slot]] = defaultdict(list)
    week_days: dict[tuple[str, int, int], set[date]] = defaultdict(set)
    week_minutes: dict[tuple[str, int, int], int] = defaultdict(int)

    def day_of(s: Slot) -> date:
        return s.start.astimezone(tz).date()

    def week_of(pid: str, s: Slot) -> tuple[str, int, int]:
        n = data.block_number_of(day_of(s)) or 0
        return pid, n, (day_of(s) - data.blocks[n - 1].start).days // 7

    def free(pid: str, s: Slot, rest: bool) -> bool:
        if any(a < s.end and s.start < b for a, b in leave[pid]):
            return False
        for o in work[pid]:
            if abs(o.start - s.start) > 3 * 24 * HOUR:
                continue
            if o.start < s.end and s.start < o.end:
                return False
            first, second = (o, s) if o.end <= s.start else (s, o)
            need = 14 * HOUR if first.kind is ShiftKind.IN_HOUSE_CALL else 8 * HOUR
            if rest and second.start - first.end < need:
                return False
        return True

    def eligible(p: Person, s: Slot) -> bool:
        t = types[s.shift]
        rotation = data.rotation_of.get((p.id, data.block_number_of(day_of(s)) or 0))
        return (
            p.pgy in t.eligible_pgy
            and t.required_tags <= p.tags
            and rotation is not None
            and s.shift in data.rotation_by_id[rotation].shift_types
        )

    def fits(p: Person, s: Slot) -> bool:
        key = week_of(p.id, s)
        new_day = day_of(s) not in week_days[key]
        return (
            eligible(p, s)
            and not (new_day and len(week_days[key]) >= 5)
            and week_minutes[key] + (s.minutes if s.counts_toward_hours else 0) <= 60 * 60
            and free(p.id, s, rest=True)
        )

    residents = data.residents()
    staffed: dict[str, list[Person]] = {}
    order = sorted(
        data.slots,
        key=lambda s: (day_of(s), s.kind is not ShiftKind.IN_HOUSE_CALL, not s.pgy_min, s.start),
    )
    for s in order:
        chosen: list[Person] = []
        seats = [*sorted(s.pgy_min.items(), reverse=True), (1, s.min_staff)]
        for level, least in seats:
            have = sum(1 for p in chosen if (p.pgy or 0) >= level)
            pool = [p for p in residents if (p.pgy or 0) >= level and p not in chosen]
            pool = sorted((p for p in pool if fits(p, s)),
                          key=lambda p: (week_minutes[week_of(p.id, s)], p.id))
            chosen += pool[: max(0, least - have)]
        for p in chosen:
            work[p.id].append(s)
            week_days[week_of(p.id, s)].add(day_of(s))
            week_minutes[week_of(p.id, s)] += s.minutes if s.counts_toward_hours else 0
        staffed[s.id] = chosen
    out = [Assignment(person_id=p.id, slot_id=sid) for sid, ps in staffed.items() for p in ps]
    faculty = [p for p in data.people if p.kind is PersonKind.FACULTY and p.active]
    for s in sorted(data.slots, key=lambda s: s.start):
        need = faculty_needed(s, staffed[s.id]) if s.supervision else 0
        pool = sorted((f for f in faculty if free(f.id, s, rest=False)),
                      key=lambda f: (len(work[f.id]), f.id))
        for f in pool[:need]:
            work[f.id].append(s)
            out.append(Assignment(person_id=f.id, slot_id=s.id))
    return out


@pytest.mark.parametrize(
    ("size", "seeds"),
    [("small", range(6)), ("medium", range(3)), ("large", range(1)), ("gme", range(1))],
)
def test_generated_programs_are_feasible(size: str, seeds: range) -> None:
    for seed in seeds:
        for mapping in generate_programs(size, seed):
            data = parse_program(mapping)
            report = validate(data, _witness(data))
            assert [v.message for v in report.violations] == [], (size, seed)
            assert [v.message for v in report.warnings] == [], (size, seed)
            assert report.coverage == 1.0


@pytest.mark.slow
def test_generated_year_is_feasible() -> None:
    data = parse_program(generate_program("year", 2))
    report = validate(data, _witness(data))
    assert [v.message for v in report.violations] == []
    assert report.coverage == 1.0


def _worst_need(data: ProgramData, s: Slot) -> int:
    """Faculty the slot needs at its maximum staffing with as many PGY-1s as can be on it."""
    block = data.block_number_of(s.start.astimezone(data.tz).date())
    members = [
        data.person_by_id[a.person_id]
        for a in data.rotation_assignments
        if a.block == block and s.shift in data.rotation_by_id[a.rotation_id].shift_types
    ]
    members.sort(key=lambda p: p.pgy or 0)
    return faculty_needed(s, members[: s.max_staff])


@pytest.mark.parametrize("size", ["small", "medium", "large"])
def test_faculty_suffice_for_the_maximum_staffing_of_concurrent_slots(size: str) -> None:
    data = parse_program(generate_program(size, 2))
    faculty = [p for p in data.people if p.kind is PersonKind.FACULTY]
    supervised = [s for s in data.slots if s.supervision]
    for s in supervised:
        assert _worst_need(data, s) <= s.faculty_max
    instants: list[datetime] = [s.start for s in supervised]
    for t in instants:
        need = sum(_worst_need(data, s) for s in supervised if s.start <= t < s.end)
        present = sum(
            1
            for f in faculty
            if not any(a.start <= t < a.end for a in data.absences_by_person.get(f.id, []))
        )
        assert need <= present, t
