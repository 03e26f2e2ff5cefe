"""Prometheus metrics of this process, and the small functions that record them.

Every process (API, worker, maintenance leader) has its own registry, exposed at
``/metrics`` (:func:`metrics_app` or :func:`render_latest` in an HTTP app,
:func:`serve_metrics` in a process without one) and aggregated by Prometheus; the
alert rules in ``deploy/prometheus/alerts.yml`` therefore aggregate with ``sum``/``max``
across instances.

What records what:

* the worker parent, from what the sandboxed child reports: :func:`record_progress`
  (solver iterations, best score), :func:`record_abort` and, for a stored result,
  :func:`record_validation` and :func:`record_best_score`;
* the maintenance leader (or any process that wants the gauges): :func:`refresh_run_gauges`
  (runs by state, oldest / most overdue running run, stalest heartbeat — counted from the
  ``runs`` table) and :func:`set_leader`;
* publishing: ``VALID_PUBLISH`` and ``ROLLBACK`` (defined here so the alert expressions
  resolve; the publishing service increments them).

Label values are bounded sets (rule codes, severities, algorithms, run states, abort
reasons): never a run, program or person id.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
    make_asgi_app,
    multiprocess,
    start_http_server,
)
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from rsched.db.models import RunRow
from rsched.domain import RunState, Severity
from rsched.rules.registry import ALL_RULES
from rsched.solver.control import Progress
from rsched.solver.result import SolveResult, StopReason

if TYPE_CHECKING:
    from rsched.rules.report import ValidationReport

REGISTRY = CollectorRegistry(auto_describe=True)
"""The registry of this process (not the library's global one, so importing this module
twice, or in tests, never registers a metric twice)."""
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)

EVALUATION_BUCKETS: tuple[float, ...] = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
"""Seconds one rule takes to check one schedule: milliseconds normally, seconds at worst."""

CONSTRAINT_VIOLATIONS = Counter(
    "scheduler_constraint_violations_total",
    "Rule breaches found by the independent validator, by rule code and severity.",
    ["constraint", "severity"],
    registry=REGISTRY,
)
CONSTRAINT_EVALUATION_SECONDS = Histogram(
    "scheduler_constraint_evaluation_seconds",
    "Seconds the validator spent checking one rule on one schedule.",
    ["constraint"],
    buckets=EVALUATION_BUCKETS,
    registry=REGISTRY,
)
CONSTRAINT_SATISFACTION_RATE = Gauge(
    "scheduler_constraint_satisfaction_rate",
    "Share of hard rules without any violation in the last validated schedule "
    "(1 - hard rules with a violation / hard rules).",
    registry=REGISTRY,
    multiprocess_mode="max",
)
SOLVER_ITERATIONS = Counter(
    "scheduler_solver_iterations_total",
    "Solver work reported by running solves: iterations where the solver counts them, "
    "otherwise solutions found.",
    ["algorithm"],
    registry=REGISTRY,
)
SOLVER_ABORTS = Counter(
    "scheduler_solver_abort_total",
    "Solves stopped before they completed, by reason.",
    ["reason"],
    registry=REGISTRY,
)
SOLVER_BEST_SCORE = Gauge(
    "scheduler_solver_best_score",
    "Best objective (weighted penalties, lower is better) last reported by a solve.",
    ["algorithm"],
    registry=REGISTRY,
    multiprocess_mode="max",
)
RUNS = Gauge(
    "scheduler_runs",
    "Runs in the database by state (refreshed from the runs table).",
    ["state"],
    registry=REGISTRY,
    multiprocess_mode="max",
)
RUN_OLDEST_RUNNING_SECONDS = Gauge(
    "scheduler_run_oldest_running_seconds",
    "Age (since it first started) of the oldest running run; 0 when none runs.",
    registry=REGISTRY,
    multiprocess_mode="max",
)
RUN_MAX_OVERRUN_SECONDS = Gauge(
    "scheduler_run_max_overrun_seconds",
    "How far the most overdue running run is past its solve budget (age since it first "
    "started - attempt x time_limit); 0 when every running run is within it.",
    registry=REGISTRY,
    multiprocess_mode="max",
)
RUN_STALEST_HEARTBEAT_SECONDS = Gauge(
    "scheduler_run_stalest_heartbeat_seconds",
    "Seconds since the last heartbeat of the running run heard from longest ago; 0 when none runs.",
    registry=REGISTRY,
    multiprocess_mode="max",
)
RUN_GAUGES_REFRESHED = Gauge(
    "scheduler_run_gauges_refreshed_timestamp_seconds",
    "Unix time the run gauges were last counted from the database by this process.",
    registry=REGISTRY,
    multiprocess_mode="max",
)
VALID_PUBLISH = Counter(
    "scheduler_valid_publish_total",
    "Schedules published after passing the gate (incremented by the publishing service).",
    registry=REGISTRY,
)
ROLLBACK = Counter(
    "scheduler_rollback_total",
    "Publishes rolled back, by reason (incremented by the publishing service).",
    ["reason"],
    registry=REGISTRY,
)
LEADER = Gauge(
    "scheduler_leader",
    "1 while this process holds the maintenance leader lease, else 0.",
    registry=REGISTRY,
    multiprocess_mode="max",
)


class AbortReason(StrEnum):
    """Why a solve stopped before it completed (the only values of the ``reason`` label)."""

    USER = "user"
    TIME_LIMIT = "time_limit"
    RESOURCE_LIMIT = "resource_limit"
    LEASE_LOST = "lease_lost"
    SHUTDOWN = "shutdown"


for _rule in ALL_RULES:  # every series exists from the start, so increase() sees the first
    CONSTRAINT_VIOLATIONS.labels(constraint=_rule.code, severity=_rule.severity.value)
for _reason in AbortReason:
    SOLVER_ABORTS.labels(reason=_reason.value)
for _state in RunState:
    RUNS.labels(state=_state.value).set(0)


# ------------------------------------------------------------------ validation


def record_validation(report: ValidationReport) -> None:
    """Count the report's violations and warnings by rule, observe each rule's evaluation
    time, and set the satisfaction rate of the hard rules."""
    for severity in (Severity.VIOLATION, Severity.WARNING):
        for code, n in report.count_by_rule(severity).items():
            CONSTRAINT_VIOLATIONS.labels(constraint=code, severity=severity.value).inc(n)
    for code, seconds in report.seconds_by_rule.items():
        CONSTRAINT_EVALUATION_SECONDS.labels(constraint=code).observe(max(0.0, seconds))
    CONSTRAINT_SATISFACTION_RATE.set(satisfaction_rate(report))


def satisfaction_rate(report: ValidationReport) -> float:
    """1 − (hard rules with at least one violation) ÷ (hard rules). Warning rules are left
    out of both: they cannot produce a hard violation, and counting them would keep the
    rate above zero when every hard rule is broken."""
    hard = {r.code for r in ALL_RULES if r.severity is Severity.VIOLATION}
    broken = {v.rule for v in report.violations}
    rules = hard | broken
    return 1.0 - len(broken) / len(rules) if rules else 1.0


# ------------------------------------------------------------------ solver progress


@dataclass(kw_only=True)
class ProgressMark:
    """What one solve has already counted (kept by the caller, one per solve), so that
    repeated progress reports add only the new work."""

    work: int = 0


def _work(progress: Progress) -> int:
    # Greedy counts iterations; CP-SAT and MIP report solutions only. The sandbox's own
    # "waiting" reports repeat the last solutions but carry iterations 0; the high-water
    # mark in ProgressMark keeps those from counting twice.
    return max(progress.iterations, progress.solutions, 0)


def record_progress(progress: Progress, *, algorithm: str, mark: ProgressMark) -> None:
    """Add the work done since ``mark`` to the iterations counter and set the best score.
    ``mark`` is updated; a solve's counts never go down, so a lower report adds nothing."""
    _add_work(_work(progress), algorithm=algorithm, mark=mark)
    record_best_score(algorithm, progress.objective)


