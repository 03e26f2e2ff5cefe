"""Dependencies shared by every route, as ``Annotated`` aliases.

- ``SessionDep``: one unit of work per request. Writes (POST, PUT, PATCH, DELETE) commit
  when the handler returns, before the response is sent, and roll back on any error;
  every other method (GET, HEAD) gets a session that is always rolled back, never
  committed, so a read cannot write even by mistake.
- ``ActorDep``: the caller behind ``Authorization: Bearer <access token>``; a missing or
  invalid token is 401 with ``WWW-Authenticate: Bearer``.
- ``SettingsDep``: the settings the app was created with.
- ``TextGuard``: app-wide input hygiene that no schema expresses: text with NUL
  characters (which PostgreSQL cannot store) and integers beyond a 32-bit signed
  column are refused with 422 and the path of the value, wherever they appear.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import Depends, Path, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from rsched.config import Settings
from rsched.domain.errors import FieldError, InvalidInput
from rsched.services.access import Actor, Unauthenticated
from rsched.services.auth import actor_from_access_token

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
MAX_LIMIT = 500
MAX_OFFSET = 2**31 - 1
INT_RANGE = (-(2**31), 2**31 - 1)


def _session(request: Request) -> Iterator[Session]:
    session: Session = request.app.state.sessionmaker()
    try:
        yield session
        if request.method in WRITE_METHODS:
            session.commit()
        else:
            session.rollback()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


async def _settings(request: Request) -> Settings:  # no I/O: no trip to a worker thread
    settings: Settings = request.app.state.settings
    return settings


SessionDep = Annotated[Session, Depends(_session, scope="function")]
SettingsDep = Annotated[Settings, Depends(_settings)]

_bearer = HTTPBearer(
    auto_error=False,
    bearerFormat="JWT",
    description="An access token from POST /auth/login or /auth/refresh.",
)


def _actor(
    session: SessionDep,
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Actor:
    if credentials is None:
        raise Unauthenticated("an access token is required (Authorization: Bearer …)")
    return actor_from_access_token(session, settings, credentials.credentials)


ActorDep = Annotated[Actor, Depends(_actor)]

# ----------------------------------------------------------- parameters used everywhere

Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="page size")]
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET, description="items to skip")]
ProgramId = Annotated[str, Path(min_length=1, max_length=64)]
Key = Annotated[str, Path(min_length=1, max_length=64)]
"""The id (or code) of an object inside a program."""
FilterId = Annotated[str | None, Query(min_length=1, max_length=64)]

# ------------------------------------------------------------------------ input guard


def _problems(value: Any, path: str, found: list[FieldError]) -> None:
    if isinstance(value, str):
        if "\x00" in value:
            found.append(FieldError(path, "must not contain NUL characters"))
    elif isinstance(value, bool):
        return
    elif isinstance(value, int):
        if not INT_RANGE[0] <= value <= INT_RANGE[1]:
            found.append(FieldError(path, "integer out of range (32-bit signed)"))
    elif isinstance(value, dict):
        for key, item in value.items():
            child = f"{path}.{key}"
            if isinstance(key, str) and "\x00" in key:
                found.append(FieldError(child, "keys must not contain NUL characters"))
            _problems(item, child, found)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _problems(item, f"{path}[{i}]", found)


async def _guard(request: Request) -> None:
    found: list[FieldError] = []
    for name, value in request.path_params.items():
        _problems(value, f"path.{name}", found)
    for name, value in request.query_params.multi_items():
        _problems(value, f"query.{name}", found)
    if request.method in WRITE_METHODS and "json" in request.headers.get("content-type", ""):
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError, json.JSONDecodeError):
            body = None  # FastAPI reports a malformed body itself
        _problems(body, "body", found)
    if found:
        raise InvalidInput(found, source="request")


TextGuard = Depends(_guard)
