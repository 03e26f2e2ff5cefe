"""`rsched backup create|list|verify|restore|retention`: whole-database backups of the
configured database (``RSCHED_DATABASE_URL``, default the embedded SQLite file), kept in
``{data_dir}/backups``.

    rsched backup create --reason before-upgrade --protected   # the baseline, never deleted
    rsched backup list
    rsched backup verify ID                 # exit 1 when the file does not match
    rsched backup restore ID --target-url postgresql+psycopg://…/empty_db
    rsched backup retention --dry-run       # what the leader's retention would delete

Exit codes: 0 done, 1 a backup failed verification, 2 bad input, 3 failure (the backup
or restore could not be made, the target is not empty, another process leads).
"""

from __future__ import annotations

import argparse
import os
import socket
from typing import Any

from rsched.config import get_settings
from rsched.db.base import make_engine, make_sessionmaker
from rsched.domain.errors import FieldError, InvalidInput, RschedError
from rsched.services.backups import BackupRecord, RetentionPlan, service_for
from rsched.services.leader import LeaderLease

EXIT_OK = 0
EXIT_MISMATCH = 1
LEASE_SECONDS = 300.0


class NotTheLeader(RschedError):
    """Retention deletes only as the maintenance leader, and another process leads."""


def register(subparsers: Any) -> None:
    backup = subparsers.add_parser(
        "backup", help="whole-database backups: create, list, verify, restore, retention"
    )
    actions = backup.add_subparsers(dest="backup_command", metavar="ACTION", required=True)

    create = actions.add_parser(
        "create",
        help="back up the configured database now",
        description="Back up the whole database (pg_dump custom format, or the SQLite "
        "online backup) into {data_dir}/backups and record its SHA-256.",
    )
    create.add_argument("--reason", default="manual", help="why (part of the file name)")
    create.add_argument(
        "--protected", action="store_true", help="a baseline: retention never deletes it"
    )
    create.add_argument(
        "--encrypt",
        action="store_true",
        help="encrypt the file with the newest key of RSCHED_ENCRYPTION_KEYS",
    )
    create.add_argument("--program", default=None, help="the program it is made for (name only)")
    create.set_defaults(func=cmd_create)

    lst = actions.add_parser("list", help="list the backups, newest first")
    lst.add_argument("--all", action="store_true", help="include deleted backups")
    lst.set_defaults(func=cmd_list)

    verify = actions.add_parser(
        "verify", help="recompute a backup's checksum (exit 1 when it does not match)"
    )
    verify.add_argument("id", help="the backup id (see `rsched backup list`)")
    verify.set_defaults(func=cmd_verify)

    restore = actions.add_parser(
        "restore",
        help="restore a backup into an empty database",
        description="Restore into the database at --target-url, which must be empty "
        "(no tables) unless --force. A PostgreSQL target database must exist; a SQLite "
        "target file is created.",
    )
    restore.add_argument("id", help="the backup id")
    restore.add_argument("--target-url", required=True, help="sqlite:///… or postgresql://…")
    restore.add_argument(
        "--force", action="store_true", help="overwrite a target that is not empty"
    )
    restore.set_defaults(func=cmd_restore)

    retention = actions.add_parser(
        "retention",
        help="delete backups older than 30 days (keeps the 2 newest and protected ones)",
        description="Without --dry-run this takes the maintenance leader lease for the "
        "run and refuses when another process holds it (the leader's own job runs it).",
    )
    retention.add_argument("--dry-run", action="store_true", help="only show what would be deleted")
    retention.set_defaults(func=cmd_retention)


def _line(r: BackupRecord) -> str:
    flags = ",".join(
        f
        for f, on in (
            ("protected", r.protected),
            ("encrypted", r.encrypted),
            ("verified", r.verified_at is not None),
            ("deleted", r.deleted_at is not None),
        )
        if on
    )
    when = r.created_at.strftime("%Y-%m-%d %H:%M:%SZ")
    return (
        f"{r.id}  {when}  {r.program_id or '-':<16} {r.reason:<16} "
        f"{r.size_bytes:>12}  {flags or '-':<28} {r.path}"
    )


def cmd_create(args: argparse.Namespace) -> int:
    with service_for(get_settings(), encrypt=True if args.encrypt else None) as service:
        record = service.create(
            reason=args.reason, program_id=args.program, protected=args.protected
        )
    print(record.id)
    print(f"{record.path}  sha256={record.sha256}  {record.size_bytes} bytes")
    return EXIT_OK


def cmd_list(args: argparse.Namespace) -> int:
    with service_for(get_settings()) as service:
        records = service.list(include_deleted=args.all)
    if not records:
        print("no backups")
    for record in records:
        print(_line(record))
    return EXIT_OK


def cmd_verify(args: argparse.Namespace) -> int:
    with service_for(get_settings()) as service:
        ok = service.verify(args.id)
        record = service.get(args.id)
    if ok:
        print(f"ok: {record.path}")
        return EXIT_OK
    print(f"MISMATCH: {record.path} does not match its recorded SHA-256 (or cannot be read)")
    return EXIT_MISMATCH


def cmd_restore(args: argparse.Namespace) -> int:
    url = str(args.target_url)
    if not url.startswith(("sqlite", "postgresql")):
        raise InvalidInput(FieldError("--target-url", "must be a sqlite:// or postgresql:// URL"))
    with service_for(get_settings()) as service:
        record = service.restore(args.id, target_url=url, force=args.force)
    print(f"restored {record.id} ({record.path})")
    return EXIT_OK


def _print_plan(plan: RetentionPlan) -> None:
    verb = "would delete" if plan.dry_run else "deleted"
    print(f"cutoff {plan.cutoff.isoformat()}: {verb} {len(plan.delete)}, keep {len(plan.keep)}")
    for r in plan.delete:
        print(f"  {verb}: {_line(r)}")
    for problem in plan.problems:
        print(f"  problem: {problem}")


def cmd_retention(args: argparse.Namespace) -> int:
    settings = get_settings()
    with service_for(settings) as service:
        if args.dry_run:
            _print_plan(service.retention(dry_run=True))
            return EXIT_OK
        engine = make_engine(service.database_url)
        try:
            lease = LeaderLease(
                make_sessionmaker(engine),
                holder=f"cli-{socket.gethostname()}-{os.getpid()}",
                ttl=LEASE_SECONDS,
            )
            if lease.try_acquire() is None:
                raise NotTheLeader(
                    "another process holds the maintenance lease and runs retention; "
                    "use --dry-run to see the plan"
                )
            try:
                plan = service.retention(dry_run=False, fence=lease.fenced)
            finally:
                lease.release()
        finally:
            engine.dispose()
    _print_plan(plan)
    return EXIT_OK
