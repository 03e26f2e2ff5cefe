"""`rsched worker` and `rsched runs create|list|show|abort|watch`.

``rsched worker`` runs a worker process: it claims queued runs from the database and
solves them, and contends for the maintenance lease (one leader at a time, among every
worker on every host). Start as many as the machines allow; see
:mod:`rsched.worker.process` for how they stop.

The ``runs`` commands act as the **local operator with admin rights** on the database
the settings name (``RSCHED_DATABASE_URL``, or the embedded SQLite file in
``RSCHED_DATA_DIR``): whoever can run commands with those settings can already read and
write that database, so no login is asked. Every change is audited with the actor
``cli:<os user>``. They call the same services as the HTTP API.

``rsched runs watch`` is the exception: it follows a run through the HTTP API's event
stream (``GET /runs/{id}/events``) with an access token, as any API client would.
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging.config
import os
import sys
import threading
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any
from urllib.parse import quote

from sqlalchemy.engine import Engine

from rsched.config import Settings, get_settings
from rsched.db.base import make_engine, make_sessionmaker, transaction
from rsched.db.migrate import upgrade
from rsched.services import runs
from rsched.services.access import Actor
from rsched.services.control import control_store
from rsched.solver.api import SOLVERS

EXIT_OK = 0
EXIT_RUN_NOT_SUCCEEDED = 1
EXIT_FAILURE = 3
WATCH_READ_TIMEOUT = 60.0
"""Seconds without a byte before ``runs watch`` gives up (the API sends a heartbeat
comment after 15 s of silence)."""


def register(subparsers: Any) -> None:
    worker = subparsers.add_parser(
        "worker",
        help="run a worker: solve queued runs, take part in the maintenance election",
        description=(
            "Claim queued runs from the database and solve them; one worker among all "
            "of them leads maintenance (reaping lost runs, expiring tokens, clearing old "
            "checkpoints). Settings come from the environment (RSCHED_DATABASE_URL, "
            "RSCHED_REDIS_URL, RSCHED_ENCRYPTION_KEYS, …). SIGTERM or Ctrl-C: finish the "
            "run in progress, then exit; a second signal exits at once."
        ),
    )
    worker.add_argument(
        "--concurrency", type=int, default=1, help="runs solved at the same time (default 1)"
    )
    worker.add_argument(
        "--lease-seconds",
        type=float,
        default=30.0,
        help="a run's lease: another worker resumes it this long after this one dies (default 30)",
    )
    worker.add_argument(
        "--heartbeat-seconds",
        type=float,
        default=5.0,
        help="how often a running solve renews its lease (default 5)",
    )
    worker.add_argument(
        "--leader-ttl",
        type=float,
        default=15.0,
        help="the maintenance leader's lease: another worker takes over this long after "
        "the leader dies (default 15)",
    )
    worker.add_argument(
        "--once",
        action="store_true",
        help="one maintenance pass (if no other worker leads) and at most one queued run, "
        "then exit",
    )
    worker.add_argument(
        "--metrics-port",
        type=int,
        help="serve this process's Prometheus metrics at http://0.0.0.0:PORT/metrics "
        "(scrape every worker: any of them may lead)",
    )
    worker.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="log level (JSON lines on standard error)",
    )
    worker.set_defaults(func=cmd_worker)

    runs = subparsers.add_parser(
        "runs",
        help="queue, list, show or abort solver runs (as the local operator)",
        description=(
            "Solver runs on the configured database, acting as the local operator with "
            "admin rights; changes are audited as cli:<os user>."
        ),
    )
    actions = runs.add_subparsers(dest="runs_command", metavar="ACTION", required=True)

    create = actions.add_parser(
        "create",
        help="queue a run of a program and print its id",
        description=(
            "Queue a solve of a program and print the run id. The same --key for the same "
            "program gives back the same run instead of a second one."
        ),
    )
    create.add_argument("program_id", metavar="PROGRAM_ID")
    create.add_argument("--solver", choices=list(SOLVERS), default="cp_sat")
    create.add_argument(
        "--time-limit", type=float, default=60.0, help="seconds of search (default 60)"
    )
    create.add_argument(
        "--key", help="idempotency key (8-128 of A-Z a-z 0-9 . _ : -); default: a new one"
    )
    create.set_defaults(func=cmd_runs_create)

    listing = actions.add_parser("list", help="queued and running runs")
    listing.add_argument("--program", help="only this program's runs")
    listing.add_argument("--json", action="store_true", help="JSON instead of a table")
    listing.set_defaults(func=cmd_runs_list)

    show = actions.add_parser("show", help="one run: state, attempts, progress, result")
    show.add_argument("run_id", metavar="RUN_ID")
    show.add_argument("--json", action="store_true", help="JSON instead of text")
    show.set_defaults(func=cmd_runs_show)

    abort = actions.add_parser(
        "abort",
        help="abort a queued or running run (a running solve keeps its best schedule)",
    )
    abort.add_argument("run_id", metavar="RUN_ID")
    abort.add_argument("--reason", required=True, help="why (recorded with the run and audit)")
    abort.set_defaults(func=cmd_runs_abort)

    watch = actions.add_parser(
        "watch",
        help="follow a run live through the HTTP API: a progress bar until it ends",
        description=(
            "Follow GET /runs/RUN_ID/events (server-sent events) of a running API and show "
            "a progress bar until the run ends. The access token comes from --token or "
            "RSCHED_TOKEN (prefer the variable: arguments show in process lists). Exit "
            "status 0 when the run succeeded, 1 when it ended otherwise (failed, aborted), "
            "3 when the API refused or could not be reached."
        ),
    )
    watch.add_argument("run_id", metavar="RUN_ID")
    watch.add_argument(
        "--url", default="http://127.0.0.1:8000", help="the API (default http://127.0.0.1:8000)"
    )
    watch.add_argument("--token", help="an access token (default: $RSCHED_TOKEN)")
    watch.set_defaults(func=cmd_runs_watch)


# ---------------------------------------------------------------------------- worker


def cmd_worker(args: argparse.Namespace) -> int:
    from rsched.api.app import logging_config
    from rsched.worker.process import run_worker

    logging.config.dictConfig(logging_config(args.log_level))
    return run_worker(
        get_settings(),
        stop=threading.Event(),
        concurrency=args.concurrency,
        lease_seconds=args.lease_seconds,
        heartbeat_seconds=args.heartbeat_seconds,
        leader_ttl=args.leader_ttl,
        once=args.once,
        metrics_port=args.metrics_port,
    )


# ------------------------------------------------------------------------------ runs


def operator() -> Actor:
    """The local operator: an admin named after the OS user, ``cli:<user>``."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (e.g. a bare container)
        user = "unknown"
    return Actor(user_id=f"cli:{user}"[:64], is_admin=True)


