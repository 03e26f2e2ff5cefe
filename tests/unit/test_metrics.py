"""Metrics: each recording function changes what /metrics exposes (read back from the
text exposition), the run gauges count real rows, a real worker run records what its
sandboxed child reported, and the shipped alert rules pass promtool."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from rsched import metrics
from rsched.crypto.fields import KEYRING, install_keys, new_key
from rsched.db.base import make_engine, make_sessionmaker
from rsched.db.migrate import upgrade
from rsched.db.models import RunRow
from rsched.domain import RunState, Severity
from rsched.programfile.generator import generate_program
from rsched.rules.registry import ALL_RULES, HARD_RULES
from rsched.rules.report import ValidationReport, validate
from rsched.services import programs
from rsched.services import runs as q
from rsched.services.access import Actor
from rsched.services.control import SqlControlStore
from rsched.solver.control import Progress
from rsched.solver.result import SolveResult, SolveStatus, StopReason
from rsched.worker.runner import WorkerConfig, execute
from tests.unit.builders import assign, mkslot, program, resident

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
ALERT_TESTS = ROOT / "deploy" / "prometheus" / "alerts_test.yml"
RUNBOOK = ROOT / "docs" / "runbook.md"
ADMIN = Actor(user_id="admin", is_admin=True)


def exposed() -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of the text exposition, by name and labels."""
    body, content_type = metrics.render_latest()
    assert content_type.startswith("text/plain")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(body.decode("utf-8"))
        for s in family.samples
    }


def value(name: str, **labels: str) -> float:
    """A sample's value; 0 when the series does not exist yet (a counter not yet used)."""
    return exposed().get((name, frozenset(labels.items())), 0.0)


# ------------------------------------------------------------------ validation


def _broken_report() -> ValidationReport:
    # r1 alone on a slot that needs two (COVERAGE) and on two overlapping slots (NO_OVERLAP)
    data = program(
        people=[resident("r1")],
        slots=[
            mkslot("ICU-1", 0, 7, 12, min_staff=2),
            mkslot("WARD-1", 0, 8, 4),
        ],
    )
    return validate(data, assign(("r1", "ICU-1"), ("r1", "WARD-1")))


def test_validation_counts_breaches_by_rule_and_severity() -> None:
    report = _broken_report()
    found = report.count_by_rule(Severity.VIOLATION)
    assert {"COVERAGE", "NO_OVERLAP"} <= set(found)
    warned = report.count_by_rule(Severity.WARNING)
    rules = set(found) | set(warned) | {"HOURS_80"}
    before = {
        (code, sev): value(
            "scheduler_constraint_violations_total", constraint=code, severity=sev.value
        )
        for code in rules
        for sev in Severity
    }
    metrics.record_validation(report)
    metrics.record_validation(report)
    for (code, sev), was in before.items():
        n = (found if sev is Severity.VIOLATION else warned).get(code, 0)
        now = value("scheduler_constraint_violations_total", constraint=code, severity=sev.value)
        assert now == was + 2 * n, (code, sev)


def test_validation_observes_each_rule_time_in_a_histogram() -> None:
    report = _broken_report()
    assert set(report.seconds_by_rule) == {r.code for r in ALL_RULES}
    name = "scheduler_constraint_evaluation_seconds"
    counts = {c: value(f"{name}_count", constraint=c) for c in report.seconds_by_rule}
    sums = {c: value(f"{name}_sum", constraint=c) for c in report.seconds_by_rule}
    metrics.record_validation(report)
    for code, seconds in report.seconds_by_rule.items():
        assert value(f"{name}_count", constraint=code) == counts[code] + 1
        assert value(f"{name}_sum", constraint=code) == pytest.approx(sums[code] + seconds)
        assert value(f"{name}_bucket", constraint=code, le="+Inf") == counts[code] + 1


def test_satisfaction_rate_is_the_share_of_hard_rules_without_violations() -> None:
    report = _broken_report()
    broken = {v.rule for v in report.violations}
    metrics.record_validation(report)
    expected = 1 - len(broken) / len(HARD_RULES)
    assert 0 < expected < 1
    assert value("scheduler_constraint_satisfaction_rate") == pytest.approx(expected)

    clean = ValidationReport(
        violations=(),
        warnings=(),
        coverage=1.0,
        required_positions=0,
        staffed_positions=0,
        fairness=(),
    )
    metrics.record_validation(clean)
    assert value("scheduler_constraint_satisfaction_rate") == 1.0


# ------------------------------------------------------------------ solver progress


def _progress(solutions: int, iterations: int = 0, objective: float | None = None) -> Progress:
    return Progress(
        elapsed=1.0, solutions=solutions, objective=objective, bound=None, iterations=iterations
    )


