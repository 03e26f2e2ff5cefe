"""`rsched validate [PROGRAM] SCHEDULE.json [--json]`: check a schedule against every rule.

With a program file, the interchange file's assignments are checked against that program
(its people, slots, absences and settings). With the interchange file alone, the file is
the program: its own periods and settings (ACGME defaults where absent).

Exit code 0 when no hard violation is found, 1 when there is one, 2 for bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from rsched.domain import Assignment, FieldError, InvalidInput, ProgramData, Severity
from rsched.interchange.schedule_json import load
from rsched.rules.base import Violation
from rsched.rules.report import ValidationReport, validate

EXIT_OK = 0
EXIT_VIOLATIONS = 1


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "validate",
        help="check a schedule (JSON interchange file) against every rule",
        description=(
            "Check the assignments of an rsched.schedule/1 file against every rule. With a "
            "program file first, the program's people, slots and settings are used; otherwise "
            "the interchange file's own. Exit 0: no hard violation; 1: hard violations; "
            "2: bad input."
        ),
    )
    parser.add_argument(
        "program", nargs="?", type=Path, metavar="PROGRAM", help="program file (YAML or JSON)"
    )
    parser.add_argument("schedule", type=Path, metavar="SCHEDULE.json", help="interchange file")
    parser.add_argument(
        "--json",
        action="store_true",
        help="print the violations and warnings as a JSON list instead of a table",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    file_data, assignments, claimed = load(args.schedule)
    data = file_data
    if args.program is not None:
        from rsched.programfile.loader import load_program

        data = load_program(args.program)
        _check_references(data, assignments, str(args.schedule))
        if data.program.id != file_data.program.id:
            print(
                f"note: {args.schedule} is for program {file_data.program.id!r}, "
                f"checked against {data.program.id!r}",
                file=sys.stderr,
            )
    report = validate(data, assignments)
    if args.json:
        print(json.dumps([v.to_dict() for v in (*report.violations, *report.warnings)]))
    else:
        _print_report(data, report, claimed)
    return EXIT_VIOLATIONS if report.violations else EXIT_OK


def _check_references(data: ProgramData, assignments: Sequence[Assignment], source: str) -> None:
    """Every assignment names a person and a slot of the program (paths in file order)."""
    errors = []
    for i, a in enumerate(assignments):
        if a.person_id not in data.person_by_id:
            errors.append(FieldError(f"assignments[{i}].person", f"unknown person {a.person_id!r}"))
        if a.slot_id not in data.slot_by_id:
            errors.append(FieldError(f"assignments[{i}].slot", f"unknown slot {a.slot_id!r}"))
    if errors:
        raise InvalidInput(errors, source=f"{source} (against the program file)")


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:g}"


def _window(v: Violation, data: ProgramData) -> str:
    if v.start is None:
        return ""
    start = v.start.astimezone(data.tz)
    text = start.strftime("%Y-%m-%d %H:%M")
    if v.end is not None:
        end = v.end.astimezone(data.tz)
        text += " → " + end.strftime("%H:%M" if end.date() == start.date() else "%Y-%m-%d %H:%M")
    return text


def _print_report(data: ProgramData, report: ValidationReport, claimed: dict[str, Any]) -> None:
    console = Console(highlight=False)
    breaches = (*report.violations, *report.warnings)
    if breaches:
        table = Table(title=f"{data.program.name}: {len(breaches)} finding(s)")
        for column in ("rule", "severity"):
            table.add_column(column, no_wrap=True)
        for column in ("person/slot", "window", "value / limit", "message"):
            table.add_column(column, overflow="fold")
        for v in breaches:
            style = "bold red" if v.severity is Severity.VIOLATION else "yellow"
            who = " / ".join(x for x in (v.person, v.slot) if x)
            measure = f"{_num(v.value)} / {_num(v.limit)}" if v.value is not None else ""
            table.add_row(
                escape(v.rule),
                f"[{style}]{v.severity}[/]",
                escape(who),
                _window(v, data),
                measure,
                escape(v.message),
            )
        console.print(table)
    hard = report.count_by_rule(Severity.VIOLATION)
    soft = report.count_by_rule(Severity.WARNING)
    console.print(
        f"coverage {report.coverage:.1%} ({report.staffed_positions} of "
        f"{report.required_positions} required positions)",
        markup=False,
    )
    console.print(f"hard violations: {len(report.violations)}{_counts(hard)}", markup=False)
    console.print(f"warnings: {len(report.warnings)}{_counts(soft)}", markup=False)
    said = claimed.get("violations")
    if isinstance(said, int) and said != len(report.violations):
        console.print(
            f"note: the file's summary claims {said} hard violation(s); the validator found "
            f"{len(report.violations)}",
            markup=False,
        )
    if report.violations:
        console.print(f"[bold red]FAIL[/]: {len(report.violations)} hard violation(s)")
    else:
        console.print("[bold green]OK[/]: no hard violation")


def _counts(by_rule: dict[str, int]) -> str:
    return " (" + ", ".join(f"{r} {n}" for r, n in by_rule.items()) + ")" if by_rule else ""
