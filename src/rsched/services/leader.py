"""One leader at a time, elected through a named lease row with an epoch.

A process takes the lease (``try_acquire``) only when it is free (missing, released or
expired) or already its own; a new holder increments ``epoch``. The holder renews it
well within ``ttl``; if it stops (killed, partitioned, paused), any other process takes
it over once it has expired.

Expiry alone cannot stop two processes from *acting* as leader: a paused holder wakes up
believing it still leads. So every write the leader makes runs after :meth:`LeaderLease.fenced`
in the same transaction, which checks — and locks — the lease row for this holder, this
epoch and an unexpired lease, raising :class:`NotLeader` otherwise:

- PostgreSQL: ``SELECT … FOR UPDATE`` on the lease row. A competitor's take-over is an
  ``UPDATE`` of that row, so it waits until the fenced transaction ends; a new epoch
  can only begin after the old leader's last fenced write has committed (or rolled back),
  and a stale leader's fence fails once the row carries another holder or epoch.
- SQLite: the fence is a conditional ``UPDATE`` of the lease row, the transaction's first
  write, so the transaction holds the database write lock from the check to the commit
  (pysqlite starts a transaction only at the first write, so a plain ``SELECT`` would not).

Time: on PostgreSQL the database clock (``clock_timestamp()``) decides expiry, so hosts
with skewed clocks still agree on it; the embedded SQLite database lives on one machine
and uses its clock. Correctness never depends on clocks — only the holder/epoch check
does — clocks only decide when a take-over may happen.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import DateTime, case, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from rsched.db.models import LeaseRow
from rsched.domain.errors import RschedError

log = logging.getLogger("rsched.leader")

MAINTENANCE = "maintenance"


class NotLeader(RschedError):
    """This process does not hold the lease (or holds an old epoch): it must not write."""


def _is_pg(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def db_now(session: Session) -> datetime:
    """Now, by the database clock on PostgreSQL (one clock for every host), else local."""
    if _is_pg(session):
        value = session.scalar(select(func.clock_timestamp().cast(DateTime(timezone=True))))
        if isinstance(value, datetime):
            return value
    return datetime.now(UTC)


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


class LeaderLease:
    """The lease ``name`` as seen by one contender, ``holder`` (unique per process)."""

    def __init__(
        self,
        factory: sessionmaker[Session],
        name: str = MAINTENANCE,
        *,
        holder: str,
        ttl: float,
    ) -> None:
        if not holder:
            raise ValueError("a lease holder needs a non-empty, unique name")
        if ttl <= 0:
            raise ValueError("the lease ttl must be positive")
        self.factory = factory
        self.name = name
        self.holder = holder
        self.ttl = timedelta(seconds=ttl)
        self._epoch: int | None = None

    @property
    def epoch(self) -> int | None:
        """The epoch this contender holds, as far as it knows (None: not the leader)."""
        return self._epoch

    def try_acquire(self) -> int | None:
        """Take the lease if it is missing, free, expired or already ours; the epoch held,
        or None when another holder's lease is still running."""
        with self.factory() as session, session.begin():
            at = db_now(session)
            until = at + self.ttl
            insert = postgresql.insert if _is_pg(session) else sqlite.insert
            created = session.execute(
                insert(LeaseRow)
                .values(name=self.name, holder=self.holder, epoch=1, expires_at=until)
                .on_conflict_do_nothing(index_elements=[LeaseRow.name])
            )
            if _rowcount(created) == 1:
                epoch: int | None = 1
            else:
                ours = LeaseRow.holder == self.holder
                taken = session.execute(
                    update(LeaseRow)
                    .where(LeaseRow.name == self.name, ours | (LeaseRow.expires_at <= at))
                    .values(
                        holder=self.holder,
                        epoch=case((ours, LeaseRow.epoch), else_=LeaseRow.epoch + 1),
                        expires_at=until,
                    )
                    .returning(LeaseRow.epoch)
                    .execution_options(synchronize_session=False)
                ).first()
                epoch = None if taken is None else int(taken.epoch)
        self._epoch = epoch
        return epoch

    def renew(self) -> bool:
        """Extend our lease by ``ttl``; False (and no longer the leader) when another
        holder or epoch owns the row. A lease that lapsed but that nobody took is
        still ours: no one else can have written under it."""
        epoch = self._epoch
        if epoch is None:
            return False
        with self.factory() as session, session.begin():
            at = db_now(session)
            result = session.execute(
                update(LeaseRow)
                .where(
                    LeaseRow.name == self.name,
                    LeaseRow.holder == self.holder,
                    LeaseRow.epoch == epoch,
                )
                .values(expires_at=at + self.ttl)
                .execution_options(synchronize_session=False)
            )
            renewed = _rowcount(result) == 1
        if not renewed:
            self._epoch = None
        return renewed

    def release(self) -> None:
        """Give the lease up at once (a clean shutdown), so a follower need not wait for
        it to expire. The epoch stays in the row: the next holder increments it."""
        epoch = self._epoch
        self._epoch = None
        if epoch is None:
            return
        with self.factory() as session, session.begin():
            at = db_now(session)
            session.execute(
                update(LeaseRow)
                .where(
                    LeaseRow.name == self.name,
                    LeaseRow.holder == self.holder,
                    LeaseRow.epoch == epoch,
                )
                .values(holder=None, expires_at=at)
                .execution_options(synchronize_session=False)
            )

    def fenced(self, session: Session) -> int:
        """Inside the caller's transaction, before any of its writes: lock the lease row
        and check that this holder still leads with its epoch and an unexpired lease.
        Returns the epoch; raises NotLeader otherwise (the caller's transaction must then
        roll back, writing nothing)."""
        epoch = self._epoch
        if epoch is None:
            raise NotLeader(f"{self.holder} does not hold the {self.name!r} lease")
        at = db_now(session)
        if _is_pg(session):
            row = session.execute(
                select(LeaseRow.holder, LeaseRow.epoch, LeaseRow.expires_at)
                .where(LeaseRow.name == self.name)
                .with_for_update()
            ).first()
            ok = (
                row is not None
                and row.holder == self.holder
                and row.epoch == epoch
                and _aware(row.expires_at) > at
            )
        else:
            result = session.execute(
                update(LeaseRow)
                .where(
                    LeaseRow.name == self.name,
                    LeaseRow.holder == self.holder,
                    LeaseRow.epoch == epoch,
                    LeaseRow.expires_at > at,
                )
                .values(epoch=LeaseRow.epoch)  # no change: takes the write lock
                .execution_options(synchronize_session=False)
            )
            ok = _rowcount(result) == 1
            row = None
        if not ok:
            if row is None:
                row = session.execute(
                    select(LeaseRow.holder, LeaseRow.epoch, LeaseRow.expires_at).where(
                        LeaseRow.name == self.name
                    )
                ).first()
            now_held = "nobody" if row is None else f"{row.holder} (epoch {row.epoch})"
            raise NotLeader(
                f"{self.holder} lost the {self.name!r} lease of epoch {epoch}; "
                f"now held by {now_held}"
            )
        return epoch

    def __repr__(self) -> str:
        return f"LeaderLease({self.name!r}, holder={self.holder!r}, epoch={self._epoch})"


def _rowcount(result: Any) -> int:
    return int(getattr(result, "rowcount", 0) or 0)


def current_lease(factory: sessionmaker[Session], name: str = MAINTENANCE) -> LeaseRow | None:
    """The lease row as stored (for operators and tests), detached from its session."""
    with factory() as session:
        row = session.get(LeaseRow, name)
        if row is not None:
            session.expunge(row)
        return row
