"""One test per rule: a crafted schedule that breaks it (the rule code, person and value
are asserted) and the fixed schedule that passes. Each test looks only at its own rule,
and the fixed case proves the rule is what changed."""

from __future__ import annotations

from datetime import date, time, timedelta

import pytest

from rsched.domain import PersonKind, Rotation, RotationAssignment, ShiftKind, ShiftType, Slot
from rsched.domain.calendar import Period
from rsched.rules import RULE_BY_CODE, validate
from rsched.rules.base import CheckContext

from .builders import assign, faculty, mkslot, program, resident, vacation, with_rules


def found(code: str, data, assignments):  # type: ignore[no-untyped-def]
    return RULE_BY_CODE[code].check(CheckContext(data, assignments))


def days(n: int, prefix: str = "DAY", hour: float = 7, hours: float = 12, **kw):  # type: ignore[no-untyped-def]
    return [mkslot(f"{prefix}-{d}", d, hour, hours, **kw) for d in range(n)]


# ------------------------------------------------------------------ HOURS_80


def test_hours_80_flags_average_above_limit_and_passes_when_fixed() -> None:
    slots = days(28)
    data = program(people=[resident("r1")], slots=slots)
    # 6 of 7 days × 12 h = 72 h/week: fine
    ok = assign(*[("r1", f"DAY-{d}") for d in range(28) if d % 7 != 6])
    assert found("HOURS_80", data, ok) == []
    # 7 of 7 days × 12 h = 84 h/week: over
    bad = assign(*[("r1", f"DAY-{d}") for d in range(28)])
    (v,) = found("HOURS_80", data, bad)
    assert (v.rule, v.person, v.value, v.limit) == ("HOURS_80", "r1", 84.0, 80.0)


def test_hours_80_excludes_leave_days_from_the_average() -> None:
    slots = days(28)
    # a week of vacation: the average is over 21 days, so 21 × 72/7 h...
    data = program(people=[resident("r1")], slots=slots, absences=[vacation("a1", "r1", 21, 7)])
    # 18 shifts of 12 h = 216 h in 21 non-leave days = 72 h/week: fine
    ok = assign(*[("r1", f"DAY-{d}") for d in range(21) if d % 7 != 6])
    assert found("HOURS_80", data, ok) == []
    # 21 shifts = 252 h in 21 days = 84 h/week: over, though 252 h over 28 days would be 63
    bad = assign(*[("r1", f"DAY-{d}") for d in range(21)])
    (v,) = found("HOURS_80", data, bad)
    assert v.value == 84.0
    # with the setting that keeps leave in the average the same schedule passes
    kept = with_rules(data, exclude_leave_from_average=False)
    assert found("HOURS_80", kept, bad) == []


def test_hours_80_exception_allows_88() -> None:
    data = program(people=[resident("r1")], slots=days(28))
    bad = assign(*[("r1", f"DAY-{d}") for d in range(28)])  # 84 h/week
    assert found("HOURS_80", data, bad)
    assert found("HOURS_80", with_rules(data, hours_exception=True), bad) == []


def test_shift_crossing_a_period_boundary_is_split_at_the_boundary() -> None:
    # two periods of 7 days; a 24 h call from day 6 07:00 to day 7 07:00 is split 17 h / 7 h
    periods = [
        Period(start=date(2026, 7, 1), end=date(2026, 7, 7)),
        Period(start=date(2026, 7, 8), end=date(2026, 7, 14)),
    ]
    call = mkslot("CALL-6", 6, 7, 24, ShiftKind.IN_HOUSE_CALL)
    # 66 h already in period 1: 66 + 17 = 83 > 80; without the split it would be 90
    fill = [mkslot(f"D-{d}", d, 6, 11) for d in range(6)]
    data = program(people=[resident("r1")], slots=[call, *fill], days=14, periods=periods)
    (v,) = found("HOURS_80", data, assign(("r1", "CALL-6"), *[("r1", f"D-{d}") for d in range(6)]))
    assert v.value == 83.0
    # period 2 has only the 7 h tail of the call: no violation there
    assert v.start is not None and v.start.date() <= date(2026, 7, 1)