def record_final_work(result: SolveResult, *, algorithm: str, mark: ProgressMark) -> None:
    """Count the solutions of a finished solve that no progress report carried (progress
    arrives about once a second, so a fast solve may end before reporting its work)."""
    _add_work(max(result.solutions, 0), algorithm=algorithm, mark=mark)


def _add_work(work: int, *, algorithm: str, mark: ProgressMark) -> None:
    if work > mark.work:
        SOLVER_ITERATIONS.labels(algorithm=algorithm).inc(work - mark.work)
        mark.work = work


def record_best_score(algorithm: str, objective: float | None) -> None:
    """Set the best score of ``algorithm`` (nothing when no schedule is known yet)."""
    if objective is not None:
        SOLVER_BEST_SCORE.labels(algorithm=algorithm).set(objective)


def record_abort(reason: AbortReason) -> None:
    """Count a solve that stopped before completing; ``reason`` must be an AbortReason
    (a plain string is accepted only when it is one of their values)."""
    SOLVER_ABORTS.labels(reason=AbortReason(reason).value).inc()


def abort_reason_of(
    result: SolveResult | None, *, lease_lost: bool, requested: str | None
) -> AbortReason | None:
    """Classify how a solve ended: a lost lease, a requested abort (``shutdown`` when the
    request says so, else ``user``), the time limit or a resource limit; None when it
    completed (or failed without a result: a crash is not an abort)."""
    if lease_lost:
        return AbortReason.LEASE_LOST
    if result is None:
        return None
    if result.stop_reason is StopReason.ABORTED:
        if requested is not None and requested.strip().lower().startswith("shutdown"):
            return AbortReason.SHUTDOWN
        return AbortReason.USER
    if result.stop_reason is StopReason.TIME_LIMIT:
        return AbortReason.TIME_LIMIT
    if result.stop_reason is StopReason.RESOURCE_LIMIT:
        return AbortReason.RESOURCE_LIMIT
    return None


