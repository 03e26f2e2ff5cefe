"""Run the Timefold employee-scheduling demo instances through ``rsched bench timefold``.

    .venv/bin/python benchmarks/timefold_run.py                          # both, 60 s each
    .venv/bin/python benchmarks/timefold_run.py --time-limit 5 --only small --json out.json
    .venv/bin/python benchmarks/timefold_run.py --limits small=5,30 large=10,60

Each run is the whole CLI command in a child process, so that its wall time includes
start-up (interpreter, imports, reading, model building, writing) and its peak resident
memory (``ru_maxrss`` of that child alone, from ``wait4``) is measured alone. The command's
``--time-limit`` is the budget of that whole command. Every solution is re-scored here with
the independent scorer (column ``check``: ``ok`` when it gives the score the command
printed). Runs are sequential: the machine is shared, one benchmark at a time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

DEFAULT_DIR = Path(__file__).resolve().parents[2] / "shared" / "benchmarks" / "timefold-demo"
INSTANCES = ("small", "large")
ROOT = Path(__file__).resolve().parent.parent


def rsched_command() -> list[str]:
    exe = Path(sys.executable).parent / "rsched"
    if exe.exists():
        return [str(exe)]
    return [sys.executable, "-m", "rsched.cli.main"]


def run_one(
    path: Path, time_limit: float, workers: int, seed: int, out_dir: Path
) -> dict[str, Any]:
    """One CLI run: wall time and peak memory of the child, its JSON report, the check."""
    solution = out_dir / f"{path.stem}-{time_limit:g}s.json"
    cmd = [
        *rsched_command(),
        "bench",
        "timefold",
        str(path),
        "--time-limit",
        f"{time_limit:g}",
        "--workers",
        str(workers),
        "--seed",
        str(seed),
        "-o",
        str(solution),
        "--json",
    ]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.monotonic()
        child = subprocess.Popen(cmd, stdout=out, stderr=err, cwd=ROOT)
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.monotonic() - t0
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    row: dict[str, Any] = {
        "instance": path.stem,
        "time_limit": time_limit,
        "command": " ".join(cmd),
        "exit_code": child.returncode,
        "wall_seconds": round(wall, 3),
        "peak_mb": round(usage.ru_maxrss / 1024, 1),  # Linux: KiB
    }
    try:
        report = json.loads(stdout)
    except json.JSONDecodeError:
        row["error"] = (stderr or stdout).strip()[-500:]
        return row
    row.update(
        status=report.get("status"),
        score=report.get("score"),
        soft_bound=report.get("soft_bound"),
        time_to_feasible=report.get("time_to_feasible"),
        time_to_best=report.get("time_to_best"),
        stages=report.get("stages"),
        trajectory=report.get("trajectory"),
        solution=report.get("solution"),
    )
    row["check"] = check(path, solution, report.get("score"))
    return row


def check(instance_path: Path, solution: Path, claimed: str | None) -> str:
    """Re-score the written solution with the independent scorer."""
    from rsched.bench.timefold import format_score, read_assignment, read_instance, score

    if not solution.is_file():
        return "no file"
    inst = read_instance(instance_path)
    assignment = read_assignment(solution)
    text = format_score(*score(inst, assignment))
    if len(assignment) != len(inst.shifts):
        return f"{len(inst.shifts) - len(assignment)} unassigned"
    return "ok" if text == claimed else f"scorer says {text}"


def _fmt(value: float | None, unit: str = " s") -> str:
    return "-" if value is None else f"{value:.2f}{unit}"


def print_table(rows: list[dict[str, Any]]) -> None:
    head = (
        f"{'instance':<12}{'limit':>7}  {'to 0 hard':>10}  {'score':<26}{'status':<10}"
        f"{'wall':>9}{'peak MB':>9}  check"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        print(
            f"{r['instance']:<12}{r['time_limit']:>6g}s  {_fmt(r.get('time_to_feasible')):>10}  "
            f"{r.get('score') or '-':<26}{r.get('status') or 'error':<10}"
            f"{_fmt(r['wall_seconds']):>9}{r['peak_mb']:>9.1f}  "
            f"{r.get('check', r.get('error', ''))}"
        )


def parse_limits(items: list[str]) -> dict[str, list[float]]:
    """``["small=5,30", "large=10,60"]`` -> {"small": [5, 30], "large": [10, 60]}."""
    out: dict[str, list[float]] = {}
    for item in items:
        name, _, values = item.partition("=")
        if name not in INSTANCES or not values:
            raise SystemExit(f"--limits: expected small=S[,S…] or large=S[,S…], got {item!r}")
        out[name] = [float(v) for v in values.split(",") if v]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="instance directory")
    parser.add_argument("--only", choices=INSTANCES, action="append", help="instance(s) to run")
    parser.add_argument("--time-limit", type=float, default=60.0, help="seconds per run")
    parser.add_argument(
        "--limits",
        nargs="+",
        default=None,
        metavar="NAME=S,…",
        help="per-instance list of limits, e.g. small=5,30 large=10,60 (overrides --time-limit)",
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", type=Path, default=None, help="where solutions go")
    parser.add_argument("--json", type=Path, default=None, help="write all results here")
    args = parser.parse_args(argv)

    limits = parse_limits(args.limits) if args.limits else {}
    names = args.only or (list(limits) if limits else list(INSTANCES))
    out_dir = args.out_dir or Path(tempfile.mkdtemp(prefix="timefold-run-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    for name in names:
        path = args.dir / f"demo_{name}.json"
        for limit in limits.get(name, [args.time_limit]):
            rows.append(run_one(path, limit, args.workers, args.seed, out_dir))
    print_table(rows)
    load = os.getloadavg()
    print(
        f"\nmachine: {platform.machine()}, {os.cpu_count()} CPU(s), load average "
        f"{load[0]:.2f}/{load[1]:.2f}/{load[2]:.2f}; solutions in {out_dir}"
    )
    if args.json:
        doc = {
            "benchmark": "timefold-demo",
            "workers": args.workers,
            "seed": args.seed,
            "cpus": os.cpu_count(),
            "load_average": load,
            "python": platform.python_version(),
            "runs": rows,
        }
        args.json.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    return 0 if all(r.get("check") == "ok" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
