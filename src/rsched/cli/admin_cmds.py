"""`rsched admin create` and `rsched keys new|rotate`: the operator's commands for the
first admin and for the field-encryption keys.

There is no default admin. Whoever can run commands against the database creates one:

    rsched admin create --email ada@example.org          # asks for the password twice
    printf '%s\\n' "$PW" | rsched admin create --email ada@example.org --password-stdin

Key rotation: put a new key first in RSCHED_ENCRYPTION_KEYS (keep the old ones after
it), run `rsched keys rotate`, then remove the old keys. An interrupted rotation is
simply run again.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any

from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from rsched.config import Settings, get_settings
from rsched.crypto.fields import install_keys, new_key
from rsched.db.base import make_engine, make_sessionmaker, transaction
from rsched.db.migrate import upgrade
from rsched.domain.errors import FieldError, InvalidInput, RschedError
from rsched.services import audit
from rsched.services.auth import encryption_keys
from rsched.services.keys import RotationReport, rotate_keys
from rsched.services.users import create_user

EXIT_OK = 0


class DatabaseUnavailable(RschedError):
    """The database could not be opened or migrated."""


def register(subparsers: Any) -> None:
    admin = subparsers.add_parser("admin", help="create the first (or another) admin user")
    actions = admin.add_subparsers(dest="admin_command", metavar="ACTION", required=True)
    create = actions.add_parser(
        "create",
        help="create an admin user (migrates the database first)",
        description=(
            "Create an admin user and print its id. The password is read from standard "
            "input with --password-stdin, otherwise asked for twice on the terminal."
        ),
    )
    create.add_argument("--email", required=True, help="the admin's email address")
    create.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from the first line of standard input",
    )
    create.set_defaults(func=cmd_admin_create)

    keys = subparsers.add_parser("keys", help="field-encryption keys: make one, rotate")
    key_actions = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    new = key_actions.add_parser("new", help="print a fresh Fernet key")
    new.set_defaults(func=cmd_keys_new)
    rotate = key_actions.add_parser(
        "rotate",
        help="re-encrypt every encrypted field with the newest key (resumable)",
        description=(
            "Re-encrypt every encrypted field with the first key of RSCHED_ENCRYPTION_KEYS, "
            "reading with any of them. Batches commit one by one; values already under the "
            "newest key are skipped, so an interrupted run is resumed by running it again."
        ),
    )
    rotate.add_argument("--batch", type=int, default=500, help="rows per transaction (default 500)")
    rotate.set_defaults(func=cmd_keys_rotate)


def cmd_admin_create(args: argparse.Namespace) -> int:
    password = _read_password(from_stdin=args.password_stdin)
    url = _migrated_database(get_settings())
    engine = make_engine(url)
    try:
        with transaction(make_sessionmaker(engine)) as session:
            user_id = create_user(session, email=args.email, password=password, is_admin=True)
            audit.record(
                session,
                actor=None,
                action="user.create",
                target=user_id,
                detail={"is_admin": True, "via": "cli"},
            )
    finally:
        engine.dispose()
    print(user_id)
    return EXIT_OK


def cmd_keys_new(args: argparse.Namespace) -> int:
    print(new_key())
    return EXIT_OK


def cmd_keys_rotate(args: argparse.Namespace) -> int:
    if args.batch < 1:
        raise InvalidInput(FieldError("--batch", "must be at least 1"))
    settings = get_settings()
    install_keys(encryption_keys(settings))
    url = _migrated_database(settings)
    engine = make_engine(url)
    try:
        report = rotate_keys(make_sessionmaker(engine), batch=args.batch, on_progress=_progress)
    finally:
        engine.dispose()
    print(
        f"rows scanned: {report.rows_scanned}, values re-encrypted: {report.values_rotated}, "
        f"already under the newest key: {report.values_current}"
    )
    for column, count in sorted(report.rotated_by_column.items()):
        print(f"  {column}: {count}")
    return EXIT_OK


def _migrated_database(settings: Settings) -> str:
    """The database URL, after bringing the schema up to date (the embedded SQLite
    file's directory is created when missing)."""
    url = settings.resolved_database_url()
    if not settings.database_url:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    try:
        upgrade(url)
    except OperationalError as exc:
        shown = make_url(url).render_as_string(hide_password=True)
        raise DatabaseUnavailable(f"cannot open the database {shown}: {exc.orig}") from None
    return url


def _progress(table: str, report: RotationReport) -> None:
    print(
        f"{table}: {report.rows_scanned} rows scanned, {report.values_rotated} re-encrypted",
        file=sys.stderr,
    )


def _read_password(*, from_stdin: bool) -> str:
    if from_stdin:
        line = sys.stdin.readline()
        password = line.removesuffix("\n").removesuffix("\r")
        if not password:
            raise InvalidInput(FieldError("password", "nothing was read from standard input"))
        return password
    first = getpass.getpass("Password: ")
    second = getpass.getpass("Password (again): ")
    if first != second:
        raise InvalidInput(FieldError("password", "the two entries differ"))
    return first
