"""The control store port: abort flags and live progress of running solves.

Redis (production: keys with a TTL, shared by every process) or the database (the
embedded default). Only what may be lost lives here; the durable record of an abort is
the run row itself, so a Redis restart never loses an abort or a run.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import delete, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from rsched.db.models import ControlRow

PROGRESS_TTL = 3600
ABORT_TTL = 24 * 3600


class ControlStore(Protocol):
    def request_abort(self, run_id: str, reason: str) -> None: ...
    def abort_reason(self, run_id: str) -> str | None: ...
    def publish_progress(self, run_id: str, progress: dict[str, Any]) -> None: ...
    def progress(self, run_id: str) -> dict[str, Any] | None: ...
    def ping(self) -> bool: ...


class SqlControlStore:
    """Control rows in the database, each with an expiry (rows past it are ignored and
    removed by the maintenance loop)."""

    def __init__(self, factory: sessionmaker[Session]) -> None:
        self._factory = factory

    def _put(self, key: str, value: dict[str, Any], ttl: int) -> None:
        with self._factory() as session, session.begin():
            row = session.get(ControlRow, key)
            expires = datetime.now(UTC) + timedelta(seconds=ttl)
            if row is None:
                session.add(ControlRow(key=key, value=value, expires_at=expires))
            else:
                row.value = value
                row.expires_at = expires

    def _get(self, key: str) -> dict[str, Any] | None:
        with self._factory() as session:
            row = session.execute(
                select(ControlRow.value, ControlRow.expires_at).where(ControlRow.key == key)
            ).first()
        if row is None:
            return None
        expires = row.expires_at if row.expires_at.tzinfo else row.expires_at.replace(tzinfo=UTC)
        return dict(row.value) if expires > datetime.now(UTC) else None

    def request_abort(self, run_id: str, reason: str) -> None:
        self._put(f"abort:{run_id}", {"reason": reason}, ABORT_TTL)

    def abort_reason(self, run_id: str) -> str | None:
        value = self._get(f"abort:{run_id}")
        return None if value is None else str(value.get("reason") or "abort requested")

    def publish_progress(self, run_id: str, progress: dict[str, Any]) -> None:
        self._put(f"progress:{run_id}", progress, PROGRESS_TTL)

    def progress(self, run_id: str) -> dict[str, Any] | None:
        return self._get(f"progress:{run_id}")

    def ping(self) -> bool:
        with self._factory() as session:
            session.execute(select(1))
        return True

    def purge_expired(self) -> int:
        with self._factory() as session, session.begin():
            result = session.execute(
                delete(ControlRow).where(ControlRow.expires_at < datetime.now(UTC))
            )
            return int(result.rowcount or 0)  # type: ignore[attr-defined]


class RedisControlStore:
    """Keys ``rsched:abort:{run}`` and ``rsched:progress:{run}`` with a TTL."""

    def __init__(self, url: str) -> None:
        import redis

        self._r = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)

    def request_abort(self, run_id: str, reason: str) -> None:
        self._r.set(f"rsched:abort:{run_id}", reason, ex=ABORT_TTL)

    def abort_reason(self, run_id: str) -> str | None:
        value = self._r.get(f"rsched:abort:{run_id}")
        return None if value is None else bytes(value).decode("utf-8")  # type: ignore[arg-type]

    def publish_progress(self, run_id: str, progress: dict[str, Any]) -> None:
        self._r.set(f"rsched:progress:{run_id}", json.dumps(progress), ex=PROGRESS_TTL)

    def progress(self, run_id: str) -> dict[str, Any] | None:
        value = self._r.get(f"rsched:progress:{run_id}")
        if value is None:
            return None
        doc: dict[str, Any] = json.loads(bytes(value))  # type: ignore[arg-type]
        return doc

    def ping(self) -> bool:
        return bool(self._r.ping())


def control_store(redis_url: str | None, engine: Engine) -> ControlStore:
    if redis_url:
        return RedisControlStore(redis_url)
    return SqlControlStore(sessionmaker(engine, expire_on_commit=False))