# ------------------------------------------------------------ DAY_OFF_1_IN_7


def test_day_off_needs_one_day_in_seven() -> None:
    data = program(people=[resident("r1")], slots=days(28, hour=7, hours=10))
    bad = assign(*[("r1", f"DAY-{d}") for d in range(28) if d not in (3, 10, 17)])
    (v,) = found("DAY_OFF_1_IN_7", data, bad)
    assert (v.person, v.value, v.limit) == ("r1", 3.0, 4.0)
    ok = assign(*[("r1", f"DAY-{d}") for d in range(28) if d not in (3, 10, 17, 24)])
    assert found("DAY_OFF_1_IN_7", data, ok) == []


def test_day_off_is_24_free_hours_not_a_calendar_day() -> None:
    # nights 19:00-07:00: skipping one night leaves 36 free hours but no free calendar day
    slots = days(27, prefix="N", hour=19, hours=12, kind=ShiftKind.NIGHT_FLOAT)
    data = program(people=[resident("r1")], slots=slots)
    sched = assign(*[("r1", f"N-{d}") for d in range(27) if d % 7 != 3])
    assert found("DAY_OFF_1_IN_7", data, sched) == []
    strict = with_rules(data, day_off_calendar_day=True)
    assert found("DAY_OFF_1_IN_7", strict, sched)


def test_leave_is_not_a_day_off() -> None:
    # one week vacation; 21 working days need 3 days off, the vacation does not count
    data = program(
        people=[resident("r1")], slots=days(28, hours=10), absences=[vacation("a", "r1", 0, 7)]
    )
    bad = assign(*[("r1", f"DAY-{d}") for d in range(7, 28) if d not in (10, 17)])
    (v,) = found("DAY_OFF_1_IN_7", data, bad)
    assert (v.value, v.limit) == (2.0, 3.0)
    ok = assign(*[("r1", f"DAY-{d}") for d in range(7, 28) if d not in (10, 17, 24)])
    assert found("DAY_OFF_1_IN_7", data, ok) == []


# ---------------------------------------------------------- CONTINUOUS_24_4


def test_continuous_24_merges_back_to_back_shifts() -> None:
    call = mkslot("CALL-0", 0, 7, 24, ShiftKind.IN_HOUSE_CALL)
    after = mkslot("CLINIC-1", 1, 7.5, 4, ShiftKind.CLINIC)  # starts 30 min after call: merged
    handoff = mkslot("HANDOFF-1", 1, 7, 2, ShiftKind.EDUCATION)
    data = program(people=[resident("r1", 2)], slots=[call, after, handoff], days=3)
    (v,) = found("CONTINUOUS_24_4", data, assign(("r1", "CALL-0"), ("r1", "CLINIC-1")))
    assert (v.person, v.value, v.limit) == ("r1", 28.5, 24.0)
    # 2 h of handoff education appended is allowed (≤ 28 h)
    assert found("CONTINUOUS_24_4", data, assign(("r1", "CALL-0"), ("r1", "HANDOFF-1"))) == []


def test_continuous_education_beyond_28_hours() -> None:
    call = mkslot("CALL-0", 0, 7, 24, ShiftKind.IN_HOUSE_CALL)
    edu = mkslot("EDU-1", 1, 7, 5, ShiftKind.EDUCATION)
    data = program(people=[resident("r1", 2)], slots=[call, edu], days=3)
    (v,) = found("CONTINUOUS_24_4", data, assign(("r1", "CALL-0"), ("r1", "EDU-1")))
    assert (v.value, v.limit) == (29.0, 28.0)


# ---------------------------------------------------------- REST_14_AFTER_24


