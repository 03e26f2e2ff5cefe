"""`rsched check`, `rsched generate` and `rsched demo`: the solver from the command line."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from rsched.cli.progress import solver_progress
from rsched.domain import ProgramData, Severity
from rsched.domain.errors import FieldError, InvalidInput
from rsched.fileio import write_atomic
from rsched.solver.api import SOLVERS, SolveParams, solve
from rsched.solver.checkpoint import FileCheckpointStore, hint_from
from rsched.solver.model import build_model
from rsched.solver.precheck import PrecheckReport, precheck
from rsched.solver.result import SolveResult
from rsched.solver.sandbox import Limits, solve_in_sandbox


def _load(path: str) -> ProgramData:
    from rsched.programfile.loader import load_program

    return load_program(path)


def _params(args: argparse.Namespace) -> SolveParams:
    params = SolveParams(
        algorithm=args.solver,
        time_limit=args.time_limit,
        workers=args.workers,
        seed=args.seed,
        deterministic=getattr(args, "deterministic", False),
    )
    params.check()
    return params


def _print_precheck(console: Console, report: PrecheckReport) -> None:
    for e in report.errors:
        console.print(f"[red]error[/red]  {e}")
    for w in report.warnings:
        console.print(f"[yellow]warning[/yellow]  {w}")
    size = report.size
    console.print(
        f"model: {size.get('x_vars')} assignment variables, {size.get('aux_vars')} auxiliary, "
        f"{size.get('hard_constraints')} hard constraints; largest: "
        + ", ".join(f"{k} {v}" for k, v in report.dominant_rules)
    )


def cmd_check(args: argparse.Namespace) -> int:
    console = Console()
    data = _load(args.program)
    report = precheck(build_model(data))
    _print_precheck(console, report)
    if report.ok:
        console.print("[green]no contradiction found[/green]")
        return 0
    return 1


def default_limits(params: SolveParams, memory_mb: int | None = None) -> Limits:
    """Sandbox limits: wall = time limit + 60 s for start-up and validation; CPU = every
    worker busy for the whole wall time; memory 4 GiB of address space unless told."""
    wall = params.time_limit + 60
    return Limits(
        memory_bytes=(memory_mb or 4096) * 2**20,
        cpu_seconds=wall * max(1, params.workers) + 30,
        wall_seconds=wall,
    )


def run_solve(
    data: ProgramData,
    params: SolveParams,
    *,
    quiet: bool = False,
    console: Console | None = None,
    sandbox: bool = True,
    limits: Limits | None = None,
    checkpoint_dir: Path | None = None,
    resume: Path | None = None,
) -> SolveResult:
    """Pre-check, then solve with a progress bar (in the sandboxed child unless told
    otherwise); Ctrl-C keeps the best schedule found."""
    console = console or Console(stderr=True)
    spec = build_model(data)
    report = precheck(spec)
    if not report.ok:
        raise InvalidInput(
            [FieldError("program", e) for e in report.errors], source="pre-solve check"
        )
    hint: frozenset[tuple[str, str]] = frozenset()
    if resume is not None:
        latest = FileCheckpointStore(resume).latest()  # a corrupt newest file is refused
        if latest is None:
            raise InvalidInput(FieldError("resume", f"no checkpoint in {resume}"))
        hint = hint_from(latest, program_id=data.program.id)
    with solver_progress(params.time_limit, console=console, enabled=not quiet) as (control, _):
        control.hint = hint
        if not sandbox:
            return solve(data, params, control, spec=spec)
        return solve_in_sandbox(
            data,
            params,
            limits=limits or default_limits(params),
            control=control,
            checkpoint_dir=checkpoint_dir,
            run=data.program.id,
        )


def summary_table(result: SolveResult) -> Table:
    table = Table(title="Schedule", show_header=False)
    rep = result.report
    rows: list[tuple[str, Any]] = [
        ("solver", result.algorithm),
        ("status", f"{result.status} ({result.stop_reason})"),
        ("objective", result.objective),
        ("bound / gap", f"{result.bound} / {'—' if result.gap is None else f'{result.gap:.2%}'}"),
        ("time to first", f"{result.time_to_first:.2f} s" if result.time_to_first else "—"),
        ("wall", f"{result.wall_seconds:.2f} s"),
        ("assignments", len(result.assignments)),
    ]
    if rep is not None:
        rows += [
            ("hard violations", f"{len(rep.violations)} {rep.count_by_rule(Severity.VIOLATION)}"),
            ("warnings", f"{len(rep.warnings)} {rep.count_by_rule(Severity.WARNING)}"),
            ("coverage", f"{rep.coverage:.2%} ({rep.staffed_positions}/{rep.required_positions})"),
            ("penalties", ", ".join(f"{k}={v}" for k, v in sorted(rep.penalties.items()))),
        ]
    for note in result.notes:
        rows.append(("note", note))
    for line in result.explanation:
        rows.append(("why", line))
    for k, v in rows:
        table.add_row(k, str(v))
    return table


def write_schedule(path: Path, data: ProgramData, result: SolveResult) -> None:
    from rsched.interchange.schedule_json import export_schedule

    rep = result.report
    summary = {
        "algorithm": result.algorithm,
        "status": str(result.status),
        "objective": result.objective,
        "violations": len(rep.violations) if rep else None,
        "warnings": len(rep.warnings) if rep else None,
        "coverage": rep.coverage if rep else None,
    }
    doc = export_schedule(data, result.assignments, summary=summary)
    write_atomic(path, json.dumps(doc, indent=2, ensure_ascii=False) + "\n")


def cmd_generate(args: argparse.Namespace) -> int:
    params = _params(args)
    data = _load(args.program)
    console = Console(stderr=True)
    result = run_solve(
        data,
        params,
        quiet=args.quiet,
        console=console,
        sandbox=not args.no_sandbox,
        limits=default_limits(params, args.memory_mb),
        checkpoint_dir=Path(args.checkpoints) if args.checkpoints else None,
        resume=Path(args.resume) if args.resume else None,
    )
    console.print(summary_table(result))
    if args.json:
        print(json.dumps(result.summary(), default=str, indent=2))
    if not result.has_schedule:
        return 1
    if args.output:
        write_schedule(Path(args.output), data, result)
        console.print(f"wrote {args.output}")
    return 0 if result.report is not None and result.report.ok else 1


def cmd_demo(args: argparse.Namespace) -> int:
    import yaml

    from rsched.interchange.csv_export import schedule_csv
    from rsched.interchange.html_grid import render_grid
    from rsched.interchange.ics import write_calendars
    from rsched.programfile.generator import generate_program
    from rsched.programfile.loader import parse_program

    console = Console()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    mapping = generate_program(args.size, args.seed)
    write_atomic(out / "program.yaml", yaml.safe_dump(mapping, sort_keys=False))
    data = parse_program(mapping)
    console.print(
        f"program [bold]{data.program.name}[/bold]: {len(data.residents())} residents, "
        f"{len(data.people) - len(data.residents())} faculty, {len(data.slots)} slots, "
        f"{data.start}..{data.end}"
    )
    params = SolveParams(algorithm=args.solver, time_limit=args.time_limit, workers=args.workers)
    params.check()
    result = run_solve(data, params, console=Console(stderr=True), quiet=args.quiet)
    console.print(summary_table(result))
    if not result.has_schedule or result.report is None:
        console.print("[red]no schedule found[/red]")
        return 1
    write_schedule(out / "schedule.json", data, result)
    write_atomic(out / "schedule.csv", schedule_csv(data, result.assignments))
    write_calendars(data, result.assignments, out / "calendars")
    write_atomic(out / "grid.html", render_grid(data, result.assignments, result.report))
    write_atomic(out / "report.json", json.dumps(result.summary(), default=str, indent=2) + "\n")
    console.print(
        f"wrote {out}/program.yaml, schedule.json, schedule.csv, grid.html, report.json and "
        f"calendars/ ({len(data.people)} .ics) in {time.monotonic() - started:.1f} s"
    )
    return 0 if result.report.ok else 1


def _solver_args(p: argparse.ArgumentParser, default_limit: float) -> None:
    p.add_argument("--solver", default="cp_sat", help=f"one of: {', '.join(SOLVERS)}")
    p.add_argument("--time-limit", type=float, default=default_limit, help="seconds")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("check", help="pre-solve check of a program file")
    p.add_argument("program")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("generate", help="solve a program file into a schedule")
    p.add_argument("program")
    _solver_args(p, 60.0)
    p.add_argument("--deterministic", action="store_true")
    p.add_argument("-o", "--output", help="schedule JSON (rsched.schedule/1)")
    p.add_argument("--json", action="store_true", help="print the result summary as JSON")
    p.add_argument("--no-sandbox", action="store_true", help="solve in this process")
    p.add_argument("--memory-mb", type=int, help="address-space limit of the solver child")
    p.add_argument("--checkpoints", help="folder for hash-verified checkpoints")
    p.add_argument("--resume", help="checkpoint folder to resume from (newest, verified)")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("demo", help="generate, solve, validate and export a synthetic program")
    p.add_argument("--out", default="demo-output")
    p.add_argument("--size", default="medium")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--solver", default="cp_sat")
    p.add_argument("--time-limit", type=float, default=30.0)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_demo)
