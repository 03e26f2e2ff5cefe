"""A worker process: solve threads claiming runs from the database queue, and a thread
that contends for the maintenance lease and, while it leads, runs the maintenance pass.

Any number of worker processes may run on any hosts against one database: each run is
claimed by exactly one of them (``FOR UPDATE SKIP LOCKED``), and exactly one process
leads maintenance at a time (:class:`rsched.services.leader.LeaderLease`). When the
leader dies, another takes over once its lease has expired (``leader_ttl``).

Stopping: SIGTERM or SIGINT stops claiming; a run being solved finishes and is stored,
the leader lease is released, and the process exits. A second signal exits at once: the
run being solved is left to its lease (its solver child dies with the process) and is
resumed from its last checkpoint by another worker once that lease expires.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType

from sqlalchemy.orm import Session, sessionmaker

from rsched import metrics
from rsched.config import Settings
from rsched.db.base import make_engine, make_sessionmaker
from rsched.db.migrate import upgrade
from rsched.domain.errors import FieldError, InvalidInput
from rsched.services.auth import startup
from rsched.services.control import ControlStore, control_store
from rsched.services.leader import LeaderLease, NotLeader
from rsched.worker.loop import run_once, work
from rsched.worker.maintenance import Housekeeping, maintenance_tick
from rsched.worker.runner import WorkerConfig, worker_id

log = logging.getLogger("rsched.worker")

MAX_MAINTENANCE_SECONDS = 5.0
"""The leader renews its lease and runs a maintenance pass at least this often."""
MAX_FOLLOWER_POLL_SECONDS = 1.0
"""A follower tries to take the lease at least this often (so a take-over happens
within about a second of the old lease's expiry)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LeaderTiming:
    ttl: float
    renew_every: float
    poll_every: float

    @classmethod
    def for_ttl(cls, ttl: float) -> LeaderTiming:
        return cls(
            ttl=ttl,
            renew_every=max(0.1, min(MAX_MAINTENANCE_SECONDS, ttl / 3)),
            poll_every=max(0.1, min(MAX_FOLLOWER_POLL_SECONDS, ttl / 5)),
        )


def check_options(
    *,
    concurrency: int,
    lease_seconds: float,
    heartbeat_seconds: float,
    leader_ttl: float,
    metrics_port: int | None = None,
) -> None:
    errors: list[FieldError] = []
    if concurrency < 0:
        errors.append(FieldError("concurrency", "must be 0 (maintenance only) or more"))
    if not heartbeat_seconds > 0:
        errors.append(FieldError("heartbeat_seconds", "must be positive"))
    if not lease_seconds > 2 * heartbeat_seconds:
        errors.append(
            FieldError("lease_seconds", "must be more than twice heartbeat_seconds (slack)")
        )
    if not leader_ttl >= 1:
        errors.append(FieldError("leader_ttl", "must be at least 1 second"))
    if metrics_port is not None and not 0 <= metrics_port <= 65535:
        errors.append(FieldError("metrics_port", "must be a port number (0: any free port)"))
    if errors:
        raise InvalidInput(errors, source="worker")


def lead(
    factory: sessionmaker[Session],
    store: ControlStore,
    lease: LeaderLease,
    stop: threading.Event,
    timing: LeaderTiming,
    housekeeping: Housekeeping | None = None,
) -> None:
    """Contend for the lease until ``stop``; while leading, renew it and run the
    maintenance pass every ``timing.renew_every`` seconds. Releases it on the way out."""
    extra = {"holder": lease.holder, "lease": lease.name}
    try:
        while not stop.is_set():
            wait = timing.poll_every
            try:
                if lease.epoch is not None:
                    epoch = lease.epoch
                    if lease.renew():
                        wait = timing.renew_every
                    else:
                        metrics.set_leader(False)
                        log.warning("leadership lost", extra={**extra, "epoch": epoch})
                if lease.epoch is None:
                    if lease.try_acquire() is not None:
                        metrics.set_leader(True)
                        log.info("leadership acquired", extra={**extra, "epoch": lease.epoch})
                        wait = timing.renew_every
                if lease.epoch is not None:
                    maintenance_tick(factory, store, lease, housekeeping=housekeeping)
            except NotLeader as exc:
                metrics.set_leader(False)
                log.warning("stepping down: %s", exc, extra={**extra, "epoch": lease.epoch})
                _quietly_release(lease)
                wait = 0.0
            except Exception:  # the database may be away: the fence keeps writes safe
                log.exception("leader loop error", extra={**extra, "epoch": lease.epoch})
            stop.wait(wait)
    finally:
        held = lease.epoch
        metrics.set_leader(False)
        if held is not None:
            _quietly_release(lease)
            log.info("leadership released", extra={**extra, "epoch": held})


def _quietly_release(lease: LeaderLease) -> None:
    try:
        lease.release()
    except Exception:
        log.exception("could not release the %s lease", lease.name)


def start_threads(
    factory: sessionmaker[Session],
    store: ControlStore,
    stop: threading.Event,
    *,
    cfg: WorkerConfig,
    concurrency: int,
    leader_ttl: float,
    identity: str | None = None,
    housekeeping: Housekeeping | None = None,
) -> list[threading.Thread]:
    """Start ``concurrency`` solve threads and the leader thread (all stop on ``stop``).
    Usable by any process that wants a worker inside it (the embedded server)."""
    identity = identity or worker_id()
    threads = [
        threading.Thread(
            target=work,
            args=(factory, store, cfg, stop),
            kwargs={"owner": f"{identity}/{i}"},
            name=f"rsched-worker-{i}",
            daemon=True,
        )
        for i in range(concurrency)
    ]
    lease = LeaderLease(factory, holder=identity, ttl=leader_ttl)
    threads.append(
        threading.Thread(
            target=lead,
            args=(factory, store, lease, stop, LeaderTiming.for_ttl(leader_ttl), housekeeping),
            name="rsched-leader",
            daemon=True,
        )
    )
    for t in threads:
        t.start()
    return threads


def run_worker(
    settings: Settings,
    *,
    stop: threading.Event,
    concurrency: int = 1,
    lease_seconds: float = 30.0,
    heartbeat_seconds: float = 5.0,
    leader_ttl: float = 15.0,
    once: bool = False,
    metrics_port: int | None = None,
) -> int:
    """Run a worker until ``stop`` is set (or a signal sets it). With ``once``: one
    maintenance pass if the lease is free, then at most one queued run, then return.
    With ``metrics_port``, the process's Prometheus metrics are served at
    ``http://0.0.0.0:PORT/metrics`` (every process that can lead must be scraped)."""
    check_options(
        concurrency=concurrency,
        lease_seconds=lease_seconds,
        heartbeat_seconds=heartbeat_seconds,
        leader_ttl=leader_ttl,
        metrics_port=metrics_port,
    )
    startup(settings)
    url = settings.resolved_database_url()
    if url.startswith("sqlite"):  # the embedded database: create and migrate it here
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        upgrade(url)
    engine = make_engine(url)
    server = metrics.serve_metrics(metrics_port)[0] if metrics_port is not None else None
    try:
        factory = make_sessionmaker(engine)
        store = control_store(settings.redis_url, engine)
        cfg = WorkerConfig(lease_seconds=lease_seconds, heartbeat_seconds=heartbeat_seconds)
        identity = worker_id()
        log.info(
            "worker started",
            extra={
                "holder": identity,
                "pid": os.getpid(),
                "concurrency": concurrency,
                "lease_seconds": lease_seconds,
                "leader_ttl": leader_ttl,
                "control_store": type(store).__name__,
                "metrics_port": None if server is None else server.server_port,
            },
        )
        with _signals_set(stop):
            if once:
                _once(factory, store, cfg, identity, leader_ttl)
            else:
                threads = start_threads(
                    factory,
                    store,
                    stop,
                    cfg=cfg,
                    concurrency=concurrency,
                    leader_ttl=leader_ttl,
                    identity=identity,
                    housekeeping=Housekeeping.from_settings(settings),
                )
                while any(t.is_alive() for t in threads):
                    for t in threads:
                        t.join(timeout=0.5)
        log.info("worker stopped", extra={"holder": identity})
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
        engine.dispose()
    return 0


def _once(
    factory: sessionmaker[Session],
    store: ControlStore,
    cfg: WorkerConfig,
    identity: str,
    leader_ttl: float,
) -> None:
    lease = LeaderLease(factory, holder=identity, ttl=leader_ttl)
    epoch = lease.try_acquire()
    if epoch is not None:
        metrics.set_leader(True)
        try:
            report = maintenance_tick(factory, store, lease)
            log.info("maintenance pass", extra={"epoch": epoch, **report.counts()})
        except NotLeader as exc:
            log.warning("maintenance skipped: %s", exc)
        finally:
            metrics.set_leader(False)
            _quietly_release(lease)
    else:
        log.info("maintenance skipped: another process leads")
    run_once(factory, store, cfg, f"{identity}/0")


@contextmanager
def _signals_set(stop: threading.Event) -> Iterator[None]:
    """SIGTERM/SIGINT set ``stop``; a second one exits at once. Only the main thread
    can install handlers: elsewhere the caller owns ``stop``."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handle(signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if stop.is_set():
            log.warning("%s again: exiting now; a run in progress is left to its lease", name)
            os._exit(128 + signum)
        log.info("%s: stopping; a run in progress finishes first (signal again to leave it)", name)
        stop.set()

    previous = {s: signal.signal(s, handle) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
