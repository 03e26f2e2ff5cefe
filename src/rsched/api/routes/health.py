"""Liveness and reachability: the database, Redis when configured, the version.
200 when everything configured answers, 503 otherwise (the body says what failed)."""

from __future__ import annotations

import logging
from typing import Literal

import redis
from fastapi import APIRouter, Request, Response, status
from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.engine import Engine

from rsched import __version__
from rsched.api.deps import SettingsDep

router = APIRouter(tags=["health"])
log = logging.getLogger("rsched.api")
PROBE_SECONDS = 2.0

Reach = Literal["ok", "unreachable"]


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    version: str
    database: Reach
    redis: Reach | Literal["not configured"]


def _database(engine: Engine) -> Reach:
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # any failure means "not reachable now"
        log.warning("database unreachable", extra={"error": type(exc).__name__})
        return "unreachable"
    return "ok"


def _redis(url: str) -> Reach:
    try:
        client = redis.Redis.from_url(
            url, socket_timeout=PROBE_SECONDS, socket_connect_timeout=PROBE_SECONDS
        )
        try:
            client.ping()
        finally:
            client.close()
    except Exception as exc:
        log.warning("redis unreachable", extra={"error": type(exc).__name__})
        return "unreachable"
    return "ok"


@router.get(
    "/health",
    responses={503: {"model": Health, "description": "something configured is unreachable"}},
)
def health(request: Request, response: Response, settings: SettingsDep) -> Health:
    database = _database(request.app.state.engine)
    cache = _redis(settings.redis_url) if settings.redis_url else "not configured"
    ok = database == "ok" and cache != "unreachable"
    if not ok:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    return Health(
        status="ok" if ok else "degraded", version=__version__, database=database, redis=cache
    )
