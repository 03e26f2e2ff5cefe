"""The one place where exceptions become HTTP answers: RFC 9457 problem details
(``application/problem+json``) with ``type``, ``title``, ``status``, ``detail``,
``instance``, the request id, and ``errors: [{path, message}]`` naming each bad input.

| exception | status |
|---|---|
| ``InvalidInput`` (services), ``RequestValidationError`` (FastAPI) | 422 |
| ``Unauthenticated`` | 401, with ``WWW-Authenticate: Bearer`` |
| ``Forbidden`` | 403 |
| ``NotFound`` | 404 (also another program's object: ids of other tenants never leak) |
| ``RateLimited`` | 429, with ``Retry-After`` |
| Starlette ``HTTPException`` (unknown route, wrong method, bad body encoding) | its own |
| anything else | 500, a generic message and the request id; the traceback goes to the log only |

Paths: request validation errors start with where the value was (``body.people[3].pgy``,
``query.limit``, ``path.program_id``); service errors are relative to the document the
service checked (for an import, the program file: ``people[3].pgy``, as the CLI prints).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy.exc import IntegrityError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from rsched.domain.errors import Infeasible, InvalidInput, NotFound, RschedError
from rsched.services.access import Forbidden, Unauthenticated
from rsched.services.auth import RateLimited
from rsched.services.backups import BackupFailed

PROBLEM_JSON = "application/problem+json"
TYPE_PREFIX = "urn:rsched:problem:"
log = logging.getLogger("rsched.api")


class FieldProblem(BaseModel):
    path: str = Field(description="where the bad value is, e.g. body.people[3].pgy")
    message: str


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str = Field(description="urn:rsched:problem:<kind>, or about:blank")
    title: str
    status: int
    detail: str | None = None
    instance: str | None = Field(default=None, description="the request path")
    request_id: str | None = None
    errors: list[FieldProblem] = Field(default_factory=list)


class ProblemResponse(JSONResponse):
    media_type = PROBLEM_JSON


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries documenting problem details for ``statuses``."""
    return {
        status: {
            "model": Problem,
            "description": HTTPStatus(status).phrase,
            "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        for status in statuses
    }


_FEED = re.compile(r"^/feeds/[^/]+$")


def loggable_path(path: str) -> str:
    """The path with secrets in it (calendar feed tokens) masked, for logs."""
    return "/feeds/[token].ics" if _FEED.match(path) else path


def request_id_of(request: Request) -> str | None:
    value = request.scope.get("state", {}).get("request_id")
    return value if isinstance(value, str) else None


def problem(
    request: Request,
    status: int,
    *,
    kind: str | None = None,
    title: str | None = None,
    detail: str | None = None,
    errors: Sequence[tuple[str, str]] = (),
    headers: Mapping[str, str] | None = None,
) -> ProblemResponse:
    body = Problem(
        type=f"{TYPE_PREFIX}{kind}" if kind else "about:blank",
        title=title or HTTPStatus(status).phrase,
        status=status,
        detail=detail,
        instance=request.url.path,
        request_id=request_id_of(request),
        errors=[FieldProblem(path=p, message=m) for p, m in errors],
    )
    return ProblemResponse(
        body.model_dump(mode="json"), status_code=status, headers=dict(headers or {})
    )


def _service_error(request: Request, exc: Exception) -> ProblemResponse:
    if isinstance(exc, InvalidInput):
        count = len(exc.errors)
        return problem(
            request,
            422,
            kind="invalid-input",
            title="Invalid input",
            detail=f"{count} problem{'s' if count != 1 else ''} with the input",
            errors=[(e.path, e.message) for e in exc.errors],
        )
    if isinstance(exc, Infeasible):
        return problem(
            request,
            422,
            kind="infeasible",
            title="No feasible schedule",
            detail=str(exc),
            errors=[("", reason) for reason in exc.reasons],
        )
    if isinstance(exc, NotFound):
        return problem(request, 404, kind="not-found", detail=str(exc))
    if isinstance(exc, Forbidden):
        return problem(request, 403, kind="forbidden", detail=str(exc))
    if isinstance(exc, Unauthenticated):
        challenge = 'Bearer realm="rsched"'
        if request.headers.get("authorization"):
            challenge += ', error="invalid_token"'
        return problem(
            request,
            401,
            kind="unauthenticated",
            detail=str(exc),
            headers={"WWW-Authenticate": challenge},
        )
    if isinstance(exc, RateLimited):
        return problem(
            request,
            429,
            kind="rate-limited",
            detail=str(exc),
            headers={"Retry-After": str(exc.retry_after)},
        )
    if isinstance(exc, BackupFailed):
        return backup_failed(request, exc)
    return unexpected(request, exc)


def backup_failed(request: Request, exc: BackupFailed) -> ProblemResponse:
    """503: nothing was changed because no backup could be made or verified (the cause
    goes to the log only: it names files and database hosts)."""
    log.error("backup guard refused a write", extra={"error": str(exc)})
    return problem(
        request,
        503,
        kind="backup-failed",
        title="Backup failed",
        detail="no recent backup could be made or verified, so nothing was changed",
    )


def location_path(loc: Sequence[int | str]) -> str:
    """``("body", "people", 3, "pgy")`` → ``body.people[3].pgy``."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path


def _validation_error(request: Request, exc: Exception) -> ProblemResponse:
    assert isinstance(exc, RequestValidationError)
    found = [(location_path(e.get("loc", ())), str(e.get("msg", "invalid"))) for e in exc.errors()]
    return problem(
        request,
        422,
        kind="invalid-input",
        title="Invalid input",
        detail=f"{len(found)} problem{'s' if len(found) != 1 else ''} with the request",
        errors=found,
    )


def _http_error(request: Request, exc: Exception) -> ProblemResponse:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"
    detail = exc.detail if isinstance(exc.detail, str) and exc.detail != phrase else None
    return problem(request, status, title=phrase, detail=detail, headers=exc.headers)


def _database_unavailable(request: Request, exc: Exception) -> ProblemResponse:
    """503 with Retry-After for the database being away or the connection dropped (a
    restart, a failover, a pooled connection that died): nothing was written, and the
    same request is expected to work moments later on a fresh connection. The cause goes
    to the log only (it names hosts)."""
    assert isinstance(exc, OperationalError)
    log.error(
        "database unavailable",
        extra={"error": str(exc.orig or exc)[:500], "invalidated": exc.connection_invalidated},
    )
    return problem(
        request,
        503,
        kind="database-unavailable",
        title="Database unavailable",
        detail="the database could not be reached; nothing was changed, try again",
        headers={"Retry-After": "1"},
    )


def _conflict(request: Request, exc: Exception) -> ProblemResponse:
    """409 for a write the database refused on a constraint the service checks first
    (an id created, or an object deleted, by a concurrent request between the check and
    the write): the transaction was rolled back, nothing was changed."""
    assert isinstance(exc, IntegrityError)
    log.warning("write refused by a database constraint", extra={"error": str(exc.orig)[:500]})
    return problem(
        request,
        409,
        kind="conflict",
        title="Conflict",
        detail=(
            "the data changed while this request was handled (created or removed by "
            "another request at the same time); nothing was changed: read it again"
        ),
    )


def unexpected(request: Request, exc: BaseException) -> ProblemResponse:
    """500 for anything not mapped above: logged with its traceback, never sent."""
    rid = request_id_of(request)
    log.error(
        "unhandled error",
        exc_info=(type(exc), exc, exc.__traceback__),
        extra={"path": loggable_path(request.url.path), "method": request.method},
    )
    return problem(
        request,
        500,
        kind="internal",
        detail=f"an unexpected error occurred; quote request id {rid} when reporting it",
    )


def install(app: FastAPI) -> None:
    """Register the handlers. Exceptions no handler knows reach the request-id middleware
    (``rsched.api.app``), which answers with ``unexpected``."""
    app.add_exception_handler(RschedError, _service_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(OperationalError, _database_unavailable)
    app.add_exception_handler(IntegrityError, _conflict)
