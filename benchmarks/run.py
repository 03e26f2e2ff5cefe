"""Benchmarks: reference program sizes × solvers, and the validator on large schedules.

Each measurement runs in its own Python process so its peak memory is its own.

    .venv/bin/python benchmarks/run.py                       # small, medium, large × cp_sat
    .venv/bin/python benchmarks/run.py --sizes medium --solvers cp_sat greedy mip --json out.json
    .venv/bin/python benchmarks/run.py --validate year gme   # validator timing only

Prints a table (size, solver, time, memory, quality) and can write JSON.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def _data(size: str, seed: int) -> Any:
    from rsched.programfile.generator import generate_program
    from rsched.programfile.loader import parse_program

    return parse_program(generate_program(size, seed))


def one_solve(size: str, solver: str, time_limit: float, seed: int) -> dict[str, Any]:
    from rsched.solver.api import SolveParams, solve
    from rsched.solver.control import Checkpoint, Control, Progress

    data = _data(size, seed)
    trace: list[tuple[float, float]] = []

    def improved(elapsed: float, objective: float | None) -> None:
        if objective is not None and (not trace or objective < trace[-1][1]):
            trace.append((round(elapsed, 3), objective))

    def on_progress(p: Progress) -> None:
        improved(p.elapsed, p.objective)

    def on_checkpoint(cp: Checkpoint) -> None:
        improved(cp.elapsed, cp.objective)

    t0 = time.perf_counter()
    result = solve(
        data,
        SolveParams(algorithm=solver, time_limit=time_limit, workers=2, seed=seed),
        Control(on_progress=on_progress, on_checkpoint=on_checkpoint),
    )
    best_at = [t for t, _ in trace]
    wall = time.perf_counter() - t0
    rep = result.report
    spreads = [f.spread for f in rep.fairness] if rep else []
    return {
        "size": size,
        "solver": solver,
        "status": str(result.status),
        "time_to_first": result.time_to_first,
        "time_to_best": best_at[-1] if best_at else result.time_to_first,
        "wall": wall,
        "objective": result.objective,
        "bound": result.bound,
        "gap": result.gap,
        "violations": len(rep.violations) if rep else None,
        "warnings": len(rep.warnings) if rep else None,
        "coverage": rep.coverage if rep else None,
        "max_fairness_spread": max(spreads) if spreads else 0,
        "x_vars": result.model_size.get("x_vars"),
        "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "trace": trace,
    }


def one_validate(size: str, seed: int) -> dict[str, Any]:
    """Validate schedules of ``size`` (every program of it: gme is several) made by CP-SAT;
    the time is the median of three validations of all of them."""
    from rsched.programfile.generator import generate_programs
    from rsched.programfile.loader import parse_program
    from rsched.rules.report import validate
    from rsched.solver.api import SolveParams, solve

    programs = [parse_program(m) for m in generate_programs(size, seed)]
    solved = [
        (data, solve(data, SolveParams(time_limit=300, workers=2)).assignments) for data in programs
    ]
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        reports = [validate(data, assignments) for data, assignments in solved]
        times.append(time.perf_counter() - t0)
    return {
        "size": size,
        "solver": f"validate {len(programs)} program(s)",
        "assignments": sum(len(a) for _, a in solved),
        "slots": sum(len(d.slots) for d in programs),
        "wall": sorted(times)[1],
        "violations": sum(len(r.violations) for r in reports),
        "warnings": sum(len(r.warnings) for r in reports),
        "coverage": min(r.coverage for r in reports),
        "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_mb_before_validate": rss_before,
    }


def _child(args: list[str]) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", *args], capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1:] or ["failed"], "args": args}
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _fmt(v: Any, spec: str = "") -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return format(v, spec or ".2f")
    return str(v)


def print_table(rows: list[dict[str, Any]]) -> None:
    cols = [
        ("size", "size", ""),
        ("solver", "solver", ""),
        ("status", "status", ""),
        ("first s", "time_to_first", ".2f"),
        ("best s", "time_to_best", ".2f"),
        ("wall s", "wall", ".2f"),
        ("objective", "objective", ".0f"),
        ("bound", "bound", ".0f"),
        ("gap", "gap", ".2%"),
        ("viol", "violations", ""),
        ("warn", "warnings", ""),
        ("coverage", "coverage", ".1%"),
        ("fair", "max_fairness_spread", ""),
        ("peak MB", "peak_mb", ".0f"),
    ]
    table = [[h for h, _, _ in cols]]
    for r in rows:
        if "error" in r:
            table.append(
                [str(r.get("args")), "error", " ".join(r["error"])] + [""] * (len(cols) - 3)
            )
            continue
        table.append([_fmt(r.get(k), s) for _, k, s in cols])
    widths = [max(len(row[i]) for row in table) for i in range(len(cols))]
    for i, row in enumerate(table):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
        if i == 0:
            print("  ".join("-" * w for w in widths))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sizes", nargs="*", default=["small", "medium", "large"])
    ap.add_argument("--solvers", nargs="*", default=["cp_sat"])
    ap.add_argument("--time-limit", type=float, default=30.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--validate", nargs="*", default=None, help="validator timing for sizes")
    ap.add_argument("--json", help="write the rows as JSON here")
    ap.add_argument("--child", nargs="*", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        kind, *rest = args.child
        if kind == "solve":
            row = one_solve(rest[0], rest[1], float(rest[2]), int(rest[3]))
        else:
            row = one_validate(rest[0], int(rest[1]))
        print(json.dumps(row))
        return 0
    rows: list[dict[str, Any]] = []
    if args.validate is not None:
        for size in args.validate:
            rows.append(_child(["validate", size, str(args.seed)]))
            print_table(rows[-1:])
    else:
        for size in args.sizes:
            for solver in args.solvers:
                rows.append(_child(["solve", size, solver, str(args.time_limit), str(args.seed)]))
                print_table(rows[-1:])
    print()
    print_table(rows)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
