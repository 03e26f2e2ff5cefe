"""The HTTP API: ``create_app(settings, engine=…)`` builds a FastAPI app whose state holds
the settings, the engine and the sessionmaker (no other state: processes are stateless
and any number may run behind a load balancer).

Start-up refuses unsafe settings and installs the encryption keys
(``rsched.services.auth.startup``); on the embedded default (no ``RSCHED_DATABASE_URL``)
it also creates and migrates the SQLite file, so ``rsched serve`` needs no other setup.
A production database is migrated by the operator, not by each API process.

Every request gets an id (``X-Request-ID``: the caller's when it is sane, else a new
one), echoed in the response, in problem details and in every log line. Logs are JSON
lines; an exception no handler knows is logged with its traceback and answered with a
generic 500 problem, never with the traceback.
"""

from __future__ import annotations

import contextvars
import gc
import json
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Request
from fastapi.routing import APIRoute
from sqlalchemy.engine import Engine
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rsched import __version__, metrics
from rsched.api import errors
from rsched.api.deps import TextGuard
from rsched.api.routes import (
    absences,
    auth,
    backups,
    health,
    ops,
    people,
    programs,
    publishing,
    requests,
    rotations,
    runs,
    schedules,
    shift_types,
    slot_patterns,
    swaps,
)
from rsched.config import Settings, get_settings
from rsched.db import migrate
from rsched.db.base import make_engine, make_sessionmaker
from rsched.mcp.transport import mount_mcp
from rsched.services.auth import startup
from rsched.services.publishing import recover
from rsched.web import router as web_pages

ROUTERS = (
    # the path every calendar client polls first: routes are matched in order
    schedules.feeds,
    health.router,
    auth.router,
    programs.router,
    people.router,
    shift_types.router,
    rotations.router,
    slot_patterns.router,
    absences.router,
    requests.router,
    schedules.router,
    publishing.router,
    swaps.router,
    backups.router,
    runs.router,
    ops.router,
)
REQUEST_ID_HEADER = "x-request-id"
_SANE_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "request_id", default=None
)
log = logging.getLogger("rsched.api")


# ------------------------------------------------------------------------- logging

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "color_message",  # uvicorn's coloured copy of the message
}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the request id when there
    is one, any ``extra`` fields, and the traceback (server side only)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        rid = request_id_var.get()
        if rid is not None:
            entry["request_id"] = rid
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_") and key not in entry:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def logging_config(level: str = "info") -> dict[str, Any]:
    """A ``logging.config.dictConfig`` (also given to uvicorn) sending rsched's and
    uvicorn's logs to standard error as JSON lines."""
    handler = {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}
    quiet = {"handlers": ["default"], "level": level.upper(), "propagate": False}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": f"{__name__}.JsonFormatter"}},
        "handlers": {"default": handler},
        "loggers": {"rsched": quiet, "uvicorn": quiet, "uvicorn.error": quiet},
    }


# ---------------------------------------------------------------------- middleware


class RequestContext:
    """Request id, one access-log line per request, and the last-resort 500."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        offered = dict(scope.get("headers") or ()).get(REQUEST_ID_HEADER.encode(), b"")
        text = offered.decode("latin-1")
        rid = text if _SANE_ID.fullmatch(text) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid
        token = request_id_var.set(rid)
        started = time.perf_counter()
        status = 500
        response_started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [
                    *message["headers"],
                    (REQUEST_ID_HEADER.encode(), rid.encode()),
                ]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            if response_started:
                log.error("error after the response started", exc_info=exc)
            else:
                await errors.unexpected(Request(scope), exc)(scope, receive, send_with_id)
        finally:
            log.info(
                "request",
                extra={
                    "method": scope.get("method"),
                    "path": errors.loggable_path(str(scope.get("path", ""))),
                    "status": status,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 1),
                },
            )
            request_id_var.reset(token)


# ------------------------------------------------------------------------- the app


class AsgiEndpoint:
    """An ASGI app as the endpoint of a plain route (a Mount would redirect /metrics to
    /metrics/)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


