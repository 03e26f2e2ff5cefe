"""The greedy and MIP (HiGHS) solvers behind the common interface: clean schedules the
validator accepts, the MIP's optimum equals CP-SAT's, aborts stop both within a second
with the best schedule found, and infeasibility is reported honestly by each."""

from __future__ import annotations

import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rsched.domain import ProgramData, ShiftKind
from rsched.rules.report import validate
from rsched.solver.api import SOLVERS, SolveParams, solve
from rsched.solver.control import AbortFlag, Checkpoint, Control, Progress
from rsched.solver.model import build_model
from rsched.solver.result import SolveStatus, StopReason

from .builders import faculty, mkslot, program, resident, vacation

ALT = ("greedy", "mip")


def small_program() -> ProgramData:
    """Two weeks of supervised day shifts, nights and 24-h calls for eight residents."""
    slots = []
    for d in range(14):
        slots.append(
            mkslot(
                f"DAY-{d}", d, 7, 12, min_staff=2, max_staff=3, supervision={0: 4}, faculty_max=1
            )
        )
        slots.append(
            mkslot(f"NIGHT-{d}", d, 19, 12, ShiftKind.NIGHT_FLOAT, min_staff=1, max_staff=1)
        )
        if d % 4 == 0:
            slots.append(
                mkslot(f"CALL-{d}", d, 7, 24, ShiftKind.IN_HOUSE_CALL, min_staff=1, max_staff=1)
            )
    people = [resident(f"r{i}", pgy=1 + i % 3) for i in range(8)] + [faculty("f1"), faculty("f2")]
    return program(people=people, slots=slots, days=14)


def tiny_program() -> ProgramData:
    """Five nights for three PGY-1s: the night spread cannot be 0, so the optimum is > 0."""
    slots = [
        mkslot(f"DAY-{d}", d, 7, 10, min_staff=1, max_staff=2, supervision={0: 2}, faculty_max=1)
        for d in range(7)
    ] + [
        mkslot(f"NIGHT-{d}", d, 19, 12, ShiftKind.NIGHT_FLOAT, min_staff=1, max_staff=1)
        for d in range(5)
    ]
    people = [resident("a", 1), resident("b", 1), resident("c", 1), faculty("f")]
    return program(people=people, slots=slots, days=7)


def busy_program() -> ProgramData:
    """Four weeks, 24 residents and 6 faculty: HiGHS needs seconds to prove optimality."""
    slots = []
    for d in range(28):
        weekend = d % 7 >= 5
        slots.append(
            mkslot(
                f"WARD-{d}",
                d,
                7,
                11,
                min_staff=2 if weekend else 3,
                max_staff=5,
                supervision={1: 2, 0: 4},
                faculty_max=2,
                pgy_min={2: 1},
            )
        )
        if not weekend:
            for name, hour in (("CLINAM", 8), ("CLINPM", 13)):
                slots.append(
                    mkslot(
                        f"{name}-{d}",
                        d,
                        hour,
                        4,
                        ShiftKind.CLINIC,
                        min_staff=2,
                        max_staff=4,
                        supervision={0: 4},
                        faculty_max=1,
                    )
                )
        slots.append(
            mkslot(f"NIGHT-{d}", d, 19, 12, ShiftKind.NIGHT_FLOAT, min_staff=2, max_staff=2)
        )
        if d % 3 == 0:
            slots.append(
                mkslot(f"CALL-{d}", d, 7, 24, ShiftKind.IN_HOUSE_CALL, min_staff=1, max_staff=1)
            )
    people = [resident(f"r{i}", pgy=1 + i % 3) for i in range(24)]
    people += [faculty(f"f{i}") for i in range(6)]
    return program(people=people, slots=slots)


def infeasible_program() -> ProgramData:
    """The ward needs three residents; only two are eligible."""
    slots = [
        mkslot("WARD-0", 0, 7, 12, min_staff=3, max_staff=3),
        mkslot("NIGHT-0", 0, 19, 12, ShiftKind.NIGHT_FLOAT, min_staff=1, max_staff=1),
    ]
    return program(people=[resident("a"), resident("b"), faculty("f")], slots=slots, days=7)


@pytest.mark.parametrize("algorithm", ALT)
def test_schedule_is_free_of_hard_violations(algorithm: str) -> None:
    progress: list[Progress] = []
    checkpoints: list[Checkpoint] = []
    result = solve(
        small_program(),
        SolveParams(algorithm=algorithm, time_limit=20),
        Control(on_progress=progress.append, on_checkpoint=checkpoints.append),
    )
    assert result.status in (SolveStatus.OPTIMAL, SolveStatus.FEASIBLE), result.notes
    assert result.report is not None
    assert result.report.violations == (), [v.message for v in result.report.violations]
    assert result.report.coverage == 1.0
    assert result.claimed_violations == 0 and not result.notes
    assert result.time_to_first is not None and result.time_to_first <= result.wall_seconds
    assert checkpoints and checkpoints[-1].objective == pytest.approx(result.objective)
    assert set(checkpoints[-1].pairs) == {(a.person_id, a.slot_id) for a in result.assignments}
    assert sum(result.penalties.values()) == pytest.approx(result.objective)
    if algorithm == "greedy":
        # the greedy sets every penalty variable to its value on the schedule
        assert result.objective == pytest.approx(result.report.objective)
        assert result.bound is None
        assert progress  # reported before the first solution already


