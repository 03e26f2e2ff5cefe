"""``rsched serve [--host H] [--port P]``: run the HTTP API with uvicorn.

With no settings at all it serves the embedded default: a SQLite file in
``RSCHED_DATA_DIR`` (default ``./rsched-data``), created and migrated on first start.
Production settings (PostgreSQL, Redis, secrets) come from the environment; see
docs/api.md. A production database is migrated by the operator (``--migrate`` from one
process, or ``rsched admin create``), never by every API process at start-up.
"""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    serve = subparsers.add_parser(
        "serve",
        help="run the HTTP API",
        description=(
            "Run the HTTP API (OpenAPI at /docs and /openapi.json). Without settings it "
            "uses a SQLite file in ./rsched-data, created and migrated on first start."
        ),
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    serve.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="log level (JSON lines on standard error)",
    )
    serve.add_argument(
        "--migrate",
        action="store_true",
        help=(
            "bring the database schema up to date before serving (the embedded default "
            "always is; with PostgreSQL run this from one process, e.g. the release step)"
        ),
    )
    serve.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from rsched.api.app import create_app, logging_config
    from rsched.config import get_settings
    from rsched.db.migrate import upgrade

    settings = get_settings()
    if args.migrate:
        if settings.database_url is None:
            settings.data_dir.mkdir(parents=True, exist_ok=True)
        upgrade(settings.resolved_database_url())
    app = create_app(settings)
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_config=logging_config(args.log_level),
        log_level=args.log_level,
        access_log=False,  # the API logs one JSON line per request, with its id
        proxy_headers=True,
        server_header=False,
    )
    return 0