CLOCK_PATTERN = r"^([01]\d|2[0-3]):[0-5]\d(:[0-5]\d(\.\d+)?)?$"


def _local_clock_times(node: Any) -> None:
    """JSON Schema's ``format: time`` is RFC 3339's full-time, which needs a UTC offset;
    shift starts are local clock times without one ("07:00", "07:00:00"). Describe them
    as what they are, so clients and validators accept the API's own answers."""
    if isinstance(node, dict):
        if node.get("type") == "string" and node.get("format") == "time":
            del node["format"]
            node["pattern"] = CLOCK_PATTERN
        for value in node.values():
            _local_clock_times(value)
    elif isinstance(node, list):
        for value in node:
            _local_clock_times(value)


def published_openapi(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """``app.openapi`` with the corrections above, built once."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = build()
            _local_clock_times(document)
            app.openapi_schema = document
        return app.openapi_schema

    return openapi


def operation_id(route: APIRoute) -> str:
    """OpenAPI operation ids are the route names (list_people, get_grid, …): unique,
    stable, and the keys of the authorization policy table in the tests."""
    return route.name


def settle_heap() -> None:
    """Collect, then move every object alive now (modules, routes, schemas: some 200,000)
    out of the cyclic garbage collector's reach. A full collection of the started
    service takes ~100 ms and fell inside requests (the grid's p99 was 150-260 ms for a
    20 ms median); frozen, the collector only walks what requests allocate."""
    gc.collect()
    gc.freeze()


def serve_app() -> FastAPI:
    """The app as ``rsched serve`` runs it (settings from the environment, heap settled
    once started); also the factory each process of ``rsched serve --workers N`` calls."""
    return create_app(settle=True)


def create_app(
    settings: Settings | None = None, *, engine: Engine | None = None, settle: bool = False
) -> FastAPI:
    """The API. ``settle``: call :func:`settle_heap` once start-up is done (long-lived
    server processes; not in tests, which start many apps in one process)."""
    settings = settings or get_settings()
    url = settings.resolved_database_url()
    own_engine = engine is None
    bound = (
        engine
        if engine is not None
        else make_engine(
            url, pool_size=settings.db_pool_size, max_overflow=settings.db_max_overflow
        )
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        startup(settings)
        if settings.database_url is None:  # the embedded default: create and migrate
            settings.data_dir.mkdir(parents=True, exist_ok=True)
            migrate.upgrade(url)
        try:  # a publish a crash left staged: completed or rolled back, once, at start-up
            resolved = recover(_app.state.sessionmaker)
        except Exception:  # the database may be away; the maintenance leader retries
            log.exception("recovering pending publishes failed")
        else:
            if resolved:
                log.warning("pending publishes recovered", extra={"resolved": resolved})
        log.info("api started", extra={"version": __version__, "env": settings.env})
        if settle:
            settle_heap()
        yield
        if own_engine:
            bound.dispose()

    app = FastAPI(
        title="rsched",
        version=__version__,
        summary="ACGME-compliant residency scheduling",
        description=(
            "Programs, people, rotations, shift types, slot patterns, absences, requests "
            "and schedules. Errors are RFC 9457 problem details. See docs/api.md."
        ),
        lifespan=lifespan,
        dependencies=[TextGuard],
        generate_unique_id_function=operation_id,
    )
    app.state.settings = settings
    app.state.engine = bound
    app.state.sessionmaker = make_sessionmaker(bound)
    errors.install(app)
    for router in ROUTERS:
        app.include_router(router)
    app.include_router(web_pages)  # the pages for people (docs/web.md), after the API
    # Prometheus text of this process; no login: label values are states, reasons and
    # rule codes only, never a program, person or run id (docs/api.md, Metrics)
    metrics_route = Route("/metrics", AsgiEndpoint(metrics.metrics_app()), methods=["GET"])
    app.router.routes.append(metrics_route)
    mount_mcp(app)  # /mcp: MCP over streamable HTTP, API tokens only (docs/mcp.md)
    app.add_middleware(RequestContext)
    app.openapi = published_openapi(app)  # type: ignore[method-assign]
    return app
