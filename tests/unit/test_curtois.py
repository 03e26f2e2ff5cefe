"""Curtois & Qu benchmark: parser, independent evaluator, CP-SAT model, `rsched bench curtois`."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Mapping
from pathlib import Path

import pytest

from rsched.bench.curtois import (
    CurtoisInstance,
    _build_model,
    _cells_from_values,
    _prepare,
    _run_automaton,
    evaluate,
    parse_instance,
    parse_text,
    read_roster,
    solve,
    write_roster,
)
from rsched.domain.errors import InvalidInput

BENCH_DIR = Path(__file__).resolve().parents[3] / "shared" / "benchmarks" / "curtois"
needs_bench = pytest.mark.skipif(
    not (BENCH_DIR / "Instance1.txt").is_file(), reason="benchmark files not available"
)

# Days, staff, shift types, on-requests, off-requests, cover lines (FORMAT.md table).
FORMAT_TABLE: dict[int, tuple[int, int, int, int, int, int]] = {
    1: (14, 8, 1, 21, 5, 14),
    2: (14, 14, 2, 50, 12, 28),
    3: (14, 20, 3, 39, 25, 42),
    4: (28, 10, 2, 52, 19, 56),
    5: (28, 16, 2, 79, 27, 56),
    6: (28, 18, 3, 87, 48, 84),
    7: (28, 20, 3, 104, 64, 84),
    8: (28, 30, 4, 139, 86, 112),
    9: (28, 36, 4, 144, 88, 112),
    10: (28, 40, 5, 210, 74, 140),
    11: (28, 50, 6, 197, 139, 168),
    12: (28, 60, 10, 294, 128, 280),
    13: (28, 120, 18, 589, 252, 504),
    14: (42, 32, 4, 266, 93, 168),
    15: (42, 45, 6, 350, 140, 252),
    16: (56, 20, 3, 177, 103, 168),
    17: (56, 32, 4, 351, 129, 224),
    18: (84, 22, 3, 322, 92, 252),
    19: (84, 40, 5, 587, 247, 420),
    20: (182, 50, 6, 1665, 653, 1092),
    21: (182, 100, 8, 3210, 1492, 1456),
    22: (364, 50, 10, 3253, 1385, 3640),
    23: (364, 100, 16, 6549, 2861, 5824),
    24: (364, 150, 32, 9540, 4269, 11648),
}


# --------------------------------------------------------------------------- helpers


def tiny_text(
    *,
    horizon: int = 14,
    max_shifts: str = "D=14|N=14",
    max_minutes: int = 14 * 480,
    min_minutes: int = 0,
    max_cons: int = 7,
    min_cons: int = 1,
    min_off: int = 1,
    max_weekends: int = 2,
    days_off: str = "",
    on_requests: str = "",
    off_requests: str = "",
    cover: str = "",
) -> str:
    """One employee A; shifts D and N, where D may not follow N (N on d ⇒ no D on d+1)."""
    return (
        "# tiny hand-made instance\n"
        f"SECTION_HORIZON\n{horizon}\n\n"
        "SECTION_SHIFTS\n# ShiftID, Length in mins, Shifts which cannot follow this shift\n"
        "D,480,\nN,480,D\n\n"
        "SECTION_STAFF\n"
        f"A,{max_shifts},{max_minutes},{min_minutes},{max_cons},{min_cons},{min_off},"
        f"{max_weekends}\n\n"
        f"SECTION_DAYS_OFF\n{days_off}\n"
        f"SECTION_SHIFT_ON_REQUESTS\n{on_requests}\n"
        f"SECTION_SHIFT_OFF_REQUESTS\n{off_requests}\n"
        f"SECTION_COVER\n{cover}\n"
    )


def tiny(**kwargs: object) -> CurtoisInstance:
    return parse_text(tiny_text(**kwargs), name="tiny")  # type: ignore[arg-type]


def works(days: list[int], shift: str = "D") -> dict[tuple[str, int], str]:
    return {("A", d): shift for d in days}


def rules(instance: CurtoisInstance, roster: object) -> list[int]:
    return sorted(b.rule for b in evaluate(instance, roster).breaches)  # type: ignore[arg-type]


def assert_clean(instance: CurtoisInstance, roster: object) -> None:
    ev = evaluate(instance, roster)  # type: ignore[arg-type]
    assert ev.breaches == (), [str(b) for b in ev.breaches]


# --------------------------------------------------------------------------- parser


@needs_bench
def test_instance1_stats_match_format_table() -> None:
    inst = parse_instance(BENCH_DIR / "Instance1.txt")
    s = inst.stats()
    assert (s.days, s.staff, s.shift_types, s.on_requests, s.off_requests, s.cover_lines) == (
        FORMAT_TABLE[1]
    )
    assert inst.name == "Instance1"
    a = inst.employees[0]
    assert (a.id, dict(a.max_shifts), a.max_total_minutes, a.min_total_minutes) == (
        "A", {"D": 14}, 4320, 3360,
    )
    assert (a.max_consecutive_shifts, a.min_consecutive_shifts) == (5, 2)
    assert (a.min_consecutive_days_off, a.max_weekends, a.days_off) == (2, 1, frozenset({0}))
    assert inst.shifts[0].cannot_follow == ()
    assert inst.weekends == ((5, 6), (12, 13))


@needs_bench
@pytest.mark.parametrize("number", sorted(FORMAT_TABLE))
def test_every_instance_matches_format_table(number: int) -> None:
    s = parse_instance(BENCH_DIR / f"Instance{number}.txt").stats()
    assert (
        s.days, s.staff, s.shift_types, s.on_requests, s.off_requests, s.cover_lines
    ) == FORMAT_TABLE[number]


def test_cannot_follow_and_requests_are_read() -> None:
    inst = tiny(on_requests="A,1,D,3", off_requests="A,2,N,2", cover="0,D,1,100,1\n0,N,0,100,1")
    assert [s.cannot_follow for s in inst.shifts] == [(), ("D",)]
    assert inst.on_requests[0].weight == 3 and inst.off_requests[0].shift == "N"
    assert len(inst.cover) == 2


def _error_text(exc: InvalidInput) -> str:
    return "\n".join(str(e) for e in exc.errors)


def test_missing_section_is_named(tmp_path: Path) -> None:
    text = tiny_text().split("SECTION_COVER")[0]
    path = tmp_path / "cut.txt"
    path.write_text(text)
    with pytest.raises(InvalidInput) as info:
        parse_instance(path)
    assert "missing SECTION_COVER" in _error_text(info.value)
    assert info.value.source == str(path)


def test_bad_line_is_named() -> None:
    text = tiny_text().replace("A,D=14|N=14,6720,0,7,1,1,2", "A,D=14|N=14,6720,0,7,1,1")
    bad_line = text.splitlines().index("A,D=14|N=14,6720,0,7,1,1") + 1
    with pytest.raises(InvalidInput) as info:
        parse_text(text)
    message = _error_text(info.value)
    assert f"bad line {bad_line}" in message and "SECTION_STAFF" in message
    assert "expected 8" in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "missing SECTION_HORIZON"),
        ("hello world\n", "missing SECTION_HORIZON"),
        ("SECTION_HORIZON\n14\n\nstray\n", "outside any section"),
        (tiny_text().replace("SECTION_SHIFTS\n", ""), "outside any section"),
        (tiny_text().replace("SECTION_DAYS_OFF", "SECTION_DAYSOFF"), "unknown section"),
        (tiny_text(cover="0,X,1,100,1"), "unknown shift 'X'"),
        (tiny_text(cover="99,D,1,100,1"), "outside the horizon"),
        (tiny_text(cover="0,D,one,100,1"), "Requirement must be an integer"),
        (tiny_text(cover="0,D,1,100,1\n0,D,2,100,1"), "second cover line"),
        (tiny_text(days_off="Z,3"), "unknown employee 'Z'"),
        (tiny_text(on_requests="A,1,D"), "expected 4"),
        (tiny_text(max_shifts="D=14"), "no entry for shift(s) ['N']"),
        (tiny_text(max_shifts="D=14|N=x"), "MaxShifts[N] must be an integer"),
        (tiny_text().replace("N,480,D", "N,480,Q"), "unknown shift(s) ['Q']"),
        (tiny_text().replace("SECTION_HORIZON\n14", "SECTION_HORIZON\n0"), "horizon must be"),
    ],
)
def test_malformed_files_give_clear_errors(text: str, expected: str) -> None:
    with pytest.raises(InvalidInput) as info:
        parse_text(text)
    assert expected in _error_text(info.value)


def test_sections_out_of_order() -> None:
    text = tiny_text()
    a, b = "SECTION_SHIFT_ON_REQUESTS", "SECTION_SHIFT_OFF_REQUESTS"
    swapped = text.replace(a, "@@").replace(b, a).replace("@@", b)
    with pytest.raises(InvalidInput) as info:
        parse_text(swapped)
    assert "where SECTION_SHIFT_ON_REQUESTS was expected" in _error_text(info.value)


def test_unknown_and_binary_files(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="file not found"):
        parse_instance(tmp_path / "nope.txt")
    binary = tmp_path / "bin.txt"
    binary.write_bytes(b"\xff\xfe\x00\x81")
    with pytest.raises(InvalidInput, match="not a text file"):
        parse_instance(binary)


# --------------------------------------------------------------------------- evaluator


def test_objective_terms() -> None:
    inst = tiny(
        on_requests="A,1,D,3\nA,2,D,5",
        off_requests="A,0,D,2\nA,3,N,7",
        cover="0,D,2,100,1\n1,D,0,100,1\n2,N,0,100,1",
    )
    # Day 0 D (off-request, under by 1), day 1 D (on-request met, over by 1), day 2 nothing
    # (on-request missed), day 3 D (not the N of the off-request).
    ev = evaluate(inst, works([0, 1, 3]))
    assert ev.breaches == ()
    assert (ev.on_request_penalty, ev.off_request_penalty) == (5, 2)
    assert (ev.under_cover_penalty, ev.over_cover_penalty) == (100, 1)  # day 3 D has no line
    assert ev.objective == 108


def test_rule_0_unknown_ids_are_reported() -> None:
    inst = tiny()
    assert rules(inst, {("Z", 0): "D"}) == [0]
    assert rules(inst, {("A", 14): "D"}) == [0]
    assert rules(inst, {("A", 0): "X"}) == [0]
    assert_clean(inst, {("A", 0): "D"})


def test_rule_1_one_shift_per_day() -> None:
    inst = tiny()
    assert rules(inst, [("A", 0, "D"), ("A", 0, "N")]) == [1]
    assert_clean(inst, [("A", 0, "D")])


def test_rule_2_forbidden_succession() -> None:
    inst = tiny()
    assert rules(inst, {("A", 2): "N", ("A", 3): "D"}) == [2]
    assert_clean(inst, {("A", 2): "D", ("A", 3): "N"})  # N may follow D
    assert_clean(inst, {("A", 2): "N", ("A", 3): "N"})
    assert_clean(inst, {("A", 2): "N", ("A", 4): "D"})  # only the next day counts


def test_rule_3_max_shifts_per_type() -> None:
    inst = tiny(max_shifts="D=14|N=1")
    assert rules(inst, {("A", 1): "N", ("A", 2): "N"}) == [3]
    assert_clean(inst, {("A", 1): "D", ("A", 2): "N"})
    never = tiny(max_shifts="D=14|N=0")
    assert rules(never, {("A", 1): "N"}) == [3]


def test_rule_4_max_total_minutes() -> None:
    inst = tiny(max_minutes=960)
    assert rules(inst, works([0, 1, 2])) == [4]
    assert_clean(inst, works([0, 1]))


def test_rule_5_min_total_minutes() -> None:
    inst = tiny(min_minutes=960)
    assert rules(inst, works([0])) == [5]
    assert_clean(inst, works([0, 1]))


def test_rule_6_max_consecutive_shifts() -> None:
    inst = tiny(max_cons=3)
    assert rules(inst, works([0, 1, 2, 3])) == [6]
    assert rules(inst, works([10, 11, 12, 13])) == [6]  # a run touching the end still counts
    assert_clean(inst, works([0, 1, 2, 4, 5, 6]))


def test_rule_7_min_consecutive_shifts() -> None:
    inst = tiny(min_cons=2)
    assert rules(inst, works([3])) == [7]
    assert rules(inst, works([3, 4, 7])) == [7]
    assert_clean(inst, works([3, 4]))
    # Runs touching day 0 or day H-1 never break the minimum.
    assert_clean(inst, works([0]))
    assert_clean(inst, works([13]))
    assert_clean(inst, works([0, 13]))


def test_rule_8_min_consecutive_days_off() -> None:
    inst = tiny(min_off=2, max_cons=14)
    assert rules(inst, works([0, 1, 2, 4, 5])) == [8]
    assert_clean(inst, works([0, 1, 2, 5, 6]))
    # Off runs touching day 0 or day H-1 never break the minimum.
    assert_clean(inst, works([1, 2, 3]))
    assert_clean(inst, works([10, 11, 12]))
    assert_clean(inst, works(list(range(1, 13))))


def test_rule_9_max_weekends() -> None:
    inst = tiny(max_weekends=1)
    assert rules(inst, works([5, 13])) == [9]  # Saturday of week 1, Sunday of week 2
    assert_clean(inst, works([5, 6]))  # both days of one weekend count once
    assert rules(tiny(max_weekends=0), works([6])) == [9]
    assert_clean(tiny(max_weekends=0), works([0, 1, 2, 3, 4]))


def test_rule_10_days_off() -> None:
    inst = tiny(days_off="A,4,9")
    assert rules(inst, works([3, 4])) == [10]
    assert_clean(inst, works([2, 3]))
    assert inst.employees[0].days_off == frozenset({4, 9})


# --------------------------------------------------------------------------- solver


def _solve_and_check(inst: CurtoisInstance, time_limit: float = 10.0) -> int:
    result = solve(inst, time_limit=time_limit, workers=2, seed=0)
    assert result.status == "OPTIMAL"
    ev = evaluate(inst, result.roster)
    assert ev.breaches == ()
    assert ev.objective == result.objective
    assert result.objective is not None
    return result.objective


def test_solver_meets_hand_checked_optimum() -> None:
    # Cover D every day (1 needed); max 3 consecutive, min 2 off, 1 weekend, day 2 off.
    # Best: work 0-1, off 2-3 (day 2 forced), 4-5 ... weekends limit the rest.
    cover = "\n".join(f"{d},D,1,100,1" for d in range(14))
    inst = tiny(max_cons=3, min_off=2, max_weekends=1, days_off="A,2", cover=cover)
    objective = _solve_and_check(inst)
    # Brute force over the 2^14 rosters with D only (N never helps) to confirm the optimum.
    best = min(
        ev.objective
        for mask in range(1 << 14)
        if (ev := evaluate(inst, works([d for d in range(14) if mask >> d & 1]))).feasible
    )
    assert objective == best


@needs_bench
def test_instance1_solves_to_published_optimum(tmp_path: Path) -> None:
    inst = parse_instance(BENCH_DIR / "Instance1.txt")
    result = solve(inst, time_limit=20.0, workers=2, seed=0)
    assert result.status == "OPTIMAL"
    assert result.objective == 607 and result.best_bound == 607 and result.gap == 0.0
    assert result.time_to_first is not None and result.solutions_found >= 1
    ev = evaluate(inst, result.roster)
    assert ev.breaches == ()
    assert ev.objective == 607
    out = tmp_path / "roster.txt"
    write_roster(result, out)
    triples = read_roster(out)
    assert len(triples) == len(result.roster)
    assert evaluate(inst, triples).objective == 607
    assert all(0 <= day < 14 for _, day, _ in triples)


@needs_bench
def test_abort_before_first_solution_is_honoured() -> None:
    inst = parse_instance(BENCH_DIR / "Instance12.txt")
    calls = 0

    def progress(_: object) -> None:
        nonlocal calls
        calls += 1

    started = time.monotonic()
    result = solve(inst, time_limit=30.0, should_abort=lambda: True, on_progress=progress)
    assert time.monotonic() - started < 5
    assert result.aborted and result.status == "UNKNOWN" and result.roster == {}
    deadline = started + 0.5

    def after_half_a_second() -> bool:
        return time.monotonic() > deadline

    result = solve(inst, time_limit=30.0, should_abort=after_half_a_second, on_progress=progress)
    assert result.aborted
    assert result.wall_time < 5


@pytest.mark.parametrize("max_on", [0, 1, 2, 4])
@pytest.mark.parametrize("min_on", [1, 2, 3])
@pytest.mark.parametrize("min_off", [1, 2, 3])
def test_run_automaton_accepts_exactly_the_legal_sequences(
    max_on: int, min_on: int, min_off: int
) -> None:
    horizon = 9
    inst = tiny(
        horizon=horizon, max_shifts=f"D={horizon}|N=0", max_cons=max_on, min_cons=min_on,
        min_off=min_off,
    )
    _, transitions = _run_automaton(max_on, min_on, min_off)
    table = {(a, label): b for a, label, b in transitions}
    for mask in range(1 << horizon):
        seq = [mask >> d & 1 for d in range(horizon)]
        state: int | None = 0
        for v in seq:
            state = table.get((state, v)) if state is not None else None
        legal = not {6, 7, 8} & set(rules(inst, works([d for d in range(horizon) if seq[d]])))
        assert (state is not None) == legal, (seq, max_on, min_on, min_off)


@needs_bench
def test_sub_model_with_fixed_cells_keeps_the_objective_exact() -> None:
    inst = parse_instance(BENCH_DIR / "Instance4.txt")
    prep = _prepare(inst)
    first = solve(inst, time_limit=3.0)
    assert first.has_solution and first.objective is not None
    index = {s.id: i for i, s in enumerate(inst.shifts)}
    cells = [
        [index[first.roster[(e.id, d)]] if (e.id, d) in first.roster else -1
         for d in range(inst.horizon)]
        for e in inst.employees
    ]
    from ortools.sat.python import cp_model

    for free in ({0: range(28), 3: range(28)}, {e: range(7, 14) for e in range(10)}):
        sub = _build_model(prep, free=free, current=cells, automaton=False, hint=cells)
        solver = cp_model.CpSolver()
        solver.parameters.max_time_in_seconds = 5
        solver.parameters.num_workers = 1
        assert solver.solve(sub.model) in (cp_model.OPTIMAL, cp_model.FEASIBLE)
        new = _cells_from_values(solver.response_proto.solution, sub.x, prep, cells, free)
        roster = {
            (inst.employees[e].id, d): inst.shifts[si].id
            for e, row in enumerate(new) for d, si in enumerate(row) if si >= 0
        }
        ev = evaluate(inst, roster)
        assert ev.breaches == ()
        assert ev.objective == round(solver.objective_value) <= first.objective


@needs_bench
@pytest.mark.parametrize("mode", ["one_worker", "large"])
def test_other_search_paths_give_checked_rosters(
    mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import rsched.bench.curtois as cq

    inst = parse_instance(BENCH_DIR / "Instance2.txt")
    workers = 2
    if mode == "large":  # build the first roster group by group, as for Instance23/24
        monkeypatch.setattr(cq, "LARGE_MODEL_VARS", 0)
    else:
        workers = 1
    seen: list[int] = []
    result = solve(
        inst, time_limit=3.0, workers=workers, on_progress=lambda p: seen.append(p.objective)
    )
    assert result.has_solution and result.objective is not None
    assert seen and seen[-1] == result.objective and seen == sorted(seen, reverse=True)
    ev = evaluate(inst, result.roster)
    assert ev.breaches == ()
    assert ev.objective == result.objective


def test_infeasible_and_tiny_instances() -> None:
    infeasible = tiny(min_minutes=960, max_minutes=480)
    result = solve(infeasible, time_limit=5.0)
    assert result.status == "INFEASIBLE" and not result.has_solution and result.roster == {}
    for horizon in (1, 2, 3):
        cover = "\n".join(f"{d},D,1,100,1\n{d},N,1,100,1" for d in range(horizon))
        inst = tiny(horizon=horizon, cover=cover, min_cons=2, min_off=2)
        assert _solve_and_check(inst, time_limit=5.0) == 100 * horizon


def test_solve_rejects_bad_time_limit() -> None:
    with pytest.raises(InvalidInput, match="time_limit"):
        solve(tiny(), time_limit=-1)


# --------------------------------------------------------------------------- roster files


class _Exploding(Mapping[tuple[str, int], str]):
    def __getitem__(self, key: tuple[str, int]) -> str:
        raise KeyError(key)

    def __len__(self) -> int:
        return 2

    def __iter__(self):  # type: ignore[no-untyped-def]
        yield ("A", 0)
        raise RuntimeError("disk on fire")


def test_write_roster_leaves_no_partial_file(tmp_path: Path) -> None:
    out = tmp_path / "roster.txt"
    out.write_text("old content\n")
    with pytest.raises((RuntimeError, KeyError)):
        write_roster(_Exploding(), out)
    assert out.read_text() == "old content\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["roster.txt"]
    write_roster({("A", 3): "D", ("B", 0): "N"}, out)
    assert out.read_text() == "A\t3\tD\nB\t0\tN\n"


# --------------------------------------------------------------------------- CLI


def _cli(argv: list[str]) -> int:
    from rsched.cli import bench_cmds

    parser = argparse.ArgumentParser(prog="rsched")
    bench_cmds.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


@needs_bench
def test_cli_json_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r.txt"
    argv = ["bench", "curtois", str(BENCH_DIR / "Instance1.txt"), "--time-limit", "20"]
    code = _cli([*argv, "-o", str(out), "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["objective"] == 607 and report["evaluated_objective"] == 607
    assert report["best_known"] == 607 and report["gap_to_best_known_pct"] == 0.0
    assert report["hard_breaches"] == 0
    assert out.is_file()


@pytest.mark.parametrize("limit", ["-5", "0", "100000", "nan"])
def test_cli_rejects_absurd_time_limit(tmp_path: Path, limit: str) -> None:
    path = tmp_path / "tiny.txt"
    path.write_text(tiny_text())
    with pytest.raises(InvalidInput, match="--time-limit"):
        _cli(["bench", "curtois", str(path), "--time-limit", limit, "-o", str(tmp_path / "o")])


def test_cli_rejects_unknown_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="no such instance file"):
        _cli(["bench", "curtois", str(tmp_path / "missing.txt"), "-o", str(tmp_path / "o")])
