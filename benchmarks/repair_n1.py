"""Benchmarks of the changes after publishing: repair after a week of new leave, and N-1.

    .venv/bin/python benchmarks/repair_n1.py                      # medium, 3 residents
    .venv/bin/python benchmarks/repair_n1.py --size small --residents 2 --json out.json
    .venv/bin/python benchmarks/repair_n1.py --n1-solver-only     # also N-1 without hand-overs

The program is generated (``generate_program(size, seed)``) and solved once with CP-SAT;
that schedule is the active one. Then:

* **repair**: for one resident of each PGY level in turn (the busiest in the second
  week among those without leave), a one-week vacation is added over that week and
  ``repair`` re-solves the broken days; the changed assignments, the re-solved days and
  the hard violations of the result are reported;
* **N-1**: ``n_minus_one`` for every person, in this process (jobs 1) and over
  ``cores ÷ 1`` processes of one CP-SAT thread each.

Times are wall-clock seconds in a process where OR-Tools is already imported (the
baseline solve imports it). Prints a table and writes JSON (rows plus the machine and
its load average, since a shared machine slows everything).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any


def _load() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def _fmt(v: Any, spec: str = "") -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return format(v, spec or ".2f")
    return str(v)


def print_table(rows: list[dict[str, Any]]) -> None:
    cols = [
        ("program", "program", ""),
        ("operation", "operation", ""),
        ("wall s", "wall", ".2f"),
        ("changed", "changed", ""),
        ("added", "added", ""),
        ("removed", "removed", ""),
        ("violations", "violations", ""),
        ("status", "status", ""),
        ("detail", "detail", ""),
    ]
    table = [[h for h, _, _ in cols]]
    for r in rows:
        table.append([_fmt(r.get(k), s) for _, k, s in cols])
    widths = [max(len(row[i]) for row in table) for i in range(len(cols))]
    for i, row in enumerate(table):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--size", default="medium")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--residents", type=int, default=3, help="repairs (one per PGY level)")
    ap.add_argument("--baseline-time-limit", type=float, default=60.0)
    ap.add_argument("--time-limit", type=float, default=10.0, help="per repair")
    ap.add_argument("--n1-time-limit", type=float, default=2.0, help="per person")
    ap.add_argument("--jobs", type=int, default=None, help="N-1 processes (default: cores)")
    ap.add_argument("--n1-solver-only", action="store_true", help="also N-1 without hand-overs")
    ap.add_argument(
        "--json",
        default=str(Path(tempfile.gettempdir()) / "rsched-repair_n1.json"),
        help="write the rows as JSON here (default: %(default)s)",
    )
    args = ap.parse_args()

    from rsched.domain import Absence
    from rsched.domain.calendar import local_date, local_midnight
    from rsched.programfile.generator import generate_program
    from rsched.programfile.loader import parse_program
    from rsched.solver.api import SolveParams, solve
    from rsched.solver.n1 import N1Report, n_minus_one
    from rsched.solver.repair import repair

    load_before = _load()
    data = parse_program(generate_program(args.size, args.seed))
    t0 = time.perf_counter()
    base = solve(data, SolveParams(time_limit=args.baseline_time_limit, workers=2))
    rows: list[dict[str, Any]] = []
    assert base.report is not None
    rows.append(
        {
            "program": args.size,
            "operation": "baseline solve",
            "wall": time.perf_counter() - t0,
            "changed": None,
            "violations": len(base.report.violations),
            "status": str(base.status),
            "detail": f"{len(base.assignments)} assignments, objective {base.objective}",
        }
    )
    print_table(rows[-1:])
    active = base.assignments

    # one resident per PGY level: the busiest in the second week, without leave
    week = [data.start + timedelta(days=7 + i) for i in range(7)]
    on_leave = {a.person_id for a in data.absences}
    busy: dict[str, int] = {}
    for a in active:
        person = data.person_by_id[a.person_id]
        if person.is_resident and person.id not in on_leave:
            if local_date(data.slot_by_id[a.slot_id].start, data.tz) in week:
                busy[person.id] = busy.get(person.id, 0) + 1
    chosen: list[str] = []
    levels = sorted({p.pgy or 0 for p in data.residents()})
    for k in range(args.residents):
        level = levels[k % len(levels)]
        pool = [p for p in sorted(busy) if data.person_by_id[p].pgy == level and p not in chosen]
        if pool:
            chosen.append(max(pool, key=lambda p: busy[p]))

    for pid in chosen:
        leave = Absence(
            id="bench-vacation",
            person_id=pid,
            start=local_midnight(week[0], data.tz),
            end=local_midnight(week[-1] + timedelta(days=1), data.tz),
        )
        now = replace(data, absences=(*data.absences, leave))
        t0 = time.perf_counter()
        fixed = repair(now, active, params=SolveParams(time_limit=args.time_limit, workers=2))
        wall = time.perf_counter() - t0
        rows.append(
            {
                "program": args.size,
                "operation": f"repair: {pid} (PGY-{data.person_by_id[pid].pgy}) 1 week off",
                "wall": wall,
                "changed": fixed.diff.changed,
                "added": fixed.diff.n_added,
                "removed": fixed.diff.n_removed,
                "violations": len(fixed.report.violations),
                "status": fixed.status,
                "detail": (
                    f"{busy[pid]} of their assignments in the week; re-solved "
                    f"{len(fixed.free_slots)}/{len(now.slots)} slots over {len(fixed.days)} "
                    f"days (margin {fixed.margin}); "
                    + ", ".join(f"{a.status} {a.seconds:.2f}s" for a in fixed.attempts)
                ),
                "summary": fixed.summary(),
            }
        )
        print_table(rows[-1:])

    def n1_row(label: str, report: N1Report) -> dict[str, Any]:
        entries = report.entries
        changed = [e.diff.changed for e in entries]
        return {
            "program": args.size,
            "operation": label,
            "wall": report.wall_seconds,
            "changed": max(changed) if changed else 0,
            "added": sum(e.diff.n_added for e in entries),
            "removed": sum(e.diff.n_removed for e in entries),
            "violations": sum(len(e.violations) for e in entries),
            "status": f"{len(report.not_absorbable)} not absorbable",
            "detail": (
                f"{len(entries)} people, jobs {report.jobs}; solver for "
                f"{sum(1 for e in entries if e.method == 'solver')}; unproved "
                f"{sum(1 for e in entries if not e.proved)}; changed per person: max "
                f"{max(changed) if changed else 0}, mean "
                f"{sum(changed) / max(1, len(changed)):.1f}"
            ),
            "summary": report.summary(),
        }

    per_person = SolveParams(time_limit=args.n1_time_limit, workers=1)
    cores = os.cpu_count() or 1
    for jobs in (1, args.jobs or cores):
        report = n_minus_one(data, active, params_per_person=per_person, jobs=jobs)
        rows.append(n1_row(f"N-1 (jobs {report.jobs} × 1 thread)", report))
        print_table(rows[-1:])
        if cores == 1:
            break
    if args.n1_solver_only:
        report = n_minus_one(
            data, active, params_per_person=per_person, jobs=args.jobs or cores, direct=False
        )
        rows.append(n1_row(f"N-1 solver only (jobs {report.jobs} × 1 thread)", report))
        print_table(rows[-1:])

    print()
    print_table(rows)
    if args.json:
        out = {
            "machine": {
                "cpus": cores,
                "python": platform.python_version(),
                "platform": platform.platform(),
                "load_average_before": load_before,
                "load_average_after": _load(),
            },
            "args": vars(args),
            "rows": rows,
        }
        Path(args.json).write_text(json.dumps(out, indent=2, default=str) + "\n")
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
