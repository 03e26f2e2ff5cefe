"""Pooled PostgreSQL connections that die while idle are replaced before anyone uses them;
one that dies right after use fails once, and the pool is renewed (rsched.db.base)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError

from rsched.db import base
from rsched.db.base import make_engine
from tests.integration.api_support import api_client, api_settings
from tests.integration.conftest import PG_ADMIN_URL


@pytest.fixture
def engine(pg_url: str) -> Iterator[Engine]:
    made = make_engine(pg_url, pool_size=1, max_overflow=0)
    yield made
    made.dispose()


def _backend(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())


def _terminate(pid: int) -> None:
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            assert conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid}).scalar()
    finally:
        admin.dispose()


def test_a_connection_that_died_while_idle_is_replaced_unseen(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = _backend(engine)
    assert _backend(engine) == first  # pooled: the same server process
    _terminate(first)
    monkeypatch.setattr(base, "PING_AFTER_IDLE_SECONDS", 0.0)  # it has been idle "long"
    assert _backend(engine) != first


def test_a_connection_used_moments_ago_is_not_pinged_and_fails_once(engine: Engine) -> None:
    first = _backend(engine)
    _terminate(first)
    with pytest.raises(OperationalError):  # no ping: a ping would have replaced it unseen
        _backend(engine)
    assert _backend(engine) != first  # the pool was invalidated and renewed


def test_the_api_answers_503_with_retry_after_when_its_connection_dropped(
    engine: Engine, pg_url: str, tmp_path: Path, fernet_keys: list[str]
) -> None:
    settings = api_settings(pg_url, tmp_path, fernet_keys)
    with api_client(settings, engine) as client:
        assert client.get("/feeds/no-such-token.ics").status_code == 404  # a pooled conn
        _terminate(_backend(engine))
        dropped = client.get("/feeds/no-such-token.ics")
        assert dropped.status_code == 503 and dropped.headers["retry-after"] == "1"
        body = dropped.json()
        assert body["type"] == "urn:rsched:problem:database-unavailable"
        assert "127.0.0.1" not in dropped.text and "Traceback" not in dropped.text
        assert client.get("/feeds/no-such-token.ics").status_code == 404  # pool renewed