def test_rest_14_after_24h_call() -> None:
    call = mkslot("CALL-0", 0, 7, 24, ShiftKind.IN_HOUSE_CALL)
    soon = mkslot("DAY-1", 1, 19, 12)  # 12 h after the call ends
    later = mkslot("DAY-2", 2, 7, 12)  # 24 h after
    data = program(people=[resident("r1", 2)], slots=[call, soon, later], days=4)
    (v,) = found("REST_14_AFTER_24", data, assign(("r1", "CALL-0"), ("r1", "DAY-1")))
    assert (v.person, v.value, v.limit) == ("r1", 12.0, 14.0)
    assert found("REST_14_AFTER_24", data, assign(("r1", "CALL-0"), ("r1", "DAY-2"))) == []


# --------------------------------------------------------------------- REST_8


def test_rest_8_is_a_warning() -> None:
    a = mkslot("A-0", 0, 7, 10)  # ends 17:00
    b = mkslot("B-0", 0, 23, 8)  # 6 h later
    c = mkslot("C-1", 1, 3, 4)  # 10 h later
    data = program(people=[resident("r1")], slots=[a, b, c], days=3)
    (v,) = found("REST_8", data, assign(("r1", "A-0"), ("r1", "B-0")))
    assert (v.severity, v.value, v.limit) == ("warning", 6.0, 8.0)
    assert found("REST_8", data, assign(("r1", "A-0"), ("r1", "C-1"))) == []
    report = validate(data, assign(("r1", "A-0"), ("r1", "B-0")))
    assert report.ok and report.count_by_rule(v.severity) == {"REST_8": 1}


# -------------------------------------------------------------------- CALL_Q3


def test_call_q3_counts_calls_per_period() -> None:
    calls = [mkslot(f"CALL-{d}", d, 17, 14, ShiftKind.IN_HOUSE_CALL) for d in range(28)]
    data = program(people=[resident("r1", 2)], slots=calls)
    # 28 days allow ceil(28/3) = 10 calls
    ok = assign(*[("r1", f"CALL-{d}") for d in range(0, 28, 3)])  # 10 calls
    assert found("CALL_Q3", data, ok) == []
    bad = assign(*[("r1", f"CALL-{d}") for d in range(0, 28, 2)])  # 14 calls
    (v,) = found("CALL_Q3", data, bad)
    assert (v.person, v.value, v.limit) == ("r1", 14.0, 10.0)


# --------------------------------------------------------- SUPERVISION_RATIO


def test_supervision_ratio_per_level() -> None:
    clinic = mkslot("CLINIC-0", 0, 8, 4, ShiftKind.CLINIC, supervision={1: 2, 0: 4}, faculty_max=3)
    people = [
        resident("a", 1),
        resident("b", 1),
        resident("c", 1),
        resident("d", 2),
        faculty("f1"),
        faculty("f2"),
    ]
    data = program(people=people, slots=[clinic], days=1)
    # 3 PGY-1 (1.5 faculty) + 1 PGY-2 (0.25) = 1.75 → 2 faculty needed
    bad = assign(
        ("a", "CLINIC-0"),
        ("b", "CLINIC-0"),
        ("c", "CLINIC-0"),
        ("d", "CLINIC-0"),
        ("f1", "CLINIC-0"),
    )
    (v,) = found("SUPERVISION_RATIO", data, bad)
    assert (v.slot, v.value, v.limit) == ("CLINIC-0", 1.0, 2.0)
    assert found("SUPERVISION_RATIO", data, [*bad, *assign(("f2", "CLINIC-0"))]) == []


# ------------------------------------------------------------------- COVERAGE


