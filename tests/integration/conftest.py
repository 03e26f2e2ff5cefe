"""Database fixtures for integration tests.

- ``sqlite_url``: a migrated SQLite file for the test session.
- ``pg_url``: a fresh PostgreSQL database for the test session (``rsched_test_<pid>_<hex>``),
  migrated, dropped at the end. The server comes from ``RSCHED_TEST_PG_ADMIN_URL``
  (default ``postgresql+psycopg://postgres@127.0.0.1:5432/postgres``). When it cannot be
  reached, the tests needing it skip locally and FAIL in CI (``CI=true``): a green CI run
  always includes PostgreSQL.
- ``db_url``: parametrized over both (ids ``sqlite`` and ``postgresql``); every table is
  emptied before the test, so each test starts from a migrated, empty database.
- ``session_factory``: a ``sessionmaker`` on ``db_url``.
- ``fernet_keys``: installs a fresh encryption key for the test (returned as a list,
  newest first) and restores the previous keyring afterwards.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import Session, sessionmaker

from rsched.crypto.fields import KEYRING, install_keys, new_key
from rsched.db import models  # noqa: F401  (registers the tables)
from rsched.db.base import Base, make_engine, make_sessionmaker
from rsched.db.migrate import upgrade

PG_ADMIN_URL = os.environ.get(
    "RSCHED_TEST_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def _unavailable(reason: str) -> None:
    if in_ci():
        pytest.fail(f"PostgreSQL is required in CI: {reason}", pytrace=False)
    pytest.skip(f"PostgreSQL not reachable: {reason}")


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    path: Path = tmp_path_factory.mktemp("sqlite") / "rsched-test.db"
    url = f"sqlite:///{path}"
    upgrade(url)
    return url


@pytest.fixture(scope="session")
def _pg_admin() -> Iterator[Engine]:
    engine = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT", pool_pre_ping=True)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # any failure to connect: refused, auth, DNS, timeout
        engine.dispose()
        _unavailable(f"{make_url(PG_ADMIN_URL).render_as_string()}: {exc}")
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def pg_url(_pg_admin: Engine) -> Iterator[str]:
    name = f"rsched_test_{os.getpid()}_{secrets.token_hex(3)}"
    with _pg_admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    try:
        upgrade(url)
        yield url
    finally:
        _dispose(url)
        with _pg_admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


_ENGINES: dict[str, Engine] = {}


def _engine(url: str) -> Engine:
    if url not in _ENGINES:
        _ENGINES[url] = make_engine(url)
    return _ENGINES[url]


def _dispose(url: str) -> None:
    engine = _ENGINES.pop(url, None)
    if engine is not None:
        engine.dispose()


@pytest.fixture(scope="session", autouse=True)
def _dispose_engines() -> Iterator[None]:
    yield
    for url in list(_ENGINES):
        _dispose(url)


def empty_all_tables(engine: Engine) -> None:
    with engine.begin() as conn:
        for table in reversed(Base.metadata.sorted_tables):
            conn.execute(table.delete())


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest) -> str:
    url: str = request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url")
    empty_all_tables(_engine(url))
    return url


@pytest.fixture
def db_engine(db_url: str) -> Engine:
    return _engine(db_url)


@pytest.fixture
def session_factory(db_engine: Engine) -> sessionmaker[Session]:
    return make_sessionmaker(db_engine)


@pytest.fixture
def fernet_keys() -> Iterator[list[str]]:
    saved = (KEYRING.multi, KEYRING.newest)
    keys = [new_key()]
    install_keys(keys)
    try:
        yield keys
    finally:
        KEYRING.multi, KEYRING.newest = saved
