"""The worker loop: claim, execute, repeat; stops cleanly on a signal."""

from __future__ import annotations

import logging
import threading

from sqlalchemy.orm import Session, sessionmaker

from rsched.services import runs as q
from rsched.services.control import ControlStore
from rsched.worker.runner import RunOutcome, WorkerConfig, execute, worker_id

log = logging.getLogger("rsched.worker")


def run_once(
    factory: sessionmaker[Session], store: ControlStore, cfg: WorkerConfig, owner: str
) -> RunOutcome | None:
    """Claim one queued run and execute it; None when the queue is empty."""
    with factory() as session, session.begin():
        claim = q.claim_next(session, owner=owner, lease_seconds=cfg.lease_seconds)
    if claim is None:
        return None
    log.info("claimed run %s attempt %s", claim.run_id, claim.attempt)
    outcome = execute(factory, store, claim, cfg)
    log.info("run %s: %s %s", claim.run_id, outcome.state, outcome.note)
    return outcome


def work(
    factory: sessionmaker[Session],
    store: ControlStore,
    cfg: WorkerConfig,
    stop: threading.Event,
    *,
    owner: str | None = None,
) -> None:
    owner = owner or worker_id()
    while not stop.is_set():
        try:
            outcome = run_once(factory, store, cfg, owner)
        except Exception:
            log.exception("worker %s: claim or run failed", owner)
            outcome = None
        if outcome is None:
            stop.wait(cfg.poll_seconds)
