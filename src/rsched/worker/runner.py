"""Run one claimed job: solve in the sandboxed child, heartbeat the lease, checkpoint
every improving solution (fenced), honour aborts within a second, store the result as a
draft schedule version, and finish the run — or stop writing the moment the lease is lost.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from rsched import metrics
from rsched.db.mapping import load_program_data
from rsched.domain import RunState, SolverFailure
from rsched.services import runs as q
from rsched.services import schedules
from rsched.services.access import Actor
from rsched.services.control import ControlStore
from rsched.solver.control import Checkpoint, Control, Progress
from rsched.solver.result import SolveResult, StopReason
from rsched.solver.sandbox import Limits, solve_in_sandbox

log = logging.getLogger("rsched.worker")

WORKER_ACTOR = Actor(user_id="system:worker", is_admin=True)
"""The worker writes drafts on behalf of the run's requester; its writes are fenced."""


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


@dataclass(kw_only=True)
class WorkerConfig:
    lease_seconds: float = 30.0
    heartbeat_seconds: float = 5.0
    poll_seconds: float = 1.0
    memory_mb: int = 4096
    extra_wall_seconds: float = 60.0


@dataclass(kw_only=True)
class RunOutcome:
    run_id: str
    state: str
    version_id: str | None = None
    note: str = ""
    fenced: bool = False
    events: list[str] = field(default_factory=list)


class _Lease:
    """Heartbeats in a thread; notices a lost lease or a durable abort."""

    def __init__(
        self,
        factory: sessionmaker[Session],
        claim: q.Claim,
        cfg: WorkerConfig,
        latest: Callable[[], dict[str, Any] | None],
    ) -> None:
        self.factory = factory
        self.claim = claim
        self.cfg = cfg
        self.latest = latest
        self.lost = threading.Event()
        self.abort_reason: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rsched-heartbeat", daemon=True)

    def _beat(self) -> None:
        try:
            with self.factory() as session, session.begin():
                q.heartbeat(
                    session,
                    self.claim,
                    lease_seconds=self.cfg.lease_seconds,
                    progress=self.latest(),
                )
                reason = q.abort_requested(session, self.claim.run_id)
                if reason is not None:
                    self.abort_reason = reason
        except q.Fenced:
            self.lost.set()
        except Exception:  # a database hiccup: the lease has slack; try again next beat
            log.exception("heartbeat failed for run %s", self.claim.run_id)

    def _run(self) -> None:
        while not self._stop.wait(self.cfg.heartbeat_seconds):
            self._beat()
            if self.lost.is_set():
                return

    def __enter__(self) -> _Lease:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def execute(
    factory: sessionmaker[Session],
    store: ControlStore,
    claim: q.Claim,
    cfg: WorkerConfig,
    *,
    on_child_start: Callable[[], None] | None = None,
) -> RunOutcome:
    """Solve a claimed run end to end. Never raises for a solver problem: the run is
    finished as failed with the reason. A lost lease stops every write (fenced)."""
    params = q.solve_params(claim)
    with factory() as session:
        data = load_program_data(session, claim.program_id)
        resume = q.latest_checkpoint(session, claim.run_id)
    outcome = RunOutcome(run_id=claim.run_id, state=RunState.RUNNING.value)
    if resume is not None:
        outcome.events.append(f"resumed from checkpoint (objective {resume[1]:g})")
    last_progress: dict[str, Any] = {}
    abort_cache: dict[str, Any] = {"at": 0.0, "reason": None}
    counted = metrics.ProgressMark()

    lease = _Lease(factory, claim, cfg, lambda: dict(last_progress) or None)

    def should_abort() -> bool:
        if lease.lost.is_set() or lease.abort_reason is not None:
            return True
        t = time.monotonic()
        if t - abort_cache["at"] >= 0.2:
            abort_cache["at"] = t
            try:
                abort_cache["reason"] = store.abort_reason(claim.run_id)
            except Exception:  # the control store may be lost; the durable flag remains
                abort_cache["reason"] = None
        return abort_cache["reason"] is not None

    def on_progress(p: Progress) -> None:
        metrics.record_progress(p, algorithm=claim.algorithm, mark=counted)
        last_progress.clear()
        last_progress.update(p.to_dict())
        last_progress["attempt"] = claim.attempt
        try:
            store.publish_progress(claim.run_id, dict(last_progress))
        except Exception:
            log.warning("progress not published for run %s", claim.run_id)

    def on_checkpoint(cp: Checkpoint) -> None:
        try:
            with factory() as session, session.begin():
                q.save_checkpoint(session, claim, pairs=list(cp.pairs), objective=cp.objective)
        except q.Fenced:
            lease.lost.set()

    control = Control(
        should_abort=should_abort,
        on_progress=on_progress,
        on_checkpoint=on_checkpoint,
        hint=resume[0] if resume else frozenset(),
    )
    limits = Limits(
        memory_bytes=cfg.memory_mb * 2**20,
        cpu_seconds=(params.time_limit + cfg.extra_wall_seconds) * params.workers + 30,
        wall_seconds=params.time_limit + cfg.extra_wall_seconds,
    )
    if on_child_start is not None:
        on_child_start()
    result: SolveResult | None = None
    failure: str | None = None
    with lease:
        try:
            result = solve_in_sandbox(data, params, limits=limits, control=control)
        except SolverFailure as exc:
            failure = str(exc)
    if result is not None:
        metrics.record_final_work(result, algorithm=claim.algorithm, mark=counted)
    stopped = metrics.abort_reason_of(
        result,
        lease_lost=lease.lost.is_set(),
        requested=lease.abort_reason or abort_cache["reason"],
    )
    if stopped is not None:
        metrics.record_abort(stopped)
    if lease.lost.is_set():
        outcome.fenced = True
        outcome.note = "lease lost: another attempt owns the run; nothing written"
        return outcome
    outcome = _conclude(
        factory,
        claim,
        result,
        failure,
        lease.abort_reason or abort_cache["reason"],
        outcome,
        last_progress,
    )
    if result is not None and not outcome.fenced:
        metrics.record_best_score(claim.algorithm, result.objective)
        if result.report is not None:
            metrics.record_validation(result.report)
    return outcome