@contextmanager
def _database(settings: Settings) -> Iterator[Engine]:
    url = settings.resolved_database_url()
    if settings.database_url is None:  # the embedded default: create and migrate it
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        upgrade(url)
    engine = make_engine(url)
    try:
        yield engine
    finally:
        engine.dispose()


def cmd_runs_create(args: argparse.Namespace) -> int:
    key = args.key or f"cli-{uuid.uuid4().hex}"
    with _database(get_settings()) as engine, transaction(make_sessionmaker(engine)) as session:
        run, created = runs.create_run(
            session,
            actor=operator(),
            program_id=args.program_id,
            idempotency_key=key,
            algorithm=args.solver,
            params={"time_limit": args.time_limit},
        )
    what = "queued run" if created else f"run already created with key {key}:"
    print(f"{what} {run.id} ({run.state})", file=sys.stderr)
    print(run.id)
    return EXIT_OK


def cmd_runs_list(args: argparse.Namespace) -> int:
    with _database(get_settings()) as engine, transaction(make_sessionmaker(engine)) as session:
        views = runs.list_active(session, actor=operator(), program_id=args.program)
    if args.json:
        print(json.dumps([_doc(v) for v in views], indent=2, default=_iso))
        return EXIT_OK
    if not views:
        print("no queued or running runs", file=sys.stderr)
        return EXIT_OK
    header = ("RUN", "PROGRAM", "STATE", "ATTEMPT", "SOLVER", "CREATED", "OBJECTIVE")
    rows = [
        (
            v.id,
            v.program_id,
            v.state,
            f"{v.attempt}/{v.max_attempts}",
            v.algorithm,
            _iso(v.created_at),
            "" if v.best_objective is None else f"{v.best_objective:g}",
        )
        for v in views
    ]
    widths = [max(len(str(r[i])) for r in (header, *rows)) for i in range(len(header))]
    for r in (header, *rows):
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return EXIT_OK


def cmd_runs_show(args: argparse.Namespace) -> int:
    with _database(get_settings()) as engine, transaction(make_sessionmaker(engine)) as session:
        view = runs.get_run(session, actor=operator(), run_id=args.run_id)
    doc = _doc(view)
    if args.json:
        print(json.dumps(doc, indent=2, default=_iso))
        return EXIT_OK
    for name, value in doc.items():
        if value is None or value == {}:
            continue
        shown = json.dumps(value, default=_iso) if isinstance(value, dict) else _iso(value)
        print(f"{name}: {shown}")
    return EXIT_OK


