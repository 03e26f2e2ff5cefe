"""``rsched program new|check`` and ``rsched schema program``.

``program new`` writes a synthetic program (atomically: a temporary file beside the
target, then a rename); for ``gme`` ``-o`` names a directory that receives one file per
program. ``program check`` loads a file and prints what it holds; a bad file raises
``InvalidInput`` and ``rsched.cli.main`` prints every error and exits 2. ``schema
program`` prints (or writes) the published JSON Schema.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table

from rsched.domain import PersonKind, ProgramData
from rsched.fileio import write_atomic
from rsched.programfile.generator import SIZES, generate_programs
from rsched.programfile.loader import load_program
from rsched.programfile.schema import program_json_schema


def register(subparsers: Any) -> None:
    program = subparsers.add_parser("program", help="create or check a program file")
    actions = program.add_subparsers(dest="program_command", metavar="ACTION", required=True)

    new = actions.add_parser("new", help="write a synthetic program (no real names)")
    new.add_argument("--size", choices=list(SIZES), default="small")
    new.add_argument("--seed", type=int, default=1)
    new.add_argument(
        "-o", "--output", help="file (.yaml or .json); for gme a directory; default: stdout"
    )
    new.set_defaults(func=cmd_new)

    check = actions.add_parser("check", help="load a program file and summarise it")
    check.add_argument("file")
    check.set_defaults(func=cmd_check)

    schema = subparsers.add_parser("schema", help="print a published JSON Schema")
    kinds = schema.add_subparsers(dest="schema_kind", metavar="KIND", required=True)
    prog = kinds.add_parser("program", help="the program file (rsched.program/1)")
    prog.add_argument("-o", "--output", help="write to this file instead of stdout")
    prog.set_defaults(func=cmd_schema_program)


def _dump(mapping: dict[str, Any], as_json: bool) -> str:
    if as_json:
        return json.dumps(mapping, indent=2, ensure_ascii=False) + "\n"
    return yaml.safe_dump(mapping, sort_keys=False, allow_unicode=True, width=100)


def cmd_new(args: argparse.Namespace) -> int:
    programs = generate_programs(args.size, args.seed)
    out = Path(args.output) if args.output else None
    if len(programs) > 1:
        if out is None or out.suffix:
            print("error: --size gme writes several files; give -o DIRECTORY", file=sys.stderr)
            return 2
        for mapping in programs:
            target = out / f"{mapping['program']['id']}.yaml"
            write_atomic(target, _dump(mapping, False))
            print(f"wrote {target}", file=sys.stderr)
        return 0
    if out is None:
        sys.stdout.write(_dump(programs[0], False))
        return 0
    write_atomic(out, _dump(programs[0], out.suffix.lower() == ".json"))
    print(f"wrote {out}", file=sys.stderr)
    return 0


def summary(data: ProgramData) -> Table:
    """What a loaded program holds, one row per kind of record."""
    residents = sum(1 for p in data.people if p.kind is PersonKind.RESIDENT)
    table = Table(title=f"{data.program.name} ({data.program.id}, {data.program.timezone})")
    table.add_column("item")
    table.add_column("count", justify="right")
    rows = [
        ("horizon", f"{data.start} .. {data.end} ({(data.end - data.start).days + 1} days)"),
        ("averaging periods", str(len(data.periods))),
        (
            "people",
            f"{len(data.people)} ({residents} residents, {len(data.people) - residents} faculty)",
        ),
        ("shift types", str(len(data.shift_types))),
        ("rotations", str(len(data.rotations))),
        ("rotation assignments", str(len(data.rotation_assignments))),
        ("slots", str(len(data.slots))),
        (
            "slot-positions (min..max)",
            f"{sum(s.min_staff for s in data.slots)} .. {sum(s.max_staff for s in data.slots)}",
        ),
        ("absences", str(len(data.absences))),
        ("requests", str(len(data.requests))),
    ]
    for item, count in rows:
        table.add_row(item, count)
    return table


def cmd_check(args: argparse.Namespace) -> int:
    data = load_program(args.file)
    Console().print(summary(data))
    return 0


def cmd_schema_program(args: argparse.Namespace) -> int:
    text = json.dumps(program_json_schema(), indent=2, ensure_ascii=False) + "\n"
    if args.output:
        write_atomic(args.output, text)
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0