def test_progress_adds_only_new_work_per_solve() -> None:
    before = value("scheduler_solver_iterations_total", algorithm="greedy")
    mark = metrics.ProgressMark()
    metrics.record_progress(_progress(1, 40, 900.0), algorithm="greedy", mark=mark)
    metrics.record_progress(_progress(2, 100, 850.0), algorithm="greedy", mark=mark)
    # the sandbox's own "waiting" report repeats solutions but carries no iterations
    metrics.record_progress(_progress(2, 0, 850.0), algorithm="greedy", mark=mark)
    metrics.record_progress(_progress(2, 100, 850.0), algorithm="greedy", mark=mark)
    assert value("scheduler_solver_iterations_total", algorithm="greedy") == before + 100
    # a second solve has its own mark
    metrics.record_progress(_progress(0, 30), algorithm="greedy", mark=metrics.ProgressMark())
    assert value("scheduler_solver_iterations_total", algorithm="greedy") == before + 130


def test_progress_counts_solutions_when_the_solver_reports_no_iterations() -> None:
    before = value("scheduler_solver_iterations_total", algorithm="cp_sat")
    mark = metrics.ProgressMark()
    for n in (0, 1, 1, 3, 4):
        metrics.record_progress(_progress(n), algorithm="cp_sat", mark=mark)
    assert value("scheduler_solver_iterations_total", algorithm="cp_sat") == before + 4


def test_a_finished_solve_adds_the_solutions_no_progress_carried() -> None:
    before = value("scheduler_solver_iterations_total", algorithm="cp_sat")
    mark = metrics.ProgressMark()
    metrics.record_progress(_progress(2), algorithm="cp_sat", mark=mark)
    result = _result(StopReason.COMPLETED)  # 1 solution: already counted
    metrics.record_final_work(result, algorithm="cp_sat", mark=mark)
    assert value("scheduler_solver_iterations_total", algorithm="cp_sat") == before + 2
    fast = metrics.ProgressMark()  # a solve that ended before its first report
    metrics.record_final_work(result, algorithm="cp_sat", mark=fast)
    assert value("scheduler_solver_iterations_total", algorithm="cp_sat") == before + 3


def test_best_score_is_kept_per_algorithm_and_not_cleared_by_an_unknown_objective() -> None:
    mark = metrics.ProgressMark()
    metrics.record_progress(_progress(1, objective=120.0), algorithm="mip", mark=mark)
    metrics.record_progress(_progress(1, objective=None), algorithm="mip", mark=mark)
    metrics.record_best_score("cp_sat", 75.0)
    assert value("scheduler_solver_best_score", algorithm="mip") == 120.0
    assert value("scheduler_solver_best_score", algorithm="cp_sat") == 75.0


def test_aborts_are_counted_by_reason_from_a_fixed_set() -> None:
    # every reason is exposed from the start, so rate() sees the first abort
    for reason in metrics.AbortReason:
        assert ("scheduler_solver_abort_total", frozenset({("reason", reason.value)})) in exposed()
    before = value("scheduler_solver_abort_total", reason="lease_lost")
    metrics.record_abort(metrics.AbortReason.LEASE_LOST)
    metrics.record_abort(metrics.AbortReason("lease_lost"))
    assert value("scheduler_solver_abort_total", reason="lease_lost") == before + 2
    with pytest.raises(ValueError):
        metrics.record_abort("cosmic ray")  # type: ignore[arg-type]


def _result(stop: StopReason) -> SolveResult:
    return SolveResult(
        algorithm="cp_sat",
        status=SolveStatus.FEASIBLE,
        stop_reason=stop,
        assignments=(),
        objective=1.0,
        bound=None,
        time_to_first=None,
        solutions=1,
        wall_seconds=1.0,
    )


@pytest.mark.parametrize(
    ("stop", "lease_lost", "requested", "expected"),
    [
        (StopReason.COMPLETED, False, None, None),
        (StopReason.TIME_LIMIT, False, None, metrics.AbortReason.TIME_LIMIT),
        (StopReason.RESOURCE_LIMIT, False, None, metrics.AbortReason.RESOURCE_LIMIT),
        (StopReason.ABORTED, False, "coordinator changed the rules", metrics.AbortReason.USER),
        (StopReason.ABORTED, False, "shutdown: SIGTERM", metrics.AbortReason.SHUTDOWN),
        (StopReason.ABORTED, True, "anything", metrics.AbortReason.LEASE_LOST),
        (None, True, None, metrics.AbortReason.LEASE_LOST),
        (None, False, None, None),
    ],
)
def test_how_a_solve_ended_is_classified(
    stop: StopReason | None,
    lease_lost: bool,
    requested: str | None,
    expected: metrics.AbortReason | None,
) -> None:
    result = None if stop is None else _result(stop)
    assert metrics.abort_reason_of(result, lease_lost=lease_lost, requested=requested) == expected


