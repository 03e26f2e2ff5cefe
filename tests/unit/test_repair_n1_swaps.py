"""Changes after publishing: repair after new leave, N-1, and swaps that never break a
hard rule (CONTINUOUS_24_4 and CALL_Q3 crafted on purpose)."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, time, timedelta

import pytest

from rsched.domain import (
    Absence,
    Assignment,
    InvalidInput,
    ProgramData,
    Severity,
    ShiftKind,
    ShiftType,
)
from rsched.domain.calendar import local_date, local_midnight
from rsched.programfile.generator import generate_program
from rsched.programfile.loader import parse_program
from rsched.rules.report import validate
from rsched.solver.api import SolveParams, solve
from rsched.solver.n1 import n_minus_one
from rsched.solver.repair import minimum_margin, repair, schedule_diff
from rsched.solver.swaps import SwapChange, check_swap, swap_candidates

from .builders import assign, faculty, mkslot, program, resident, vacation

FAST = SolveParams(time_limit=20, workers=2)


def _pairs(assignments: list[Assignment] | tuple[Assignment, ...]) -> set[tuple[str, str]]:
    return {(a.person_id, a.slot_id) for a in assignments}


# ----------------------------------------------------------------------- repair


@pytest.fixture(scope="module")
def small_solved() -> tuple[ProgramData, tuple[Assignment, ...]]:
    data = parse_program(generate_program("small", 3))
    result = solve(data, FAST)
    assert result.has_schedule and result.report is not None and result.report.ok
    return data, result.assignments


def _busiest_in_week(data: ProgramData, assignments: tuple[Assignment, ...], first: date) -> str:
    """The resident with the most assignments in the week from ``first`` and no leave."""
    week = {first + timedelta(days=i) for i in range(7)}
    on_leave = {a.person_id for a in data.absences}
    counts: dict[str, int] = {}
    for a in assignments:
        person = data.person_by_id[a.person_id]
        day = local_date(data.slot_by_id[a.slot_id].start, data.tz)
        if person.is_resident and person.id not in on_leave and day in week:
            counts[person.id] = counts.get(person.id, 0) + 1
    return max(sorted(counts), key=counts.__getitem__)


def test_repair_after_a_week_of_vacation_changes_only_the_affected_days(
    small_solved: tuple[ProgramData, tuple[Assignment, ...]],
) -> None:
    data, active = small_solved
    first = data.start + timedelta(days=7)
    who = _busiest_in_week(data, active, first)
    leave = Absence(
        id="new-vacation",
        person_id=who,
        start=local_midnight(first, data.tz),
        end=local_midnight(first + timedelta(days=7), data.tz),
    )
    now = replace(data, absences=(*data.absences, leave))
    assert validate(now, active).count_by_rule(Severity.VIOLATION).get("AVAILABILITY")

    fixed = repair(now, active, params=FAST)

    assert fixed.status == "repaired"
    assert fixed.report.violations == ()
    assert fixed.report.coverage == 1.0
    # only slots of the re-solved days changed, and those days are the leave ± margin
    assert fixed.diff.slots() <= fixed.free_slots
    margin = max(1, minimum_margin(now))
    lo, hi = first - timedelta(days=margin), first + timedelta(days=7 + margin)
    assert fixed.days and all(lo <= d <= hi for d in fixed.days)
    outside = {pr for pr in _pairs(active) if pr[1] not in fixed.free_slots}
    assert outside <= _pairs(fixed.assignments)
    assert not any(
        a.person_id == who
        and a.slot_id in fixed.free_slots
        and now.slot_by_id[a.slot_id].start >= leave.start
        and now.slot_by_id[a.slot_id].start < leave.end
        for a in fixed.assignments
    )
    # far fewer changes than solving the whole program again
    full = solve(now, FAST)
    assert full.has_schedule
    full_diff = schedule_diff(_pairs(active), _pairs(full.assignments))
    assert fixed.diff.changed < full_diff.changed
    assert fixed.diff.n_added + fixed.diff.n_removed < full_diff.n_added + full_diff.n_removed


def test_repair_of_an_unbroken_schedule_changes_nothing(
    small_solved: tuple[ProgramData, tuple[Assignment, ...]],
) -> None:
    data, active = small_solved
    same = repair(data, active, params=FAST)
    assert same.status == "unchanged"
    assert same.diff.changed == 0 and same.result is None
    assert _pairs(same.assignments) == _pairs(active)


def test_repair_widens_when_a_count_over_the_period_needs_more_than_the_margin() -> None:
    # 7 days: at most ceil(7 / 3) = 3 in-house calls each. p falls ill on days 3-6;
    # q is the only one left for CALL-6 but already has 3 calls, so q must give up
    # CALL-0 or CALL-2 to x (on leave from day 3): days the first margin does not reach.
    slots = [
        mkslot(
            f"CALL-{d}",
            d,
            17,
            14,
            ShiftKind.IN_HOUSE_CALL,
            min_staff=1 if d in (0, 2, 4, 6) else 0,
            max_staff=1,
        )
        for d in range(7)
    ]
    people = [resident("p", 2), resident("q", 2), resident("x", 2)]
    before = program(people=people, slots=slots, days=7, absences=[vacation("vx", "x", 3, 4)])
    active = assign(("q", "CALL-0"), ("q", "CALL-2"), ("q", "CALL-4"), ("p", "CALL-6"))
    assert validate(before, active).ok
    now = replace(before, absences=(*before.absences, vacation("vp", "p", 3, 4)))

    fixed = repair(now, active, params=FAST)

    assert [(a.margin, a.status) for a in fixed.attempts] == [(2, "infeasible"), (None, "optimal")]
    assert fixed.status == "repaired" and fixed.report.violations == ()
    assert fixed.diff.changed == 2
    assert ("q", "CALL-6") in _pairs(fixed.assignments)


def test_repair_that_cannot_cover_a_slot_says_so() -> None:
    shift_types = [
        ShiftType(
            code="SENIOR",
            name="Senior clinic",
            start=time(8),
            duration_minutes=4 * 60,
            kind=ShiftKind.CLINIC,
            eligible_pgy=frozenset({3}),
        )
    ]
    slots = [mkslot(f"SENIOR-{d}", d, 8, 4, ShiftKind.CLINIC, min_staff=1) for d in range(3)]
    people = [resident("r1", 1), resident("r3", 3)]
    before = program(people=people, slots=slots, days=7, shift_types=shift_types)
    active = assign(("r3", "SENIOR-0"), ("r3", "SENIOR-1"), ("r3", "SENIOR-2"))
    assert validate(before, active).ok
    now = replace(before, absences=(vacation("v", "r3", 1, 1),))

    fixed = repair(now, active, params=FAST)

    assert fixed.status == "partial"
    assert [(v.rule, v.slot) for v in fixed.report.violations] == [("COVERAGE", "SENIOR-1")]
    assert _pairs(fixed.assignments) == {("r3", "SENIOR-0"), ("r3", "SENIOR-2")}


# -------------------------------------------------------------------------- N-1


def test_n_minus_one_reports_exactly_the_irreplaceable_person() -> None:
    shift_types = [
        ShiftType(
            code="DAY", name="Day", start=time(7), duration_minutes=8 * 60, kind=ShiftKind.INPATIENT
        ),
        ShiftType(
            code="SENIOR",
            name="Senior clinic",
            start=time(8),
            duration_minutes=4 * 60,
            kind=ShiftKind.CLINIC,
            eligible_pgy=frozenset({3}),
        ),
    ]
    slots = [mkslot(f"DAY-{d}", d, 7, 8, min_staff=1, max_staff=2) for d in range(7)]
    slots += [
        mkslot(f"SENIOR-{d}", d, 8, 4, ShiftKind.CLINIC, min_staff=1, max_staff=1) for d in (1, 3)
    ]
    data = program(
        people=[resident("r1", 1), resident("r2", 1), resident("r3", 3), faculty("f1")],
        slots=slots,
        days=7,
        shift_types=shift_types,
    )
    schedule = assign(
        ("r1", "DAY-0"),
        ("r1", "DAY-2"),
        ("r1", "DAY-4"),
        ("r1", "DAY-6"),
        ("r2", "DAY-1"),
        ("r2", "DAY-3"),
        ("r2", "DAY-5"),
        ("r3", "SENIOR-1"),
        ("r3", "SENIOR-3"),
    )
    assert validate(data, schedule).ok

    report = n_minus_one(
        data, schedule, params_per_person=SolveParams(time_limit=5, workers=1), jobs=1
    )

    assert report.not_absorbable == ["r3"]
    by_person = {e.person: e for e in report.entries}
    assert set(by_person) == {"r1", "r2", "r3", "f1"}
    r3 = by_person["r3"]
    assert r3.proved and r3.method == "solver"
    assert r3.unfilled == ("SENIOR-1", "SENIOR-3")
    assert r3.broken == {"COVERAGE": 2}
    for pid in ("r1", "r2"):
        entry = by_person[pid]
        assert entry.absorbable and entry.proved
        # every slot of theirs changes hands once, nothing else moves
        assert entry.diff.changed == entry.assignments
    assert by_person["f1"].method == "none" and by_person["f1"].absorbable


# ------------------------------------------------------------------------ swaps


def _assert_every_offer_is_clean(
    data: ProgramData, schedule: list[Assignment], person: str, slot: str
) -> list[SwapChange]:
    offers = swap_candidates(data, schedule, person_id=person, slot_id=slot)
    for offer in offers:
        assert check_swap(data, schedule, offer.change) == []
        after = (_pairs(schedule) - set(offer.change.removed)) | set(offer.change.added)
        report = validate(data, [Assignment(person_id=p, slot_id=s) for p, s in after])
        assert report.violations == (), offer
    return [o.change for o in offers]


def test_swaps_never_offer_a_give_away_that_breaks_24_plus_4() -> None:
    slots = [
        mkslot("CALL-0", 0, 7, 24, ShiftKind.IN_HOUSE_CALL, min_staff=0, max_staff=1),
        mkslot("AM-1", 1, 7, 6, min_staff=1, max_staff=1),
    ]
    data = program(
        people=[resident("p", 2), resident("q", 2), resident("x", 2)], slots=slots, days=7
    )
    schedule = assign(("q", "CALL-0"), ("p", "AM-1"))
    assert validate(data, schedule).ok

    offered = _assert_every_offer_is_clean(data, schedule, "p", "AM-1")

    give_to_q = SwapChange(person_id="p", slot_id="AM-1", taker_id="q")
    assert give_to_q not in offered
    assert SwapChange(person_id="p", slot_id="AM-1", taker_id="x") in offered
    refused = check_swap(data, schedule, give_to_q)
    assert "CONTINUOUS_24_4" in {v.rule for v in refused}
    assert all(v.person == "q" for v in refused)


def test_swaps_never_offer_a_fourth_call_in_seven_days() -> None:
    slots = [
        mkslot(f"CALL-{d}", d, 17, 14, ShiftKind.IN_HOUSE_CALL, min_staff=0, max_staff=1)
        for d in range(7)
    ]
    data = program(
        people=[resident("p", 2), resident("q", 2), resident("x", 2)], slots=slots, days=7
    )
    # q is at the limit: ceil(7 / 3) = 3 calls
    schedule = assign(("q", "CALL-0"), ("q", "CALL-2"), ("q", "CALL-4"), ("p", "CALL-6"))
    assert validate(data, schedule).ok

    offered = _assert_every_offer_is_clean(data, schedule, "p", "CALL-6")

    give_to_q = SwapChange(person_id="p", slot_id="CALL-6", taker_id="q")
    assert give_to_q not in offered
    assert SwapChange(person_id="p", slot_id="CALL-6", taker_id="x") in offered
    # q may still trade one of their calls for it: their count stays at 3
    assert any(c.taker_id == "q" and c.kind == "trade" for c in offered)
    refused = check_swap(data, schedule, give_to_q)
    assert [(v.rule, v.person, v.value, v.limit) for v in refused] == [("CALL_Q3", "q", 4.0, 3.0)]


def test_swap_ranking_prefers_the_fairer_taker() -> None:
    slots = [
        mkslot(f"CALL-{d}", d, 17, 14, ShiftKind.IN_HOUSE_CALL, min_staff=0, max_staff=1)
        for d in range(7)
    ]
    data = program(
        people=[resident("p", 2), resident("q", 2), resident("x", 2)], slots=slots, days=7
    )
    schedule = assign(("q", "CALL-0"), ("q", "CALL-2"), ("p", "CALL-4"), ("p", "CALL-6"))
    offers = swap_candidates(data, schedule, person_id="p", slot_id="CALL-6")
    best = offers[0]
    # x has no call: giving it to x narrows the call spread (2-0 → 1-1)
    assert best.change == SwapChange(person_id="p", slot_id="CALL-6", taker_id="x")
    assert best.spread_delta == {"call_spread": -1}
    assert best.fairness_cost < 0
    with pytest.raises(InvalidInput, match="not assigned"):
        swap_candidates(data, schedule, person_id="x", slot_id="CALL-6")