def test_coverage_min_is_a_violation_and_max_a_warning() -> None:
    slot = mkslot("WARD-0", 0, 7, 12, min_staff=2, max_staff=2, pgy_min={2: 1})
    people = [resident("a", 1), resident("b", 1), resident("c", 2)]
    data = program(people=people, slots=[slot], days=1)
    under = found("COVERAGE", data, assign(("a", "WARD-0")))
    assert {(v.severity, v.value, v.limit) for v in under} == {
        ("violation", 1.0, 2.0),  # one resident of two
        ("violation", 0.0, 1.0),  # no PGY-2+
    }
    over = found("COVERAGE", data, assign(("a", "WARD-0"), ("b", "WARD-0"), ("c", "WARD-0")))
    assert [(v.severity, v.value) for v in over] == [("warning", 3.0)]
    assert found("COVERAGE", data, assign(("a", "WARD-0"), ("c", "WARD-0"))) == []
    assert validate(data, assign(("a", "WARD-0"))).coverage == 0.5


# --------------------------------------------------------------- AVAILABILITY


def test_availability_blocks_assignments_during_leave() -> None:
    data = program(
        people=[resident("r1")], slots=days(3), days=3, absences=[vacation("v1", "r1", 1, 1)]
    )
    (v,) = found("AVAILABILITY", data, assign(("r1", "DAY-1")))
    assert (v.person, v.slot) == ("r1", "DAY-1")
    assert found("AVAILABILITY", data, assign(("r1", "DAY-0"), ("r1", "DAY-2"))) == []


# ----------------------------------------------------------------- NO_OVERLAP


def test_no_overlap() -> None:
    a = mkslot("A-0", 0, 7, 12)
    b = mkslot("B-0", 0, 18, 4)  # overlaps A by 1 h
    c = mkslot("C-0", 0, 19, 4)  # touches A: fine
    data = program(people=[resident("r1")], slots=[a, b, c], days=1)
    (v,) = found("NO_OVERLAP", data, assign(("r1", "A-0"), ("r1", "B-0")))
    assert (v.person, v.slot) == ("r1", "B-0")
    assert found("NO_OVERLAP", data, assign(("r1", "A-0"), ("r1", "C-0"))) == []


# ---------------------------------------------------------------- ELIGIBILITY


def test_eligibility_pgy_tags_kind_and_rotation() -> None:
    icu = ShiftType(
        code="ICU",
        name="ICU call",
        start=time(7),
        duration_minutes=24 * 60,
        kind=ShiftKind.IN_HOUSE_CALL,
        eligible_pgy=frozenset({2, 3}),
        required_tags=frozenset({"acls"}),
    )
    clinic = ShiftType(
        code="CLINIC",
        name="Clinic",
        start=time(8),
        duration_minutes=240,
        kind=ShiftKind.CLINIC,
        faculty=False,
    )
    slots = [
        mkslot("ICU-0", 0, 7, 24, ShiftKind.IN_HOUSE_CALL, shift="ICU"),
        mkslot("CLINIC-1", 1, 8, 4, ShiftKind.CLINIC, shift="CLINIC"),
    ]
    people = [
        resident("junior", 1, tags=frozenset({"acls"})),
        resident("noacls", 2),
        resident("ok", 2, tags=frozenset({"acls"})),
        faculty("f1"),
    ]
    rot = Rotation(
        id="icu",
        name="ICU",
        eligible_pgy=frozenset({2, 3}),
        min_residents=0,
        max_residents=5,
        shift_types=frozenset({"ICU"}),
    )
    blocks = (Period(start=date(2026, 7, 1), end=date(2026, 7, 28)),)
    data = program(people=people, slots=slots, days=2, shift_types=[icu, clinic])
    v = found(
        "ELIGIBILITY", data, assign(("junior", "ICU-0"), ("noacls", "ICU-0"), ("f1", "CLINIC-1"))
    )
    assert sorted(x.person for x in v) == ["f1", "junior", "noacls"]
    assert found("ELIGIBILITY", data, assign(("ok", "ICU-0"))) == []
    # with rotation assignments: only residents on the ICU rotation may take ICU call
    on_rot = program(
        people=people,
        slots=slots,
        days=2,
        shift_types=[icu, clinic],
        rotations=(rot,),
        blocks=blocks,
        rotation_assignments=(RotationAssignment(person_id="noacls", block=1, rotation_id="icu"),),
    )
    (r,) = found("ELIGIBILITY", on_rot, assign(("ok", "ICU-0")))
    assert r.person == "ok" and "no rotation" in r.message


