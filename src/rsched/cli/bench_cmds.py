"""`rsched bench …`: published benchmarks solved with rsched's engines.

``rsched bench curtois INSTANCE -o roster.txt`` solves one Curtois & Qu instance, re-checks the
answer with the independent evaluator, writes the roster and reports the objective next to the
best known value. The ``bench`` group has its own sub-commands so that other benchmarks (e.g. a
later ``bench timefold``) can join it.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

from rsched.domain.errors import FieldError, InvalidInput

EXIT_OK = 0
EXIT_VIOLATIONS = 1
EXIT_FAILURE = 3
MAX_TIME_LIMIT = 86_400.0
MAX_WORKERS = 256
_SHOWN_BREACHES = 20


def register(subparsers: Any) -> None:
    bench = subparsers.add_parser(
        "bench",
        help="solve published benchmark instances",
        description="Solve published benchmark instances and compare with the best known values.",
    )
    bench_sub = bench.add_subparsers(dest="bench_command", metavar="BENCHMARK", required=True)

    cq = bench_sub.add_parser(
        "curtois",
        help="Curtois & Qu shift scheduling benchmark (Instance1-24)",
        description=(
            "Solve one Curtois & Qu instance with CP-SAT, re-check the roster with the independent "
            "evaluator, write it (employee<TAB>day<TAB>shift, no line for a day off) and print the "
            "objective with the best known value from best_known.csv next to the instance."
        ),
    )
    cq.add_argument("instance", type=Path, help="an InstanceN.txt file")
    _solve_arguments(
        cq,
        budget="wall-clock budget in seconds, model building included (default 60)",
        output=("ROSTER", "where to write the roster"),
    )
    cq.set_defaults(func=run_curtois)
    register_timefold(bench_sub)


def _check_args(args: argparse.Namespace) -> None:
    errors: list[FieldError] = []
    tl = args.time_limit
    if not math.isfinite(tl) or tl <= 0 or tl > MAX_TIME_LIMIT:
        errors.append(
            FieldError("--time-limit", f"must be > 0 and ≤ {MAX_TIME_LIMIT:g} seconds, got {tl:g}")
        )
    if not 1 <= args.workers <= MAX_WORKERS:
        errors.append(FieldError("--workers", f"must be in 1..{MAX_WORKERS}, got {args.workers}"))
    if args.seed < 0:
        errors.append(FieldError("--seed", f"must be ≥ 0, got {args.seed}"))
    if not args.instance.is_file():
        errors.append(FieldError(str(args.instance), "no such instance file"))
    out_dir = args.output.parent if str(args.output.parent) else Path(".")
    if not out_dir.is_dir():
        errors.append(FieldError("--output", f"directory {out_dir} does not exist"))
    elif args.output.is_dir():
        errors.append(FieldError("--output", f"{args.output} is a directory"))
    if errors:
        raise InvalidInput(errors, source="rsched bench curtois")


def best_known(instance_path: Path) -> int | None:
    """The best known objective of an instance from ``best_known.csv`` beside it, if any."""
    table = instance_path.parent / "best_known.csv"
    try:
        with table.open(newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                if row.get("instance") == instance_path.stem:
                    return int(row["best_known_ub"])
    except (OSError, ValueError, KeyError):
        return None
    return None


def run_curtois(args: argparse.Namespace) -> int:
    from rich.console import Console

    from rsched.bench.curtois import CurtoisProgress, evaluate, parse_instance, solve, write_roster

    _check_args(args)
    instance = parse_instance(args.instance)
    stats = instance.stats()
    target = best_known(args.instance)
    err = Console(stderr=True)
    show_live = err.is_terminal and not args.json

    # Ctrl-C stops the search and keeps the best roster found so far.
    stop = threading.Event()

    def on_sigint(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    previous = signal.signal(signal.SIGINT, on_sigint)
    status_line = None
    try:
        if show_live:
            status_line = err.status(f"solving {instance.name} …")
            status_line.start()

        def on_progress(p: CurtoisProgress) -> None:
            if status_line is not None:
                status_line.update(
                    f"solving {instance.name}: objective {p.objective}, bound {p.best_bound}, "
                    f"{p.solutions_found} solution(s), {p.elapsed:.1f} s"
                )

        result = solve(
            instance,
            time_limit=args.time_limit,
            workers=args.workers,
            seed=args.seed,
            on_progress=on_progress,
            should_abort=stop.is_set,
        )
    finally:
        if status_line is not None:
            status_line.stop()
        signal.signal(signal.SIGINT, previous)

    report: dict[str, Any] = {
        "instance": instance.name,
        "days": stats.days,
        "staff": stats.staff,
        "shift_types": stats.shift_types,
        "status": result.status,
        "aborted": result.aborted,
        "objective": result.objective,
        "best_known": target,
        "gap_to_best_known_pct": None,
        "best_bound": result.best_bound,
        "gap_pct": None if result.gap is None else round(100 * result.gap, 4),
        "time_to_first": result.time_to_first,
        "solutions_found": result.solutions_found,
        "lns_steps": result.lns_steps,
        "wall_time": round(result.wall_time, 3),
        "build_time": round(result.build_time, 3),
        "time_limit": args.time_limit,
        "workers": result.workers,
        "seed": result.seed,
        "roster": None,
        "evaluated_objective": None,
        "penalties": None,
        "hard_breaches": None,
        "breaches": [],
    }
    code = EXIT_OK
    if not result.has_solution:
        code = EXIT_FAILURE
        reason = "stopped" if result.aborted else "time limit reached"
        if result.status == "INFEASIBLE":
            reason = "the hard constraints cannot all be met"
        report["error"] = f"no roster found ({result.status}: {reason})"
    else:
        ev = evaluate(instance, result.roster)
        write_roster(result, args.output)
        report["roster"] = str(args.output)
        report["evaluated_objective"] = ev.objective
        report["penalties"] = {
            "on_requests": ev.on_request_penalty,
            "off_requests": ev.off_request_penalty,
            "under_cover": ev.under_cover_penalty,
            "over_cover": ev.over_cover_penalty,
        }
        report["hard_breaches"] = len(ev.breaches)
        report["breaches"] = [str(b) for b in ev.breaches[:_SHOWN_BREACHES]]
        if target:
            report["gap_to_best_known_pct"] = round(100 * (ev.objective - target) / target, 4)
        if ev.breaches or ev.objective != result.objective:
            code = EXIT_VIOLATIONS
            report["error"] = (
                f"independent check failed: {len(ev.breaches)} hard-constraint breach(es), "
                f"evaluated objective {ev.objective} vs solver objective {result.objective}"
            )

    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print_text(report)
    if "error" in report:
        print(f"error: {report['error']}", file=sys.stderr)
    return code


def _fmt_seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def _print_text(r: dict[str, Any]) -> None:
    rows: list[tuple[str, str]] = [
        (
            "instance",
            f"{r['instance']} ({r['days']} days, {r['staff']} staff, "
            f"{r['shift_types']} shift types)",
        ),
        ("status", r["status"] + (" (stopped early)" if r["aborted"] else "")),
        ("objective", "-" if r["objective"] is None else str(r["objective"])),
    ]
    if r["evaluated_objective"] is not None:
        p = r["penalties"]
        rows.append(
            (
                "checked",
                f"{r['evaluated_objective']} by the independent evaluator, "
                f"{r['hard_breaches']} hard-constraint breach(es) "
                f"(under-cover {p['under_cover']}, over-cover {p['over_cover']}, "
                f"on-requests {p['on_requests']}, off-requests {p['off_requests']})",
            )
        )
    if r["best_known"] is not None:
        gap = r["gap_to_best_known_pct"]
        rows.append(
            ("best known", f"{r['best_known']}" + ("" if gap is None else f" (gap {gap:+.2f} %)"))
        )
    else:
        rows.append(("best known", "- (no best_known.csv entry next to the instance)"))
    bound = "-" if r["best_bound"] is None else str(r["best_bound"])
    if r["gap_pct"] is not None:
        bound += f" (optimality gap {r['gap_pct']:.2f} %)"
    rows += [
        ("bound", bound),
        ("first", _fmt_seconds(r["time_to_first"])),
        ("solutions", str(r["solutions_found"])),
        ("wall time", _fmt_seconds(r["wall_time"])),
        ("roster", r["roster"] or "- (not written)"),
    ]
    for breach in r["breaches"]:
        rows.append(("breach", breach))
    for key, value in rows:
        print(f"{key + ':':<12}{value}")


# --------------------------------------------------------------------------- timefold


def register_timefold(bench_sub: Any) -> None:
    """``rsched bench timefold``: the Timefold Solver employee-scheduling demo instances."""
    tf = bench_sub.add_parser(
        "timefold",
        help="Timefold employee-scheduling demo (demo_small / demo_large)",
        description=(
            "Solve one Timefold Solver employee-scheduling demo instance with rsched's engine "
            "(CP-SAT), score the answer with the independent scorer (Timefold's constraints "
            'C1..C8 of FORMAT.md) and write {"assignment": {shiftId: employee}, "score": …}.'
        ),
    )
    tf.add_argument("instance", type=Path, help="a demo_*.json instance file")
    _solve_arguments(
        tf,
        budget="wall-clock budget of the whole command in seconds, start-up included (default 60)",
        output=(
            "SOLUTION",
            "where to write the solution JSON (written atomically, only if one is found)",
        ),
    )
    tf.set_defaults(func=run_timefold)


def _solve_arguments(parser: Any, *, budget: str, output: tuple[str, str]) -> None:
    """The options every benchmark solve takes: budget, workers, seed, output, --json."""
    parser.add_argument("--time-limit", type=float, default=60.0, metavar="SECONDS", help=budget)
    parser.add_argument("--workers", type=int, default=2, help="CP-SAT search workers (default 2)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "-o", "--output", type=Path, required=True, metavar=output[0], help=output[1]
    )
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object on stdout (nothing else)"
    )


def run_timefold(args: argparse.Namespace) -> int:
    import time

    from rich.console import Console

    from rsched.bench.timefold import (
        TimefoldProgress,
        process_start,
        read_instance,
        solve,
        write_solution,
    )

    # the budget includes interpreter start-up only when this command is the process
    started = process_start() if getattr(args, "whole_process", False) else time.monotonic()
    errors: list[FieldError] = []
    tl = args.time_limit
    if not math.isfinite(tl) or tl <= 0 or tl > MAX_TIME_LIMIT:
        errors.append(
            FieldError("--time-limit", f"must be > 0 and ≤ {MAX_TIME_LIMIT:g} seconds, got {tl:g}")
        )
    if not 1 <= args.workers <= MAX_WORKERS:
        errors.append(FieldError("--workers", f"must be in 1..{MAX_WORKERS}, got {args.workers}"))
    if args.seed < 0:
        errors.append(FieldError("--seed", f"must be ≥ 0, got {args.seed}"))
    out_dir = args.output.parent if str(args.output.parent) else Path(".")
    if not out_dir.is_dir():
        errors.append(FieldError("--output", f"directory {out_dir} does not exist"))
    elif args.output.is_dir():
        errors.append(FieldError("--output", f"{args.output} is a directory"))
    if errors:
        raise InvalidInput(errors, source="rsched bench timefold")
    instance = read_instance(args.instance)
    err = Console(stderr=True)
    show_live = err.is_terminal and not args.json

    stop = threading.Event()

    def on_sigint(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    previous = signal.signal(signal.SIGINT, on_sigint)
    status_line = None
    try:
        if show_live:
            status_line = err.status(f"solving {instance.name} …")
            status_line.start()

        def on_progress(p: TimefoldProgress) -> None:
            if status_line is not None:
                status_line.update(
                    f"solving {instance.name} ({p.stage}): {p.score}, bound {p.soft_bound} soft, "
                    f"{p.elapsed:.1f} s"
                )

        result = solve(
            instance,
            time_limit=tl,
            workers=args.workers,
            seed=args.seed,
            started=started,
            on_progress=on_progress,
            should_abort=stop.is_set,
        )
    finally:
        if status_line is not None:
            status_line.stop()
        signal.signal(signal.SIGINT, previous)

    report: dict[str, Any] = {
        "instance": instance.name,
        "employees": len(instance.employees),
        "shifts": len(instance.shifts),
        "status": result.status,
        "aborted": stop.is_set(),
        "score": result.score,
        "soft_bound": format(result.soft_bound, "f"),
        "time_to_feasible": _round3(result.time_to_feasible),
        "time_to_best": _round3(result.time_to_best),
        "time_limit": tl,
        "workers": result.workers,
        "seed": result.seed,
        "stages": [
            {"stage": s.stage, "status": s.status, "seconds": s.seconds, "solutions": s.solutions}
            for s in result.stages
        ],
        "trajectory": [list(t) for t in result.trajectory],
        "constraints": None,
        "solution": None,
        "notes": list(result.notes),
    }
    code = EXIT_OK
    if not result.has_solution:
        code = EXIT_FAILURE
        report["error"] = f"no schedule found ({result.status})"
    else:
        write_solution(args.output, instance, result)
        report["solution"] = str(args.output)
        if result.parts is not None:
            report["constraints"] = {
                k: (format(v, "f") if not isinstance(v, int) else v)
                for k, v in result.parts.totals.items()
            }
        if result.hard != 0:
            code = EXIT_VIOLATIONS
            report["error"] = f"best schedule breaks hard constraints ({result.score})"
    report["wall_time"] = round(time.monotonic() - started, 3)

    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print_timefold(report)
    if "error" in report:
        print(f"error: {report['error']}", file=sys.stderr)
    return code


def _round3(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _print_timefold(r: dict[str, Any]) -> None:
    rows: list[tuple[str, str]] = [
        ("instance", f"{r['instance']} ({r['employees']} employees, {r['shifts']} shifts)"),
        ("status", r["status"] + (" (stopped early)" if r["aborted"] else "")),
        ("score", r["score"] or "-"),
        ("bound", f"no schedule scores above {r['soft_bound']} soft"),
        ("0 hard at", _fmt_seconds(r["time_to_feasible"])),
        ("best at", _fmt_seconds(r["time_to_best"])),
        ("wall time", _fmt_seconds(r["wall_time"]) + " (start-up included)"),
        ("solution", r["solution"] or "- (not written)"),
    ]
    if r["constraints"]:
        c = r["constraints"]
        rows.insert(
            3,
            (
                "checked",
                f"C1..C5 {c['C1']}/{c['C2']}/{c['C3']}/{c['C4']}/{c['C5']}, undesired "
                f"{c['C6']} min, desired {c['C7']} min, unfairness {c['C8']}",
            ),
        )
    rows += [("note", n) for n in r["notes"]]
    for key, value in rows:
        print(f"{key + ':':<12}{value}")
