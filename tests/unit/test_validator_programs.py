"""The validator on whole generated programs: a compliant schedule for `small` validates
clean; one changed shift that breaks 24+4 is caught; it never crashes on random input."""

from __future__ import annotations

import random
from datetime import timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rsched.domain import Assignment, ShiftKind
from rsched.programfile.generator import generate_program
from rsched.programfile.loader import parse_program
from rsched.rules.report import validate
from rsched.solver.api import SolveParams, solve


def test_compliant_small_schedule_then_one_shift_breaks_24_4() -> None:
    data = parse_program(generate_program("small", 2))
    result = solve(data, SolveParams(time_limit=20, deterministic=True))
    assert result.report is not None and result.report.ok and result.report.coverage == 1.0
    assignments = list(result.assignments)
    assert validate(data, assignments).violations == ()

    # one change: give a resident coming off 24-h call the ICU day shift that follows it
    by_id = data.slot_by_id
    calls = [a for a in assignments if by_id[a.slot_id].kind is ShiftKind.IN_HOUSE_CALL]
    assert calls, "the small program has in-house call"
    call = calls[0]
    end = by_id[call.slot_id].end
    following = next(
        s
        for s in data.slots
        if s.start == end and s.kind is not ShiftKind.IN_HOUSE_CALL and s.shift == "ICU_DAY"
    )
    changed = [*assignments, Assignment(person_id=call.person_id, slot_id=following.id)]
    report = validate(data, changed)
    breaches = [v for v in report.violations if v.rule == "CONTINUOUS_24_4"]
    assert len(breaches) == 1
    assert breaches[0].person == call.person_id and breaches[0].value == 36.0


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), density=st.floats(0.0, 1.0), shuffle=st.integers(0, 99))
def test_validator_never_crashes_on_generated_programs(
    seed: int, density: float, shuffle: int
) -> None:
    data = parse_program(generate_program("small", seed))
    rng = random.Random(shuffle)
    people = [p.id for p in data.people]
    # arbitrary (often illegal) assignments: every rule must report, never raise
    pairs = {
        (rng.choice(people), s.id) for s in data.slots for _ in range(3) if rng.random() < density
    }
    report = validate(data, [Assignment(person_id=p, slot_id=s) for p, s in pairs])
    assert 0.0 <= report.coverage <= 1.0
    for v in (*report.violations, *report.warnings):
        assert v.rule and v.message
        if v.start is not None and v.end is not None:
            assert v.end - v.start >= timedelta(0)