# -------------------------------------------------------------- DST and time


def test_dst_days_have_their_true_length() -> None:
    from rsched.domain.calendar import day_bounds, zone

    tz = zone("America/New_York")
    fall = day_bounds(date(2026, 11, 1), tz)
    spring = day_bounds(date(2027, 3, 14), tz)
    assert fall[1] - fall[0] == timedelta(hours=25)
    assert spring[1] - spring[0] == timedelta(hours=23)


@pytest.mark.parametrize("first", [date(2026, 10, 18), date(2027, 2, 28)])
def test_hours_across_dst_use_real_elapsed_time(first: date) -> None:
    """Nights of 12 real hours every night for 28 days (one across the DST change):
    exactly 84 h/week, whichever way the clocks move."""
    from rsched.domain import Program, ProgramData
    from rsched.domain.calendar import local_at, zone

    tz = zone("America/New_York")
    slots = []
    for d in range(28):
        start = local_at(first + timedelta(days=d), time(19), tz)
        slots.append(
            Slot(
                id=f"N-{d}",
                shift="N",
                kind=ShiftKind.NIGHT_FLOAT,
                start=start,
                end=start + timedelta(hours=12),
                min_staff=0,
                max_staff=1,
            )
        )
    end = first + timedelta(days=28)
    data = ProgramData(
        program=Program(
            id="p", name="p", timezone="America/New_York", academic_year_start=date(2026, 7, 1)
        ),
        start=first,
        end=end,
        periods=(Period(start=first, end=end),),
        people=(resident("r1"),),
        slots=tuple(slots),
    )
    (v,) = found("HOURS_80", data, assign(*[("r1", f"N-{d}") for d in range(28)]))
    assert v.value == pytest.approx(84.0 * 28 / 29, abs=0.01)  # 336 h over a 29-day period
    local_ends = {s.end.astimezone(tz).hour for s in slots}
    assert local_ends == {6, 7} or local_ends == {7, 8}  # the DST night ends an hour off


def test_faculty_hours_are_not_limited() -> None:
    data = program(people=[faculty("f1")], slots=days(28, supervision={0: 4}, faculty_max=1))
    sched = assign(*[("f1", f"DAY-{d}") for d in range(28)])
    report = validate(data, sched)
    assert not [v for v in report.violations if v.rule in {"HOURS_80", "DAY_OFF_1_IN_7"}]
    assert data.person_by_id["f1"].kind is PersonKind.FACULTY


# ----------------------------------------------------------- HOURS_80_ROLLING


def test_rolling_window_warns_where_block_averages_pass() -> None:
    """Heavy weeks at the end of one block and the start of the next: each block averages
    under 80 h, but the 28-day window across the boundary does not (a warning)."""
    periods = [
        Period(start=date(2026, 7, 1), end=date(2026, 7, 28)),
        Period(start=date(2026, 7, 29), end=date(2026, 8, 25)),
    ]
    slots = days(56, hours=13)
    heavy = [d for d in range(14, 42)]  # 28 days of 13 h = 91 h/week across the boundary
    light = [d for d in range(0, 14, 2)] + [d for d in range(42, 56, 2)]
    data = program(people=[resident("r1")], slots=slots, days=56, periods=periods)
    sched = assign(*[("r1", f"DAY-{d}") for d in heavy + light])
    assert found("HOURS_80", data, sched) == []  # each block: (14×13 + 7×13)/4 = 68 h/week
    warnings = found("HOURS_80_ROLLING", data, sched)
    assert warnings and warnings[0].severity == "warning"
    assert max(w.value or 0 for w in warnings) == 28 * 13
    fixed = assign(
        *[("r1", f"DAY-{d}") for d in heavy if d % 7 not in (0, 1)]
        + [("r1", f"DAY-{d}") for d in light]
    )
    assert found("HOURS_80_ROLLING", data, fixed) == []
