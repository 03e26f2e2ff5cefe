"""Engine, sessions and the declarative base. SQLite runs in WAL mode with foreign keys.

A server database's pooled connections are checked before use only when they have sat
idle for :data:`PING_AFTER_IDLE_SECONDS` (a dropped connection is then replaced before
the caller sees it). Pinging on every checkout would cost a round trip per request, a
third of a hot read path's throughput (benchmarks/api_latency.py); a connection that was
in use moments ago and died since fails its statement once, and SQLAlchemy then
invalidates the whole pool, so only connections made afresh are handed out after that.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import MetaData, create_engine, event, exc
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

log = logging.getLogger(__name__)

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


def make_engine(url: str, **kwargs: Any) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False}, **kwargs)

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=5000")
            cur.close()

        return engine
    engine = create_engine(url, **kwargs)
    _ping_when_idle(engine)
    return engine


PING_AFTER_IDLE_SECONDS = 10.0
_IDLE_SINCE = "rsched_idle_since"


def _ping_when_idle(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    @event.listens_for(engine, "checkin")
    def _mark(_dbapi_conn: Any, record: Any) -> None:
        record.info[_IDLE_SINCE] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _check(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        idle = time.monotonic() - record.info.get(_IDLE_SINCE, 0.0)
        if idle < PING_AFTER_IDLE_SECONDS:
            return
        try:
            cursor = dbapi_conn.cursor()
            try:
                cursor.execute("SELECT 1")
            finally:
                cursor.close()
            dbapi_conn.rollback()
        except Exception as error:  # the pool discards it and makes a new one
            raise exc.DisconnectionError(f"pooled connection is gone: {error}") from error


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def refresh_statistics(factory: sessionmaker[Session], tables: Sequence[str]) -> bool:
    """Have the database re-read the statistics its query planner uses for ``tables``
    (``ANALYZE``), after a bulk write whose rows
    are read at once by hot paths (a publish: the calendar feeds and grids of every
    person of the program). Autovacuum does the same within minutes, if it is on;
    without statistics PostgreSQL may scan every slot of a program per assignment.
    Best effort: a failure is logged and False returned, never raised."""
    try:
        with factory() as session:
            conn = session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
            if conn.dialect.name == "postgresql":
                quoted = ", ".join(conn.dialect.identifier_preparer.quote(t) for t in tables)
                conn.exec_driver_sql(f"ANALYZE {quoted}")
            elif conn.dialect.name == "sqlite":
                conn.exec_driver_sql("PRAGMA analysis_limit=1000")  # sampled, as PostgreSQL's
                for table in tables:
                    conn.exec_driver_sql(f"ANALYZE {conn.dialect.identifier_preparer.quote(table)}")
        return True
    except Exception:
        log.warning("refreshing planner statistics failed", exc_info=True)
        return False


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on any error."""
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
