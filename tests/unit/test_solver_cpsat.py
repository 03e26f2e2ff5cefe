"""CP-SAT over the rule engine's model: every hard rule holds under temptation, the
validator agrees with the solver, abort and infeasibility behave."""

from __future__ import annotations

import time
from datetime import date
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rsched.domain import Request, ShiftKind
from rsched.solver.api import SolveParams, solve
from rsched.solver.control import Control
from rsched.solver.result import SolveStatus

from .builders import faculty, mkslot, program, resident, vacation

FAST = SolveParams(time_limit=10, workers=2)


def wants_every_slot(slots, person: str = "r1", weight: int = 100):  # type: ignore[no-untyped-def]
    """Requests that reward working every slot: the solver is tempted to break rules."""
    tz = ZoneInfo("America/New_York")
    reqs = []
    for i, s in enumerate(slots):
        day = s.start.astimezone(tz).date()
        reqs.append(
            Request(id=f"q{i}", person_id=person, day=day, wants=True, weight=weight, shift=s.shift)
        )
    return reqs


def _solve_clean(data):  # type: ignore[no-untyped-def]
    result = solve(data, FAST)
    assert result.has_schedule, result.explanation
    assert result.report is not None
    assert result.report.violations == (), [v.message for v in result.report.violations]
    return result


def test_hours_and_days_off_hold_when_the_resident_wants_every_shift() -> None:
    slots = [mkslot(f"DAY-{d}", d, 7, 12, shift="DAY") for d in range(28)]
    data = program(people=[resident("r1")], slots=slots, requests=wants_every_slot(slots))
    result = _solve_clean(data)
    # 80 h/week over 28 days = 320 h = 26 shifts of 12 h, but 4 days off are needed: 24
    assert len(result.assignments) == 24


def test_call_q3_holds_under_temptation() -> None:
    slots = [
        mkslot(f"CALL-{d}", d, 17, 14, ShiftKind.IN_HOUSE_CALL, shift="CALL") for d in range(28)
    ]
    data = program(people=[resident("r1", 2)], slots=slots, requests=wants_every_slot(slots))
    result = _solve_clean(data)
    assert len(result.assignments) == 10  # ceil(28 / 3)


def test_continuous_duty_and_rest_after_call_hold_under_temptation() -> None:
    slots = []
    for d in range(0, 14):
        slots.append(mkslot(f"CALL-{d}", d, 7, 24, ShiftKind.IN_HOUSE_CALL, shift="CALL"))
        slots.append(mkslot(f"EVE-{d}", d + 1, 9, 6, shift="EVE"))  # 2 h after call ends
    data = program(
        people=[resident("r1", 2)], slots=slots, days=15, requests=wants_every_slot(slots)
    )
    result = _solve_clean(data)
    assert result.assignments


def test_supervision_coverage_and_availability() -> None:
    slots = [
        mkslot(
            f"CLINIC-{d}",
            d,
            8,
            4,
            ShiftKind.CLINIC,
            shift="CLINIC",
            min_staff=3,
            max_staff=4,
            supervision={1: 2, 0: 4},
            faculty_max=2,
            pgy_min={2: 1},
        )
        for d in range(7)
    ]
    people = [
        resident("a", 1),
        resident("b", 1),
        resident("c", 2),
        resident("d", 3),
        faculty("f1"),
        faculty("f2"),
    ]
    data = program(people=people, slots=slots, days=7, absences=[vacation("v", "d", 2, 2)])
    result = _solve_clean(data)
    assert result.report is not None and result.report.coverage == 1.0
    assert not any(
        a.person_id == "d" and a.slot_id in ("CLINIC-2", "CLINIC-3") for a in result.assignments
    )


def test_infeasible_program_is_explained_not_just_infeasible() -> None:
    slots = [mkslot("WARD-0", 0, 7, 12, shift="WARD", min_staff=3, max_staff=3)]
    data = program(
        people=[resident("a"), resident("b"), resident("c")],
        slots=slots,
        days=1,
        absences=[vacation("v", "c", 0, 1)],
    )
    result = solve(data, FAST)
    assert result.status is SolveStatus.INFEASIBLE
    assert any("WARD" in line and "c on leave" in line for line in result.explanation)


def test_abort_before_first_solution_returns_quickly() -> None:
    slots = [mkslot(f"DAY-{d}", d, 7, 12, shift="DAY", min_staff=1, max_staff=2) for d in range(28)]
    data = program(people=[resident(f"r{i}") for i in range(6)], slots=slots)
    t0 = time.monotonic()
    result = solve(data, SolveParams(time_limit=60), Control(should_abort=lambda: True))
    assert time.monotonic() - t0 < 3  # model build + one abort poll, far under the limit
    assert result.stop_reason in ("aborted", "completed")


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n_res=st.integers(2, 6),
    n_days=st.integers(3, 10),
    need=st.integers(0, 2),
    vac=st.integers(0, 9),
)
def test_solver_results_always_revalidate_clean(
    n_res: int, n_days: int, need: int, vac: int
) -> None:
    slots = []
    for d in range(n_days):
        slots.append(mkslot(f"DAY-{d}", d, 7, 12, shift="DAY", min_staff=need, max_staff=3))
        slots.append(
            mkslot(
                f"NIGHT-{d}",
                d,
                19,
                12,
                ShiftKind.NIGHT_FLOAT,
                shift="NIGHT",
                min_staff=min(need, 1),
                max_staff=1,
            )
        )
    people = [resident(f"r{i}", 1 + i % 3) for i in range(n_res)]
    absences = [vacation("v", "r0", vac % n_days, 2)]
    data = program(people=people, slots=slots, days=n_days, absences=absences)
    result = solve(data, SolveParams(time_limit=10))
    assert result.report is not None
    if result.has_schedule:
        assert result.report.violations == ()
        assert not result.notes
    else:
        assert result.status is SolveStatus.INFEASIBLE and result.explanation


def test_objective_matches_evaluated_penalties() -> None:
    slots = [
        mkslot(f"N-{d}", d, 19, 12, ShiftKind.NIGHT_FLOAT, shift="N", min_staff=1, max_staff=1)
        for d in range(14)
    ]
    people = [resident("a", 1), resident("b", 1), resident("c", 1)]
    reqs = [Request(id="off", person_id="a", day=date(2026, 7, 3), wants=False, weight=3)]
    data = program(people=people, slots=slots, days=15, requests=reqs)
    result = _solve_clean(data)
    assert result.report is not None
    assert result.objective == pytest.approx(result.report.objective)