def _conclude(
    factory: sessionmaker[Session],
    claim: q.Claim,
    result: SolveResult | None,
    failure: str | None,
    abort_reason: str | None,
    outcome: RunOutcome,
    progress: dict[str, Any],
) -> RunOutcome:
    try:
        with factory() as session, session.begin():
            q.check_fence(session, claim)  # row-locks the run until commit
            if result is None:
                q.finish(
                    session,
                    claim,
                    state=RunState.FAILED,
                    failure_reason=failure or "solver failed",
                    transient=True,
                )
                outcome.state = RunState.FAILED.value
                return outcome
            aborted = result.stop_reason is StopReason.ABORTED
            if result.has_schedule and result.report is not None:
                version = schedules.save_draft(
                    session,
                    actor=WORKER_ACTOR,
                    program_id=claim.program_id,
                    assignments=result.assignments,
                    report_summary=result.summary(),
                    run_id=claim.run_id,
                )
                outcome.version_id = version
                state = RunState.ABORTED if aborted else RunState.SUCCEEDED
                q.finish(
                    session,
                    claim,
                    state=state,
                    stop_reason=str(result.stop_reason),
                    result_version_id=version,
                    progress=progress or None,
                    failure_reason=abort_reason if aborted else None,
                )
            else:
                reason = "; ".join(result.explanation) or (
                    f"no schedule found ({result.status}, {result.stop_reason})"
                )
                state = RunState.ABORTED if aborted else RunState.FAILED
                transient = result.stop_reason in (StopReason.TIME_LIMIT, StopReason.RESOURCE_LIMIT)
                q.finish(
                    session,
                    claim,
                    state=state,
                    stop_reason=str(result.stop_reason),
                    failure_reason=abort_reason if aborted else reason,
                    transient=transient,
                    progress=progress or None,
                )
            outcome.state = state.value
    except q.Fenced:
        outcome.fenced = True
        outcome.note = "lease lost before the result was stored; nothing written"
    return outcome
