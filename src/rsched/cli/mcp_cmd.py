"""`rsched mcp` and `rsched token create|revoke|list`.

``rsched mcp`` serves the MCP server over standard input and output for a local agent,
acting as the user whose API token is in ``RSCHED_API_TOKEN`` (see docs/mcp.md):

    export RSCHED_API_TOKEN=$(rsched token create --email ada@example.org --program im)
    rsched mcp

The ``token`` commands act as the local operator with admin rights on the configured
database (like ``rsched runs``), audited as ``cli:<os user>``. ``create`` prints the
token on standard output (once: only its hash is kept) and its id on standard error;
``revoke`` takes the id (``rsat_<id>_…``).
"""

from __future__ import annotations

import argparse
import getpass
import logging.config
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from rsched.config import Settings, get_settings
from rsched.db.base import make_engine, make_sessionmaker, transaction
from rsched.db.migrate import upgrade
from rsched.db.models import UserRow
from rsched.domain.errors import NotFound
from rsched.services.access import Actor
from rsched.services.api_tokens import (
    MAX_DAYS,
    ApiTokenInfo,
    create_api_token,
    list_api_tokens,
    revoke_api_token,
    token_id,
)
from rsched.services.auth import normalize_email

EXIT_OK = 0
DEFAULT_DAYS = 30


def register(subparsers: Any) -> None:
    mcp = subparsers.add_parser(
        "mcp",
        help="serve the MCP server over stdio for a local agent (RSCHED_API_TOKEN)",
        description=(
            "Serve the MCP server (tools for generating, validating, publishing and "
            "swapping schedules) over standard input and output, acting as the user of "
            "the API token in RSCHED_API_TOKEN. Runs are solved by `rsched worker`. "
            "Logs go to standard error."
        ),
    )
    mcp.add_argument(
        "--log-level",
        default="warning",
        choices=["debug", "info", "warning", "error"],
        help="log level (JSON lines on standard error; default warning)",
    )
    mcp.set_defaults(func=cmd_mcp)

    token = subparsers.add_parser(
        "token",
        help="API tokens of users, for agents (as the local operator)",
        description=(
            "Long-lived, revocable API tokens of a user, optionally limited to some of "
            "their programs. Acts as the local operator; audited as cli:<os user>."
        ),
    )
    actions = token.add_subparsers(dest="token_command", metavar="ACTION", required=True)
    create = actions.add_parser(
        "create",
        help="make a token for a user and print it (once)",
        description=(
            "Print a new API token of the user on standard output (shown once: only its "
            "SHA-256 is kept) and its id on standard error."
        ),
    )
    create.add_argument("--email", required=True, help="the user's email address")
    create.add_argument(
        "--program",
        action="append",
        default=None,
        metavar="PROGRAM_ID",
        help="limit the token to this program (repeat for more; default: all of the user's)",
    )
    create.add_argument(
        "--days",
        type=int,
        default=DEFAULT_DAYS,
        help=f"days until it expires (1..{MAX_DAYS}, default {DEFAULT_DAYS})",
    )
    create.add_argument("--label", help="what the token is for (shown in listings)")
    create.set_defaults(func=cmd_token_create)

    revoke = actions.add_parser("revoke", help="revoke a token by its id (or the token)")
    revoke.add_argument("token", metavar="ID", help="the token's id, or the token itself")
    revoke.set_defaults(func=cmd_token_revoke)

    listing = actions.add_parser("list", help="a user's tokens (never the secrets)")
    listing.add_argument("--email", required=True, help="the user's email address")
    listing.set_defaults(func=cmd_token_list)


def cmd_mcp(args: argparse.Namespace) -> int:
    from rsched.api.app import logging_config
    from rsched.mcp.transport import run_stdio

    logging.config.dictConfig(logging_config(args.log_level))
    run_stdio(get_settings())
    return EXIT_OK


def operator() -> Actor:
    """The local operator: an admin named after the OS user, ``cli:<user>``."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (e.g. a bare container)
        user = "unknown"
    return Actor(user_id=f"cli:{user}"[:64], is_admin=True)


@contextmanager
def _session(settings: Settings) -> Iterator[Session]:
    url = settings.resolved_database_url()
    if settings.database_url is None:  # the embedded default: create and migrate it
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        upgrade(url)
    engine = make_engine(url)
    try:
        with transaction(make_sessionmaker(engine)) as session:
            yield session
    finally:
        engine.dispose()


def user_id_for(session: Session, email: str) -> str:
    address = normalize_email(email)
    found = session.scalars(select(UserRow.id).where(UserRow.email == address)).first()
    if found is None:
        raise NotFound(f"no user with email {address!r}")
    return found


def cmd_token_create(args: argparse.Namespace) -> int:
    with _session(get_settings()) as session:
        token = create_api_token(
            session,
            actor=operator(),
            user_id=user_id_for(session, args.email),
            programs=args.program,
            expires_days=args.days,
            label=args.label,
        )
    scope = ", ".join(args.program) if args.program else "all of the user's programs"
    print(f"token {token_id(token)} for {args.email} ({scope}), {args.days} days", file=sys.stderr)
    print(token)
    return EXIT_OK


def cmd_token_revoke(args: argparse.Namespace) -> int:
    ident = token_id(args.token) or args.token
    with _session(get_settings()) as session:
        info = revoke_api_token(session, actor=operator(), token_id=ident)
    print(f"revoked token {info.id} of user {info.user_id}")
    return EXIT_OK


def _line(info: ApiTokenInfo) -> str:
    scope = ",".join(info.programs) if info.programs is not None else "*"
    state = "revoked" if info.revoked_at is not None else "live"
    return f"{info.id}  {state:<7} expires {info.expires_at:%Y-%m-%d}  programs {scope}" + (
        f"  {info.label}" if info.label else ""
    )


def cmd_token_list(args: argparse.Namespace) -> int:
    with _session(get_settings()) as session:
        found = list_api_tokens(session, actor=operator(), user_id=user_id_for(session, args.email))
    if not found:
        print("no API tokens", file=sys.stderr)
    for info in found:
        print(_line(info))
    return EXIT_OK
