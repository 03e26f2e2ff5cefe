"""The maintenance leader's work, one pass at a time.

Each task runs in its own transaction that begins with the leader fence
(:meth:`LeaderLease.fenced`), so a process that lost the lease writes nothing: the fence
raises :class:`NotLeader`, which ends the pass and tells the caller to step down. Any
other failure of a task is logged and reported, and the next task still runs.

Tasks, in order (the names used in logs and in ``MaintenanceReport.failed``):

- ``recover_publishes``: publishes left pending by a crash between staging and
  activation are completed or rolled back (:func:`rsched.services.publishing.recover`).
  The fenced transaction only looks for a pending staging older than
  ``STAGING_GRACE`` (a younger one is most likely a publish still running); recovery
  then runs in its own transactions, since activation takes the program's lock (each
  staging is resolved once, so a deposed leader racing the new one changes nothing);
- ``reap_runs``: runs whose worker lease expired go back to the queue, or fail after
  their last attempt (:func:`rsched.services.runs.reap_expired`);
- ``refresh_tokens``: refresh tokens past their expiry are deleted (an expired token is
  refused whatever its state, so nothing is lost but rows);
- ``feed_tokens``: calendar feed tokens revoked more than 30 days ago are deleted;
- ``control_rows``: expired rows of the database control store (only when the control
  store is the database; Redis expires its own keys);
- ``checkpoints``: checkpoints of runs that finished more than 7 days ago are deleted
  (the run rows, results and audit stay);
- ``run_gauges``: the SLO gauges of runs (by state, oldest and most overdue running run,
  stalest heartbeat) are counted from the database (:func:`rsched.metrics.refresh_run_gauges`;
  a read, so not fenced).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from rsched import metrics
from rsched.config import Settings
from rsched.db.models import (
    ControlRow,
    FeedTokenRow,
    RefreshTokenRow,
    RunCheckpointRow,
    RunRow,
    StagingRow,
)
from rsched.services import outbox, publishing, runs
from rsched.services.backups import BackupService, service_for
from rsched.services.control import ControlStore, SqlControlStore
from rsched.services.leader import LeaderLease, NotLeader

log = logging.getLogger("rsched.maintenance")

FEED_TOKEN_RETENTION = timedelta(days=30)
"""Revoked feed tokens are kept this long (to answer "revoked" rather than "unknown")."""
CHECKPOINT_TTL = timedelta(days=7)
"""Checkpoints of a finished run are kept this long after it finished."""
STAGING_GRACE = timedelta(seconds=60)
"""A pending publish staging younger than this is left to the publish that made it."""

T = TypeVar("T")


@dataclass(frozen=True, kw_only=True)
class Housekeeping:
    """Optional leader tasks that need settings: backup retention and outbox delivery."""

    backups: BackupService | None = None
    webhooks: tuple[str, ...] = ()

    @classmethod
    def from_settings(cls, settings: Settings) -> Housekeeping:
        return cls(backups=service_for(settings), webhooks=settings.webhooks)


@dataclass(kw_only=True)
class MaintenanceReport:
    """What one pass did, under which epoch; ``failed`` maps a task to its error."""

    epoch: int
    reaped_runs: list[str] = field(default_factory=list)
    refresh_tokens_deleted: int = 0
    feed_tokens_deleted: int = 0
    control_rows_purged: int = 0
    checkpoints_deleted: int = 0
    recovered_publishes: list[tuple[str, str]] = field(default_factory=list)
    """(staging id, "committed" or "rolled_back") for each pending publish resolved."""
    run_gauges: metrics.RunGauges | None = None
    backups_deleted: int = 0
    events_delivered: int = 0
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        return {
            "reaped_runs": len(self.reaped_runs),
            "refresh_tokens_deleted": self.refresh_tokens_deleted,
            "feed_tokens_deleted": self.feed_tokens_deleted,
            "control_rows_purged": self.control_rows_purged,
            "checkpoints_deleted": self.checkpoints_deleted,
            "backups_deleted": self.backups_deleted,
            "events_delivered": self.events_delivered,
        }


def maintenance_tick(
    factory: sessionmaker[Session],
    store: ControlStore,
    lease: LeaderLease,
    *,
    housekeeping: Housekeeping | None = None,
) -> MaintenanceReport:
    """One maintenance pass as the leader. Raises NotLeader (having written nothing
    further) as soon as a fence finds the lease gone."""
    epoch = lease.epoch
    if epoch is None:
        raise NotLeader(f"{lease.holder} does not hold the {lease.name!r} lease")
    report = MaintenanceReport(epoch=epoch)

    def step(name: str, work: Callable[[Session, datetime], T]) -> T | None:
        try:
            with factory() as session, session.begin():
                lease.fenced(session)
                return work(session, datetime.now(UTC))
        except NotLeader:
            raise
        except Exception as exc:
            log.exception("maintenance task %s failed", name, extra={"epoch": epoch})
            report.failed[name] = f"{type(exc).__name__}: {exc}"
            return None

    if step("recover_publishes", _pending_publishes):
        try:
            report.recovered_publishes = publishing.recover(factory)
        except Exception as exc:
            log.exception("maintenance task recover_publishes failed", extra={"epoch": epoch})
            report.failed["recover_publishes"] = f"{type(exc).__name__}: {exc}"
        for staging_id, outcome in report.recovered_publishes:
            log.info(
                "pending publish recovered",
                extra={"staging_id": staging_id, "outcome": outcome, "epoch": epoch},
            )
    reaped = step("reap_runs", _reap_runs)
    if reaped:
        report.reaped_runs = reaped
        for run_id in reaped:
            log.info("run lease expired", extra={"run_id": run_id, "epoch": epoch})
    report.refresh_tokens_deleted = step("refresh_tokens", _refresh_tokens) or 0
    report.feed_tokens_deleted = step("feed_tokens", _feed_tokens) or 0
    if isinstance(store, SqlControlStore):
        report.control_rows_purged = step("control_rows", _control_rows) or 0
    else:
        report.skipped.append("control_rows")
    report.checkpoints_deleted = step("checkpoints", _checkpoints) or 0
    if housekeeping is not None:
        _housekeeping(factory, lease, housekeeping, report)
    try:
        with factory() as session:
            # ages on the clock the leases and heartbeats were written with
            report.run_gauges = metrics.refresh_run_gauges(session, now=runs.lease_clock(session))
    except Exception as exc:
        log.exception("maintenance task run_gauges failed", extra={"epoch": epoch})
        report.failed["run_gauges"] = f"{type(exc).__name__}: {exc}"
    if any(report.counts().values()) or report.failed:
        log.info(
            "maintenance pass",
            extra={"epoch": epoch, **report.counts(), "failed": sorted(report.failed)},
        )
    return report


def _housekeeping(
    factory: sessionmaker[Session],
    lease: LeaderLease,
    work: Housekeeping,
    report: MaintenanceReport,
) -> None:
    """Backup retention (its deletions fenced by the lease) and outbox delivery (each
    event claimed by a conditional update, so two deliverers never send one twice)."""
    if work.backups is not None:
        try:
            plan = work.backups.retention(dry_run=False, fence=lease.fenced)
            report.backups_deleted = len(plan.delete)
        except NotLeader:
            raise
        except Exception as exc:
            log.exception("maintenance task backup_retention failed")
            report.failed["backup_retention"] = f"{type(exc).__name__}: {exc}"
    if work.webhooks:
        try:
            delivered = outbox.deliver_pending(factory, webhooks=list(work.webhooks))
            report.events_delivered = len(delivered.delivered)
        except Exception as exc:
            log.exception("maintenance task outbox failed")
            report.failed["outbox"] = f"{type(exc).__name__}: {exc}"
    else:
        report.skipped.append("outbox (no RSCHED_WEBHOOKS)")


def _pending_publishes(session: Session, at: datetime) -> bool:
    stale = select(StagingRow.id).where(
        StagingRow.state == "pending", StagingRow.created_at < at - STAGING_GRACE
    )
    return session.scalars(stale.limit(1)).first() is not None


def _reap_runs(session: Session, at: datetime) -> list[str]:
    return runs.reap_expired(session)


def _refresh_tokens(session: Session, at: datetime) -> int:
    return _count(session.execute(delete(RefreshTokenRow).where(RefreshTokenRow.expires_at < at)))


def _feed_tokens(session: Session, at: datetime) -> int:
    return _count(
        session.execute(
            delete(FeedTokenRow).where(
                FeedTokenRow.revoked_at.is_not(None),
                FeedTokenRow.revoked_at < at - FEED_TOKEN_RETENTION,
            )
        )
    )


def _control_rows(session: Session, at: datetime) -> int:
    # The same rows SqlControlStore.purge_expired removes, but in this fenced
    # transaction (purge_expired commits in a transaction of its own).
    return _count(session.execute(delete(ControlRow).where(ControlRow.expires_at < at)))


def _checkpoints(session: Session, at: datetime) -> int:
    finished_long_ago = select(RunRow.id).where(
        RunRow.state.not_in(runs.ACTIVE),
        RunRow.finished_at.is_not(None),
        RunRow.finished_at < at - CHECKPOINT_TTL,
    )
    return _count(
        session.execute(
            delete(RunCheckpointRow).where(RunCheckpointRow.run_id.in_(finished_long_ago))
        )
    )


def _count(result: Any) -> int:
    return int(getattr(result, "rowcount", 0) or 0)
