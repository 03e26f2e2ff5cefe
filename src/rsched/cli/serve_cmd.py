"""``rsched serve [--host H] [--port P] [--workers N] [--no-worker]``: run the HTTP API
with uvicorn.

With no settings at all it serves the embedded default: a SQLite file in
``RSCHED_DATA_DIR`` (default ``./rsched-data``), created and migrated on first start,
and one worker inside the same process (solve threads and the maintenance leader, as
``rsched worker`` runs them) so that queued runs are solved with nothing else started;
``--no-worker`` leaves it out. With ``RSCHED_DATABASE_URL`` set no worker runs inside
the API: start ``rsched worker`` processes beside it.
Production settings (PostgreSQL, Redis, secrets) come from the environment; see
docs/api.md. A production database is migrated by the operator (``--migrate`` from one
process, or ``rsched admin create``), never by every API process at start-up.

``--workers N`` (a server database only) runs N API processes on one port, one per core
being the usual choice; their ``/metrics`` then add up every process's counters through
a shared directory (``PROMETHEUS_MULTIPROC_DIR``: a fresh temporary one unless the
operator names one, which must then be emptied before each start).
"""

from __future__ import annotations

import argparse
import logging
import logging.config
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from rsched.config import Settings

log = logging.getLogger("rsched.api")
WORKER_STOP_SECONDS = 10.0
"""On shutdown, how long the in-process worker may take to finish its run; a run still
solving after that is left to its lease and resumed from its checkpoint at the next
start."""


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
        "--workers",
        type=_workers,
        default=1,
        metavar="N",
        help="API processes on the port (default 1; more needs RSCHED_DATABASE_URL)",
    )
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
    serve.add_argument(
        "--no-worker",
        action="store_true",
        help=(
            "on the embedded default, do not run a worker inside the server (queued runs "
            "then wait for an `rsched worker`); with RSCHED_DATABASE_URL none runs anyway"
        ),
    )
    serve.set_defaults(func=cmd_serve)


MAX_WORKERS = 64


def _workers(text: str) -> int:
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, not {text!r}") from None
    if not 1 <= count <= MAX_WORKERS:
        raise argparse.ArgumentTypeError(f"must be 1..{MAX_WORKERS}, not {count}")
    return count


@dataclass
class EmbeddedWorker:
    """One worker (a solve thread and the leader thread) inside the server process."""

    stop_event: threading.Event
    threads: list[threading.Thread]
    engine: Engine

    @classmethod
    def start(cls, settings: Settings) -> EmbeddedWorker:
        from rsched.db.base import make_engine, make_sessionmaker
        from rsched.db.migrate import upgrade
        from rsched.services.auth import startup
        from rsched.services.control import control_store
        from rsched.worker.maintenance import Housekeeping
        from rsched.worker.process import start_threads
        from rsched.worker.runner import WorkerConfig

        startup(settings)  # the keys, before the first run is loaded
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        url = settings.resolved_database_url()
        upgrade(url)
        engine = make_engine(url)
        stop = threading.Event()
        threads = start_threads(
            make_sessionmaker(engine),
            control_store(settings.redis_url, engine),
            stop,
            cfg=WorkerConfig(),
            concurrency=1,
            leader_ttl=15.0,
            # as `rsched worker` runs it: backup retention and webhook delivery included
            housekeeping=Housekeeping.from_settings(settings),
        )
        log.info("in-process worker started", extra={"threads": len(threads)})
        return cls(stop_event=stop, threads=threads, engine=engine)

    def stop(self, timeout: float = WORKER_STOP_SECONDS) -> bool:
        """Stop claiming, release the leader lease, wait up to ``timeout`` for a run being
        solved; True when every thread ended."""
        self.stop_event.set()
        deadline = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))
        alive = [t.name for t in self.threads if t.is_alive()]
        if alive:
            log.warning(
                "in-process worker still busy at shutdown: its run resumes from its "
                "checkpoint once its lease expires",
                extra={"threads": alive},
            )
            return False
        self.engine.dispose()
        log.info("in-process worker stopped")
        return True


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from rsched.api.app import create_app, logging_config
    from rsched.config import get_settings
    from rsched.db.migrate import upgrade
    from rsched.domain import FieldError, InvalidInput

    settings = get_settings()
    if args.workers > 1 and settings.database_url is None:
        raise InvalidInput(
            FieldError(
                "--workers",
                "more than one API process needs a server database (RSCHED_DATABASE_URL); "
                "the embedded SQLite default runs as one process",
            )
        )
    if args.migrate:
        if settings.database_url is None:
            settings.data_dir.mkdir(parents=True, exist_ok=True)
        upgrade(settings.resolved_database_url())
    options: dict[str, Any] = {
        "host": args.host,
        "port": args.port,
        "log_config": logging_config(args.log_level),
        "log_level": args.log_level,
        "access_log": False,  # the API logs one JSON line per request, with its id
        "proxy_headers": True,
        "server_header": False,
    }
    if args.workers > 1:
        with _shared_metrics_dir():
            uvicorn.run("rsched.api.app:serve_app", factory=True, workers=args.workers, **options)
        return 0
    app = create_app(settings, settle=True)  # what serve_app() makes, on these settings
    worker = None
    if settings.database_url is None and not args.no_worker:
        logging.config.dictConfig(logging_config(args.log_level))
        worker = EmbeddedWorker.start(settings)
    try:
        uvicorn.run(app, **options)
    finally:
        if worker is not None:
            worker.stop()
    return 0


@contextmanager
def _shared_metrics_dir() -> Iterator[None]:
    """``PROMETHEUS_MULTIPROC_DIR`` for the API processes about to start: the operator's
    if set, else a fresh temporary directory removed afterwards."""
    from rsched.metrics import MULTIPROC_ENV

    if os.environ.get(MULTIPROC_ENV):
        yield
        return
    with tempfile.TemporaryDirectory(prefix="rsched-metrics-") as folder:
        os.environ[MULTIPROC_ENV] = folder
        try:
            yield
        finally:
            os.environ.pop(MULTIPROC_ENV, None)
