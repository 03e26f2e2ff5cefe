"""The `rsched` command line. Each sub-command lives in its own module of this package
and exposes ``register(subparsers)``; this module only wires them and maps errors to
exit codes (never a stack trace for an input error)."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from rsched import __version__
from rsched.domain.errors import InvalidInput, RschedError

# Modules of rsched.cli that register sub-commands, in the order `--help` lists them.
COMMAND_MODULES: tuple[str, ...] = (
    "program_cmds",
    "validate_cmd",
    "solve_cmds",
    "bench_cmds",
    "admin_cmds",
    "backup_cmds",
    "serve_cmd",
    "worker_cmd",
    "mcp_cmd",
)

EXIT_OK = 0
EXIT_VIOLATIONS = 1
EXIT_BAD_INPUT = 2
EXIT_FAILURE = 3


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rsched", description="ACGME-compliant residency scheduling."
    )
    parser.add_argument("--version", action="version", version=f"rsched {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"rsched.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"rsched.cli.{name}":
                continue  # a command module not built yet is simply not offered
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.whole_process = argv is None  # run as the `rsched` command, not called in-process
    try:
        code: int = args.func(args)
    except InvalidInput as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except RschedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