# ------------------------------------------------------------------ runs, leader, exposition


def test_runs_by_state_sets_every_state() -> None:
    metrics.set_runs_by_state({"queued": 3, "running": 2})
    assert value("scheduler_runs", state="queued") == 3
    assert value("scheduler_runs", state="running") == 2
    metrics.set_runs_by_state({"failed": 1})
    assert value("scheduler_runs", state="queued") == 0
    assert value("scheduler_runs", state="failed") == 1
    with pytest.raises(ValueError, match="paused"):
        metrics.set_runs_by_state({"paused": 1})


def test_leader_gauge() -> None:
    metrics.set_leader(True)
    assert value("scheduler_leader") == 1
    metrics.set_leader(False)
    assert value("scheduler_leader") == 0


def test_metrics_app_serves_the_registry() -> None:
    metrics.set_leader(True)
    try:
        response = TestClient(metrics.metrics_app()).get("/")
    finally:
        metrics.set_leader(False)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert "scheduler_leader 1.0" in response.text


def test_serve_metrics_answers_on_its_own_port() -> None:
    server, thread = metrics.serve_metrics(0, addr="127.0.0.1")
    try:
        url = f"http://127.0.0.1:{server.server_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            body = response.read().decode("utf-8")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    assert "# TYPE scheduler_leader gauge" in body


def test_every_metric_the_alerts_use_is_exported() -> None:
    rules = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    exprs = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    used = {m for e in exprs for m in re.findall(r"\bscheduler_[a-z_]+", e)}
    assert used
    body = metrics.render_latest()[0].decode("utf-8")
    families = {
        f"{f.name}_total" if f.type == "counter" else f.name
        for f in text_string_to_metric_families(body)
    }
    assert used <= families, used - families


