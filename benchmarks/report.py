"""Write docs/benchmarks.md: reference sizes × solvers, the Curtois & Qu instances and the
Timefold demo instances, with PNG plots, the machine, and the command that reproduces it.

    .venv/bin/python benchmarks/report.py                       # the full report (about 1 h)
    .venv/bin/python benchmarks/report.py --quick               # short limits, a smoke run

Every figure comes from a run made by this command; nothing is copied in by hand.
Time budgets are wall-clock including start-up of each child process.
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

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DOCS = ROOT / "docs"


def _run_json(script: str, args: list[str]) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "rows.json"
        cmd = [sys.executable, str(HERE / script), *args, "--json", str(out)]
        print("$", " ".join(cmd[1:]), flush=True)
        subprocess.run(cmd, check=False, cwd=ROOT)
        if not out.exists():
            return [{"error": f"{script} wrote no results"}]
        payload = json.loads(out.read_text())
        if isinstance(payload, dict):
            payload = payload.get("rows", payload.get("runs", []))
        rows: list[dict[str, Any]] = payload
        return rows


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kb / 2**20:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    from importlib.metadata import version

    libs = ", ".join(f"{p} {version(p)}" for p in ("ortools", "highspy"))
    return (
        f"{cpu}, {os.cpu_count()} cores{mem}; {platform.system()} {platform.release()}; "
        f"Python {platform.python_version()}; {libs}"
    )


def _cell(v: Any, fmt: str = "") -> str:
    if v is None or v == "":
        return "—"
    if isinstance(v, float):
        return format(v, fmt or ".2f")
    return str(v)


def table(rows: list[dict[str, Any]], cols: list[tuple[str, str, str]]) -> list[str]:
    out = ["| " + " | ".join(h for h, _, _ in cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        if "error" in r:
            out.append("| " + " | ".join([str(r["error"])] + ["—"] * (len(cols) - 1)) + " |")
            continue
        out.append("| " + " | ".join(_cell(r.get(k), f) for _, k, f in cols) + " |")
    return out


def plot_traces(rows: list[dict[str, Any]], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    sizes = sorted({r["size"] for r in rows if r.get("trace")})
    if not sizes:
        return False
    fig, axes = plt.subplots(1, len(sizes), figsize=(5 * len(sizes), 3.6), squeeze=False)
    for ax, size in zip(axes[0], sizes, strict=True):
        for r in rows:
            if r.get("size") != size or not r.get("trace"):
                continue
            xs = [t for t, _ in r["trace"]] + [r["wall"]]
            ys = [o for _, o in r["trace"]] + [r["trace"][-1][1]]
            ax.step(xs, ys, where="post", label=r["solver"])
        ax.set_title(f"{size}: objective over time")
        ax.set_xlabel("seconds")
        ax.set_ylabel("objective (lower is better)")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_gaps(rows: list[dict[str, Any]], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    ok = [r for r in rows if r.get("gap_to_best_pct") is not None]
    if not ok:
        return False
    fig, ax = plt.subplots(figsize=(9, 3.6))
    ax.bar(
        [str(r["instance"]).replace("Instance", "") for r in ok], [r["gap_to_best_pct"] for r in ok]
    )
    ax.set_xlabel("Curtois & Qu instance")
    ax.set_ylabel("gap to best known (%)")
    ax.set_title("rsched CP-SAT vs best known values")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="short limits (a smoke run)")
    ap.add_argument("--sizes", nargs="*", default=["small", "medium", "large"])
    ap.add_argument("--solvers", nargs="*", default=["cp_sat", "greedy", "mip"])
    ap.add_argument("--size-limit", type=float, default=30.0)
    ap.add_argument("--curtois", default="1-24")
    ap.add_argument("--curtois-limit", type=float, default=60.0)
    ap.add_argument("--timefold-limit", type=float, default=60.0)
    ap.add_argument("--out", type=Path, default=DOCS / "benchmarks.md")
    args = ap.parse_args()
    if args.quick:
        args.size_limit, args.curtois_limit, args.timefold_limit = 5.0, 5.0, 5.0
        args.curtois = "1-3"
    started = time.time()
    sizes = _run_json(
        "run.py",
        ["--sizes", *args.sizes, "--solvers", *args.solvers, "--time-limit", str(args.size_limit)],
    )
    curtois = _run_json("curtois_run.py", [args.curtois, "--time-limit", str(args.curtois_limit)])
    timefold = _run_json("timefold_run.py", ["--time-limit", str(args.timefold_limit)])
    docs = args.out.parent
    docs.mkdir(parents=True, exist_ok=True)
    lines = [
        "# Benchmarks",
        "",
        f"Made by `{' '.join(['.venv/bin/python', 'benchmarks/report.py', *sys.argv[1:]])}` "
        f"on {time.strftime('%Y-%m-%d', time.gmtime(started))} in "
        f"{(time.time() - started) / 60:.0f} min.",
        "",
        f"Machine: {machine()}. Shared machines are noisy: compare ratios, not seconds.",
        "",
        f"## Reference programs ({args.size_limit:g} s per solve, 2 workers)",
        "",
        *table(
            sizes,
            [
                ("size", "size", ""),
                ("solver", "solver", ""),
                ("status", "status", ""),
                ("first feasible s", "time_to_first", ".2f"),
                ("best s", "time_to_best", ".2f"),
                ("wall s", "wall", ".1f"),
                ("objective", "objective", ".0f"),
                ("bound", "bound", ".0f"),
                ("gap", "gap", ".2%"),
                ("hard", "violations", ""),
                ("warnings", "warnings", ""),
                ("coverage", "coverage", ".1%"),
                ("max fairness spread", "max_fairness_spread", ""),
                ("peak MB", "peak_mb", ".0f"),
            ],
        ),
        "",
    ]
    if plot_traces(sizes, docs / "benchmarks-objective.png"):
        lines += ["![objective over time](benchmarks-objective.png)", ""]
    lines += [
        f"## Curtois & Qu instances ({args.curtois_limit:g} s each)",
        "",
        "Objective in the benchmark's own terms, checked by our independent evaluator.",
        "",
        *table(
            curtois,
            [
                ("instance", "instance", ""),
                ("days", "days", ""),
                ("staff", "staff", ""),
                ("status", "status", ""),
                ("objective", "objective", ""),
                ("best known", "best_known", ""),
                ("gap to best %", "gap_to_best_pct", ".2f"),
                ("bound", "bound", ""),
                ("first s", "time_to_first", ".2f"),
                ("wall s", "wall_time", ".1f"),
                ("hard breaches (evaluator)", "breaches", ""),
                ("peak MB", "peak_rss_mb", ".0f"),
            ],
        ),
        "",
    ]
    if plot_gaps(curtois, docs / "benchmarks-curtois.png"):
        lines += ["![gap per instance](benchmarks-curtois.png)", ""]
    lines += [
        f"## Timefold employee-scheduling demo instances ({args.timefold_limit:g} s)",
        "",
        "Score in Timefold's own terms, computed by our scorer exactly as its FORMAT.md defines.",
        "",
        *table(
            timefold,
            [
                ("instance", "instance", ""),
                ("limit s", "time_limit", ".0f"),
                ("status", "status", ""),
                ("score", "score", ""),
                ("time to 0 hard s", "time_to_feasible", ".2f"),
                ("wall s", "wall_seconds", ".2f"),
                ("peak MB", "peak_mb", ".0f"),
                ("re-scored", "check", ""),
            ],
        ),
        "",
    ]
    args.out.write_text("\n".join(lines) + "\n")
    raw = {"sizes": sizes, "curtois": curtois, "timefold": timefold}
    args.out.with_suffix(".json").write_text(json.dumps(raw, indent=1, default=str) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