# ------------------------------------------------------------------ runs and leader


def set_runs_by_state(counts: Mapping[str, int]) -> None:
    """Set ``scheduler_runs{state}`` for every state (a state missing from ``counts`` is 0)."""
    unknown = set(counts) - {s.value for s in RunState}
    if unknown:
        raise ValueError(f"unknown run states: {sorted(unknown)}")
    for state in RunState:
        RUNS.labels(state=state.value).set(counts.get(state.value, 0))


@dataclass(frozen=True, slots=True, kw_only=True)
class RunGauges:
    """What :func:`refresh_run_gauges` counted."""

    by_state: dict[str, int]
    oldest_running_seconds: float
    max_overrun_seconds: float
    stalest_heartbeat_seconds: float


def _aware(at: datetime | None) -> datetime | None:
    # SQLite returns naive datetimes; everything is stored in UTC
    if at is None or at.tzinfo is not None:
        return at
    return at.replace(tzinfo=UTC)


def _time_limit(params: Any) -> float:
    try:
        return float((params or {}).get("time_limit", 60))
    except (AttributeError, TypeError, ValueError):
        return 60.0


def refresh_run_gauges(session: Session, *, now: datetime | None = None) -> RunGauges:
    """Count the runs by state and measure the running ones, from the database, and set
    the gauges. Read-only; call it from the maintenance loop (or before a scrape)."""
    at = now or datetime.now(UTC)
    counts = {
        state: int(n)
        for state, n in session.execute(
            select(RunRow.state, func.count()).group_by(RunRow.state)
        ).all()
        if state in {s.value for s in RunState}
    }
    running = session.execute(
        select(RunRow.started_at, RunRow.heartbeat_at, RunRow.attempt, RunRow.params).where(
            RunRow.state == RunState.RUNNING.value
        )
    ).all()
    oldest = overrun = stalest = 0.0
    for started_at, heartbeat_at, attempt, params in running:
        started, beat = _aware(started_at), _aware(heartbeat_at)
        if started is not None:
            age = max(0.0, (at - started).total_seconds())
            oldest = max(oldest, age)
            # started_at is the first attempt's start; each attempt solves for up to its
            # time limit again (resuming from the checkpoint)
            overrun = max(overrun, age - max(1, attempt or 1) * _time_limit(params))
        if beat is not None:
            stalest = max(stalest, (at - beat).total_seconds())
    set_runs_by_state(counts)
    RUN_OLDEST_RUNNING_SECONDS.set(oldest)
    RUN_MAX_OVERRUN_SECONDS.set(overrun)
    RUN_STALEST_HEARTBEAT_SECONDS.set(stalest)
    RUN_GAUGES_REFRESHED.set(at.timestamp())
    return RunGauges(
        by_state=counts,
        oldest_running_seconds=oldest,
        max_overrun_seconds=overrun,
        stalest_heartbeat_seconds=stalest,
    )


def set_leader(leading: bool) -> None:
    """1 while this process holds the maintenance leader lease (call on gain and loss)."""
    LEADER.set(1 if leading else 0)


# ------------------------------------------------------------------ exposition


def render_latest(registry: CollectorRegistry = REGISTRY) -> tuple[bytes, str]:
    """The text exposition of ``registry`` and its content type (for a ``/metrics`` route)."""
    return generate_latest(registry), CONTENT_TYPE_LATEST


MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def exposition_registry() -> CollectorRegistry:
    """What ``/metrics`` of this process shows: :data:`REGISTRY`; or, when this process is
    one of several serving one port (``PROMETHEUS_MULTIPROC_DIR`` set, as
    ``rsched serve --workers N`` sets it before starting them), every such process's
    values read from that directory: counters summed, gauges as their maximum (the
    multiprocess mode each gauge declares). Per-process collectors (CPU, memory) are left
    out there: they would describe whichever process answered."""
    if not os.environ.get(MULTIPROC_ENV):
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return registry


def metrics_app(registry: CollectorRegistry | None = None) -> Any:
    """An ASGI app serving ``registry`` (default :func:`exposition_registry`); mount it at
    ``/metrics``."""
    return make_asgi_app(registry=registry or exposition_registry())


def serve_metrics(
    port: int, addr: str = "0.0.0.0", registry: CollectorRegistry = REGISTRY
) -> tuple[WSGIServer, threading.Thread]:
    """Serve ``registry`` at ``http://addr:port/metrics`` from a daemon thread, for a
    process without an HTTP API (``rsched worker``). ``port=0`` picks a free port
    (``server.server_port``); ``server.shutdown()`` stops it."""
    server, thread = start_http_server(port, addr=addr, registry=registry)
    return server, thread