def test_every_alert_has_a_runbook_section() -> None:
    rules = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    alerts = {r["alert"]: r for g in rules["groups"] for r in g["rules"]}
    assert {"SchedulerRollbackRateHigh", "SchedulerRunStuck", "SchedulerNoLeader"} <= set(alerts)
    headings = {
        re.sub(r"[^a-z0-9 -]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        for line in RUNBOOK.read_text(encoding="utf-8").splitlines()
        if line.startswith("## ")
    }
    for name, rule in alerts.items():
        anchor = rule["annotations"]["runbook_url"].split("#", 1)[1]
        assert anchor == name.lower() and anchor in headings, name
        assert rule["labels"]["severity"] in {"critical", "warning"}


# ------------------------------------------------------------------ real rows, real runs


@pytest.fixture
def factory(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    url = f"sqlite:///{tmp_path / 'metrics.db'}"
    upgrade(url)
    engine = make_engine(url)
    saved = (KEYRING.multi, KEYRING.newest)
    install_keys([new_key()])
    try:
        yield make_sessionmaker(engine)
    finally:
        KEYRING.multi, KEYRING.newest = saved
        engine.dispose()


def _program(factory: sessionmaker[Session]) -> str:
    with factory() as s, s.begin():
        return programs.import_program(s, actor=ADMIN, mapping=generate_program("small", 1))


def _run(factory: sessionmaker[Session], pid: str, key: str, **params: object) -> str:
    with factory() as s, s.begin():
        run, _ = q.create_run(s, actor=ADMIN, program_id=pid, idempotency_key=key, params=params)
        return run.id


def test_run_gauges_count_rows_of_the_runs_table(factory: sessionmaker[Session]) -> None:
    pid = _program(factory)
    for i in range(3):
        _run(factory, pid, f"queued-run-{i}", time_limit=60)
    with factory() as s, s.begin():
        q.request_abort(s, actor=ADMIN, run_id=_run(factory, pid, "aborted-run"), reason="no")
    # two running runs: one started 10 min ago on attempt 1 with a 60 s limit (overdue by
    # 540 s) and a fresh heartbeat; one started 2 min ago whose heartbeat is 100 s old
    now = datetime.now(UTC)
    claims = []
    for _ in range(2):
        with factory() as s, s.begin():
            claim = q.claim_next(s, owner="w1", lease_seconds=30)
            assert claim is not None
            claims.append(claim)
    with factory() as s, s.begin():
        for claim, started, beat in (
            (claims[0], now - timedelta(minutes=10), now - timedelta(seconds=2)),
            (claims[1], now - timedelta(minutes=2), now - timedelta(seconds=100)),
        ):
            s.execute(
                update(RunRow)
                .where(RunRow.id == claim.run_id)
                .values(started_at=started, heartbeat_at=beat)
            )

    with factory() as s:
        got = metrics.refresh_run_gauges(s, now=now)
    assert got.by_state == {"queued": 1, "running": 2, "aborted": 1}
    assert value("scheduler_runs", state="queued") == 1
    assert value("scheduler_runs", state="running") == 2
    assert value("scheduler_runs", state="aborted") == 1
    assert value("scheduler_runs", state="succeeded") == 0
    assert value("scheduler_run_oldest_running_seconds") == pytest.approx(600)
    assert value("scheduler_run_max_overrun_seconds") == pytest.approx(540)
    assert value("scheduler_run_stalest_heartbeat_seconds") == pytest.approx(100)
    assert value("scheduler_run_gauges_refreshed_timestamp_seconds") == pytest.approx(
        now.timestamp()
    )

    # a later attempt has a solve budget of its own: attempt 2 x 60 s
    with factory() as s, s.begin():
        s.execute(update(RunRow).where(RunRow.id == claims[0].run_id).values(attempt=2))
    with factory() as s:
        assert metrics.refresh_run_gauges(s, now=now).max_overrun_seconds == pytest.approx(480)

    # nothing running: the run gauges fall back to 0
    with factory() as s, s.begin():
        s.execute(
            update(RunRow)
            .where(RunRow.state == RunState.RUNNING.value)
            .values(state=RunState.FAILED.value)
        )
    with factory() as s:
        metrics.refresh_run_gauges(s)
    assert value("scheduler_runs", state="running") == 0
    assert value("scheduler_runs", state="failed") == 2
    assert value("scheduler_run_oldest_running_seconds") == 0
    assert value("scheduler_run_max_overrun_seconds") == 0
    assert value("scheduler_run_stalest_heartbeat_seconds") == 0


@pytest.mark.slow
def test_a_worker_run_records_what_the_child_reported(factory: sessionmaker[Session]) -> None:
    pid = _program(factory)
    _run(factory, pid, "metrics-worker-run", time_limit=10)
    with factory() as s, s.begin():
        claim = q.claim_next(s, owner="w1", lease_seconds=30)
    assert claim is not None and claim.algorithm == "cp_sat"
    hist = "scheduler_constraint_evaluation_seconds_count"
    iterations = value("scheduler_solver_iterations_total", algorithm="cp_sat")
    evaluated = value(hist, constraint="HOURS_80")
    aborts = {r: value("scheduler_solver_abort_total", reason=r.value) for r in metrics.AbortReason}
    metrics.record_best_score("cp_sat", -1.0)

    outcome = execute(factory, SqlControlStore(factory), claim, WorkerConfig(heartbeat_seconds=1))

    assert outcome.state == "succeeded" and outcome.version_id is not None
    with factory() as s:
        row = s.get(RunRow, claim.run_id)
        assert row is not None
        stop_reason, objective = row.stop_reason, row.best_objective
    assert value("scheduler_solver_iterations_total", algorithm="cp_sat") > iterations
    assert value(hist, constraint="HOURS_80") == evaluated + 1
    assert value("scheduler_constraint_satisfaction_rate") == 1.0
    best = value("scheduler_solver_best_score", algorithm="cp_sat")
    assert best >= 0 and (objective is None or best == pytest.approx(objective))
    expected = {"time_limit": metrics.AbortReason.TIME_LIMIT}.get(stop_reason or "")
    for reason, was in aborts.items():
        now = value("scheduler_solver_abort_total", reason=reason.value)
        assert now == was + (1 if reason is expected else 0), reason


class _WatchingStore(SqlControlStore):
    """The real control store, noting what /metrics said as each progress was published
    (the runner records a progress before it publishes it)."""

    def __init__(self, factory: sessionmaker[Session]) -> None:
        super().__init__(factory)
        self.seen: list[tuple[dict[str, Any], float, float]] = []

    def publish_progress(self, run_id: str, progress: dict[str, Any]) -> None:
        self.seen.append(
            (
                dict(progress),
                value("scheduler_solver_iterations_total", algorithm="cp_sat"),
                value("scheduler_solver_best_score", algorithm="cp_sat"),
            )
        )
        super().publish_progress(run_id, progress)


@pytest.mark.slow
def test_progress_is_recorded_while_the_solve_runs(factory: sessionmaker[Session]) -> None:
    # medium: CP-SAT finds several schedules within seconds, reported as progress
    with factory() as s, s.begin():
        pid = programs.import_program(s, actor=ADMIN, mapping=generate_program("medium", 1))
    _run(factory, pid, "metrics-progress", time_limit=5)
    with factory() as s, s.begin():
        claim = q.claim_next(s, owner="w1", lease_seconds=30)
    assert claim is not None
    store = _WatchingStore(factory)
    before = value("scheduler_solver_iterations_total", algorithm="cp_sat")

    execute(factory, store, claim, WorkerConfig(heartbeat_seconds=1))

    with_schedules = [seen for seen in store.seen if seen[0]["solutions"] >= 1]
    assert with_schedules, [seen[0] for seen in store.seen]
    for progress, iterations, best in with_schedules:
        assert iterations >= before + progress["solutions"]
        if progress["objective"] is not None:
            assert best == progress["objective"]


@pytest.mark.slow
def test_a_run_stopped_by_its_time_limit_counts_as_such(factory: sessionmaker[Session]) -> None:
    with factory() as s, s.begin():
        pid = programs.import_program(s, actor=ADMIN, mapping=generate_program("large", 1))
    _run(factory, pid, "metrics-time-limit", time_limit=1)
    with factory() as s, s.begin():
        claim = q.claim_next(s, owner="w1", lease_seconds=30)
    assert claim is not None
    before = value("scheduler_solver_abort_total", reason="time_limit")

    execute(factory, SqlControlStore(factory), claim, WorkerConfig(heartbeat_seconds=1))

    with factory() as s:
        row = s.get(RunRow, claim.run_id)
        assert row is not None and row.stop_reason == "time_limit"
    assert value("scheduler_solver_abort_total", reason="time_limit") == before + 1


@pytest.mark.slow
def test_a_lost_lease_counts_and_its_result_is_not_validated_into_metrics(
    factory: sessionmaker[Session],
) -> None:
    pid = _program(factory)
    _run(factory, pid, "metrics-lease-lost", time_limit=60)
    with factory() as s, s.begin():
        claim = q.claim_next(s, owner="w1", lease_seconds=30)
    assert claim is not None
    # another attempt takes the run over: the first heartbeat is fenced, the solve stops
    with factory() as s, s.begin():
        s.execute(update(RunRow).where(RunRow.id == claim.run_id).values(attempt=claim.attempt + 1))
    lost = value("scheduler_solver_abort_total", reason="lease_lost")
    user = value("scheduler_solver_abort_total", reason="user")
    evaluated = value("scheduler_constraint_evaluation_seconds_count", constraint="HOURS_80")

    outcome = execute(factory, SqlControlStore(factory), claim, WorkerConfig(heartbeat_seconds=1))

    assert outcome.fenced
    assert value("scheduler_solver_abort_total", reason="lease_lost") == lost + 1
    assert value("scheduler_solver_abort_total", reason="user") == user
    assert (
        value("scheduler_constraint_evaluation_seconds_count", constraint="HOURS_80") == evaluated
    )


@pytest.mark.slow
def test_a_result_fenced_at_the_last_step_is_not_validated_into_metrics(
    factory: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    pid = _program(factory)
    _run(factory, pid, "metrics-fenced-at-end", time_limit=10)
    with factory() as s, s.begin():
        claim = q.claim_next(s, owner="w1", lease_seconds=30)
    assert claim is not None

    def lost(session: Session, claim: q.Claim) -> None:
        raise q.Fenced("another attempt took the run just before the result was stored")

    monkeypatch.setattr(q, "check_fence", lost)
    evaluated = value("scheduler_constraint_evaluation_seconds_count", constraint="HOURS_80")

    outcome = execute(factory, SqlControlStore(factory), claim, WorkerConfig(heartbeat_seconds=1))

    assert outcome.fenced and "before the result was stored" in outcome.note
    assert (
        value("scheduler_constraint_evaluation_seconds_count", constraint="HOURS_80") == evaluated
    )


# ------------------------------------------------------------------ promtool


def _promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        if os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}:
            pytest.fail(
                "promtool is required in CI (Debian package 'prometheus'; .ci/run installs it)",
                pytrace=False,
            )
        pytest.skip("promtool not on PATH: apt-get install prometheus to check the alert rules")
    return found


def test_promtool_checks_the_alert_rules() -> None:
    done = subprocess.run(
        [_promtool(), "check", "rules", str(ALERTS)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_promtool_unit_tests_of_the_alerts_pass() -> None:
    done = subprocess.run(
        [_promtool(), "test", "rules", str(ALERT_TESTS)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=ALERT_TESTS.parent,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout
