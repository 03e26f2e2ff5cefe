"""Run the Curtois & Qu benchmark with rsched's CP-SAT model and print a results table.

    .venv/bin/python benchmarks/curtois_run.py                      # all 24, 60 s each
    .venv/bin/python benchmarks/curtois_run.py 1-12 --time-limit 60 --json out.json

Each instance is solved in a child process (this script with ``--child``), so that its peak
resident memory (``ru_maxrss`` of the child, Python and OR-Tools included) is measured alone and a
crash or memory blow-up of one instance does not end the run. Every roster is re-checked with the
independent evaluator (column ``check``: ``ok`` or the number of hard-constraint breaches, ``obj!``
if the evaluated objective differs from the solver's).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

DEFAULT_DIR = Path(__file__).resolve().parents[2] / "shared" / "benchmarks" / "curtois"


def parse_selection(text: str) -> list[int]:
    """``"1-12,15"`` -> [1, …, 12, 15]."""
    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        lo, dash, hi = part.partition("-")
        if dash:
            out.extend(range(int(lo), int(hi) + 1))
        else:
            out.append(int(part))
    return out


def load_best_known(directory: Path) -> dict[str, int]:
    table = directory / "best_known.csv"
    if not table.is_file():
        return {}
    with table.open(newline="", encoding="utf-8") as fh:
        return {row["instance"]: int(row["best_known_ub"]) for row in csv.DictReader(fh)}


def child(path: Path, time_limit: float, workers: int, seed: int) -> None:
    """Solve one instance and print one JSON line (runs in the child process)."""
    from rsched.bench.curtois import evaluate, parse_instance, solve

    t0 = time.monotonic()
    instance = parse_instance(path)
    parse_time = time.monotonic() - t0
    result = solve(instance, time_limit=time_limit, workers=workers, seed=seed)
    ev = evaluate(instance, result.roster) if result.has_solution else None
    stats = instance.stats()
    print(
        json.dumps(
            {
                "instance": instance.name,
                "days": stats.days,
                "staff": stats.staff,
                "shift_types": stats.shift_types,
                "status": result.status,
                "objective": result.objective,
                "bound": result.best_bound,
                "gap": result.gap,
                "time_to_first": result.time_to_first,
                "solutions": result.solutions_found,
                "lns_steps": result.lns_steps,
                "aborted": result.aborted,
                "wall_time": result.wall_time,
                "build_time": result.build_time,
                "parse_time": parse_time,
                "evaluated_objective": None if ev is None else ev.objective,
                "breaches": None if ev is None else len(ev.breaches),
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            }
        ),
        flush=True,
    )


def run_one(path: Path, time_limit: float, workers: int, seed: int) -> dict[str, Any]:
    cmd = [
        sys.executable, str(Path(__file__).resolve()), "--child", str(path),
        "--time-limit", str(time_limit), "--workers", str(workers), "--seed", str(seed),
    ]
    started = time.monotonic()
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=3 * time_limit + 600, check=False
        )
    except subprocess.TimeoutExpired:
        return {"instance": path.stem, "status": "TIMEOUT", "elapsed": time.monotonic() - started}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = proc.stderr.strip().splitlines()[-3:]
        return {
            "instance": path.stem,
            "status": f"CRASH(rc={proc.returncode})",
            "error": " | ".join(tail),
            "elapsed": time.monotonic() - started,
        }
    row: dict[str, Any] = json.loads(lines[-1])
    row["elapsed"] = time.monotonic() - started
    return row


def _f(value: Any, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


HEADER = (
    f"{'instance':<11}{'days':>5}{'staff':>6} {'status':<9}{'objective':>10}{'best':>8}"
    f"{'gap%':>8}{'bound':>8}{'first s':>9}{'wall s':>8}{'RSS MB':>8}  check"
)


def format_row(row: dict[str, Any]) -> str:
    gap = row.get("gap_to_best_pct")
    if row.get("breaches") is None:
        check = "-"
    elif row["breaches"]:
        check = f"{row['breaches']} breaches"
    elif row.get("evaluated_objective") != row.get("objective"):
        check = "obj!"
    else:
        check = "ok"
    return (
        f"{row['instance']:<11}{_f(row.get('days'), 'd'):>5}{_f(row.get('staff'), 'd'):>6} "
        f"{row['status'][:9]:<9}{_f(row.get('objective'), 'd'):>10}"
        f"{_f(row.get('best_known'), 'd'):>8}{_f(gap, '.2f'):>8}{_f(row.get('bound'), 'd'):>8}"
        f"{_f(row.get('time_to_first'), '.2f'):>9}{_f(row.get('wall_time'), '.1f'):>8}"
        f"{_f(row.get('peak_rss_mb'), '.0f'):>8}  {check}"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument(
        "instances", nargs="?", default="1-24", help="e.g. 1-12 or 1,5,13 (default 1-24)"
    )
    ap.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="folder of InstanceN.txt files")
    ap.add_argument("--time-limit", type=float, default=60.0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None, help="also write the rows as JSON here")
    ap.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.child is not None:
        child(args.child, args.time_limit, args.workers, args.seed)
        return 0

    best = load_best_known(args.dir)
    rows: list[dict[str, Any]] = []
    print(
        f"# Curtois & Qu, time limit {args.time_limit:g} s, {args.workers} workers, "
        f"seed {args.seed}, {platform.python_implementation()} {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start",
        flush=True,
    )
    print(HEADER, flush=True)
    for n in parse_selection(args.instances):
        path = args.dir / f"Instance{n}.txt"
        row = run_one(path, args.time_limit, args.workers, args.seed)
        row["best_known"] = best.get(path.stem)
        obj = row.get("objective")
        if obj is not None and row["best_known"]:
            row["gap_to_best_pct"] = 100 * (obj - row["best_known"]) / row["best_known"]
        row["load_average"] = os.getloadavg()[0]
        rows.append(row)
        print(format_row(row), flush=True)
        if "error" in row:
            print(f"  {row['error']}", flush=True)
        if args.json is not None:  # rewrite after each instance, so a long run keeps its rows
            payload = {
                "time_limit": args.time_limit,
                "workers": args.workers,
                "seed": args.seed,
                "rows": rows,
            }
            tmp = args.json.with_suffix(args.json.suffix + ".tmp")
            tmp.write_text(json.dumps(payload, indent=2), encoding="utf-8")
            os.replace(tmp, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
