"""Abort latency: time from setting the abort flag to the solver returning its best schedule.

    .venv/bin/python benchmarks/abort_latency.py --sizes small medium large --repeat 5

For each size and solver, solves in the sandboxed child (as the CLI and workers do) and
sets the flag after a random 1-4 s; prints the median and p95 of the latency.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any


def measure(size: str, solver: str, repeat: int, seed: int, sandbox: bool) -> dict[str, Any]:
    from rsched.programfile.generator import generate_program
    from rsched.programfile.loader import parse_program
    from rsched.solver.api import SolveParams, solve
    from rsched.solver.control import AbortFlag, Control
    from rsched.solver.sandbox import Limits, solve_in_sandbox

    data = parse_program(generate_program(size, seed))
    rng = random.Random(seed)
    latencies: list[float] = []
    with_schedule = 0
    for _ in range(repeat):
        flag = AbortFlag()
        set_at: list[float] = []
        delay = rng.uniform(1.0, 4.0)

        def fire(f: AbortFlag = flag, d: float = delay, out: list[float] = set_at) -> None:
            time.sleep(d)
            out.append(time.monotonic())
            f.set("benchmark")

        threading.Thread(target=fire, daemon=True).start()
        params = SolveParams(algorithm=solver, time_limit=120, workers=2)
        control = Control(should_abort=flag)
        if sandbox:
            result = solve_in_sandbox(
                data, params, limits=Limits(wall_seconds=300), control=control
            )
        else:
            result = solve(data, params, control)
        done = time.monotonic()
        if set_at:
            latencies.append(done - set_at[0])
        with_schedule += int(result.has_schedule)
    latencies.sort()
    p95 = latencies[min(len(latencies) - 1, round(0.95 * (len(latencies) - 1)))]
    return {
        "size": size,
        "solver": solver,
        "sandbox": sandbox,
        "runs": len(latencies),
        "median_s": statistics.median(latencies) if latencies else None,
        "p95_s": p95 if latencies else None,
        "max_s": max(latencies) if latencies else None,
        "with_schedule": with_schedule,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sizes", nargs="*", default=["small", "medium", "large"])
    ap.add_argument("--solvers", nargs="*", default=["cp_sat", "greedy", "mip"])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--in-process", action="store_true", help="no sandbox child")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    rows = []
    print(
        f"{'size':<8}{'solver':<8}{'runs':>5}{'median s':>10}{'p95 s':>8}{'max s':>8}"
        f"{'best kept':>10}"
    )
    for size in args.sizes:
        for solver in args.solvers:
            r = measure(size, solver, args.repeat, args.seed, not args.in_process)
            rows.append(r)
            print(
                f"{size:<8}{solver:<8}{r['runs']:>5}{r['median_s']:>10.3f}{r['p95_s']:>8.3f}"
                f"{r['max_s']:>8.3f}{r['with_schedule']:>10}",
                flush=True,
            )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