def test_mip_optimum_equals_cp_sat_optimum() -> None:
    data = tiny_program()
    exact = solve(data, SolveParams(algorithm="cp_sat", time_limit=20))
    mip = solve(data, SolveParams(algorithm="mip", time_limit=20))
    assert exact.status is SolveStatus.OPTIMAL and mip.status is SolveStatus.OPTIMAL
    assert exact.objective == 20  # one resident works two nights, the others one or two
    assert mip.objective == pytest.approx(exact.objective)
    assert mip.bound == pytest.approx(mip.objective) and mip.gap == 0
    assert mip.report is not None and mip.report.violations == ()
    assert mip.report.objective == pytest.approx(mip.objective)


@pytest.mark.parametrize("algorithm", ALT)
def test_abort_set_before_solving_returns_at_once(algorithm: str) -> None:
    flag = AbortFlag()
    flag.set()
    t0 = time.monotonic()
    result = solve(
        busy_program(), SolveParams(algorithm=algorithm, time_limit=60), Control(should_abort=flag)
    )
    # the model build happens before the solver; the solver itself returns at once
    assert result.wall_seconds < 3.0
    assert time.monotonic() - t0 < 5.0
    assert result.stop_reason is StopReason.ABORTED
    assert result.status is SolveStatus.UNKNOWN and result.assignments == ()


@pytest.mark.parametrize("algorithm", ALT)
def test_abort_while_solving_stops_within_a_second_with_the_best_schedule(
    algorithm: str,
) -> None:
    data = busy_program()
    spec = build_model(data)
    flag = AbortFlag()
    aborted_at: list[float] = []

    def first_solution(_cp: Checkpoint) -> None:
        if not flag():
            aborted_at.append(time.monotonic())
            flag.set()

    result = SOLVERS[algorithm](
        spec,
        SolveParams(algorithm=algorithm, time_limit=60),
        Control(should_abort=flag, on_checkpoint=first_solution),
    )
    returned = time.monotonic()
    assert aborted_at, "no solution found before the abort"
    assert returned - aborted_at[0] < 3.0
    assert result.stop_reason is StopReason.ABORTED
    assert result.status is SolveStatus.FEASIBLE  # the best schedule found, not nothing
    report = validate(data, result.assignments, candidates=spec.mctx.candidates)
    assert report.violations == () and report.coverage == 1.0


def test_infeasible_program_mip_proves_it() -> None:
    result = solve(infeasible_program(), SolveParams(algorithm="mip", time_limit=10))
    assert result.status is SolveStatus.INFEASIBLE
    assert result.stop_reason is StopReason.COMPLETED
    assert result.assignments == () and result.objective is None
    assert any("WARD" in line for line in result.explanation)


def test_infeasible_program_greedy_claims_what_it_left() -> None:
    result = solve(infeasible_program(), SolveParams(algorithm="greedy", time_limit=10))
    assert result.status is SolveStatus.UNKNOWN  # never FEASIBLE with a known violation
    assert result.stop_reason is StopReason.COMPLETED
    assert result.claimed_violations >= 1
    assert any("COVERAGE WARD-0" in note for note in result.notes)
    # the partial schedule is kept: both eligible residents are on the ward
    assert {(a.person_id, a.slot_id) for a in result.assignments} >= {
        ("a", "WARD-0"),
        ("b", "WARD-0"),
    }
    assert result.report is not None
    assert {v.rule for v in result.report.violations} == {"COVERAGE"}
    assert len(result.report.violations) == result.claimed_violations


@pytest.mark.parametrize("algorithm", ALT)
def test_fixed_pairs_are_kept(algorithm: str) -> None:
    data = small_program()
    fixed = frozenset({("r0", "NIGHT-3"), ("f2", "DAY-5")})
    result = solve(data, SolveParams(algorithm=algorithm, time_limit=20), fixed=fixed)
    assert result.has_schedule
    assert fixed <= {(a.person_id, a.slot_id) for a in result.assignments}
    assert result.report is not None and result.report.violations == ()


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n_res=st.integers(2, 6),
    n_days=st.integers(3, 10),
    need=st.integers(0, 2),
    vac=st.integers(0, 9),
)
def test_random_programs_greedy_is_honest_and_mip_agrees_with_cp_sat(
    n_res: int, n_days: int, need: int, vac: int
) -> None:
    slots = []
    for d in range(n_days):
        slots.append(mkslot(f"DAY-{d}", d, 7, 12, min_staff=need, max_staff=3))
        slots.append(
            mkslot(
                f"NIGHT-{d}", d, 19, 12, ShiftKind.NIGHT_FLOAT, min_staff=min(need, 1), max_staff=1
            )
        )
        if d % 3 == 0:
            slots.append(mkslot(f"CALL-{d}", d, 7, 24, ShiftKind.IN_HOUSE_CALL, max_staff=1))
    people = [resident(f"r{i}", 1 + i % 3) for i in range(n_res)]
    data = program(
        people=people, slots=slots, days=n_days, absences=[vacation("v", "r0", vac % n_days, 2)]
    )
    exact = solve(data, SolveParams(algorithm="cp_sat", time_limit=10))
    mip = solve(data, SolveParams(algorithm="mip", time_limit=10))
    greedy = solve(data, SolveParams(algorithm="greedy", time_limit=10))
    assert mip.status is exact.status
    if exact.status is SolveStatus.OPTIMAL:
        assert mip.objective == pytest.approx(exact.objective)
    for result in (mip, greedy):
        assert result.report is not None
        if result.has_schedule:
            assert result.report.violations == () and not result.notes
    assert greedy.report is not None
    if greedy.has_schedule:
        assert greedy.objective == pytest.approx(greedy.report.objective)
    else:
        assert greedy.status is SolveStatus.UNKNOWN
        assert greedy.claimed_violations >= 1 and greedy.report.violations