def cmd_runs_abort(args: argparse.Namespace) -> int:
    settings = get_settings()
    with _database(settings) as engine:
        with transaction(make_sessionmaker(engine)) as session:
            view = runs.request_abort(
                session, actor=operator(), run_id=args.run_id, reason=args.reason
            )
        if view.state == "running":
            # the durable flag is committed; the control store lets the solver see it
            # within a second instead of at its next heartbeat
            try:
                control_store(settings.redis_url, engine).request_abort(view.id, args.reason)
            except Exception as exc:
                print(
                    f"note: control store not reached ({exc}); the worker sees the abort "
                    "at its next heartbeat",
                    file=sys.stderr,
                )
    print(f"abort requested for run {view.id} ({view.state})")
    return EXIT_OK


def sse_events(lines: Iterable[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(event, data)`` of each server-sent event in ``lines`` (comments skipped; data
    is JSON, as the API sends it)."""
    event, data = "message", list[str]()
    for line in lines:
        if not line:
            if data:
                yield event, json.loads("\n".join(data))
            event, data = "message", []
        elif line.startswith(":"):
            continue
        else:
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "event":
                event = value
            elif name == "data":
                data.append(value)


def _refused(response: Any) -> int:
    try:
        body = response.json()
        detail = body.get("detail") or body.get("title")
    except ValueError:
        detail = response.text[:200]
    print(f"error: the API answered {response.status_code}: {detail}", file=sys.stderr)
    return EXIT_FAILURE


def _progress_info(doc: dict[str, Any]) -> str:
    p = doc.get("progress") or {}
    parts = [str(doc.get("state", ""))]
    if p.get("solutions") is not None:
        parts.append(f"solutions {p['solutions']}")
    if p.get("objective") is not None:
        parts.append(f"objective {p['objective']:,.0f}")
    if p.get("gap") is not None:
        parts.append(f"gap {p['gap']:.2%}")
    return "  ".join(parts)


def cmd_runs_watch(args: argparse.Namespace) -> int:
    try:
        import httpx
    except ImportError:
        print("error: rsched runs watch needs httpx (pip install httpx)", file=sys.stderr)
        return EXIT_FAILURE
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    token = args.token or os.environ.get("RSCHED_TOKEN")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    run = quote(args.run_id, safe="")
    base = args.url.rstrip("/")
    end: dict[str, Any] | None = None
    try:
        with httpx.Client(
            base_url=base, headers=headers, timeout=httpx.Timeout(10.0, read=WATCH_READ_TIMEOUT)
        ) as client:
            first = client.get(f"/runs/{run}")
            if first.status_code != 200:
                return _refused(first)
            total = float((first.json().get("params") or {}).get("time_limit") or 60.0)
            bar = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                TimeElapsedColumn(),
                TextColumn("{task.fields[info]}"),
                console=Console(stderr=True),
            )
            with bar, client.stream("GET", f"/runs/{run}/events") as response:
                if response.status_code != 200:
                    response.read()
                    return _refused(response)
                task = bar.add_task(f"run {args.run_id}", total=total, info="waiting")
                for event, doc in sse_events(response.iter_lines()):
                    if event == "progress":
                        elapsed = float((doc.get("progress") or {}).get("elapsed") or 0.0)
                        bar.update(task, completed=min(elapsed, total), info=_progress_info(doc))
                    elif event == "end":
                        end = doc
                        if doc.get("state") == "succeeded":
                            bar.update(task, completed=total)
                        bar.update(task, info=str(doc.get("state")))
                        break
    except httpx.HTTPError as exc:
        print(f"error: {base} not reached or the stream broke: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    if end is None:
        print("error: the stream ended before the run did", file=sys.stderr)
        return EXIT_FAILURE
    state = end.get("state")
    line = f"run {args.run_id} {state}"
    if end.get("result_version_id"):
        line += f"; draft schedule {end['result_version_id']}"
    reason = end.get("failure_reason") or end.get("abort_reason")
    if state != "succeeded" and reason:
        line += f" ({reason})"
    print(line)
    return EXIT_OK if state == "succeeded" else EXIT_RUN_NOT_SUCCEEDED


def _doc(view: Any) -> dict[str, Any]:
    return {name: getattr(view, name) for name in view.__dataclass_fields__}


def _iso(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds")
    return str(value)
