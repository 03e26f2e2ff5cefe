"""Runs, the event stream and ops over HTTP, on SQLite and PostgreSQL: a real solve by a
worker inside the test process, followed live and aborted through the API (the abort
latency is printed: run with ``-s`` to see it), idempotent creation behind the backup
guard, refusals (foreign run, finished run, malformed key, unknown mode, bad approval
tokens) that are audited and change nothing, sitrep figures checked against counts made
in the database, fix-it's exact dry run, the rate limits, /metrics, the CLI's
``runs watch`` against a real server, and ``rsched serve``'s in-process worker."""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update
from sqlalchemy.engine import Engine

from rsched.cli import serve_cmd, worker_cmd
from rsched.config import Settings
from rsched.crypto.fields import KEYRING
from rsched.db.base import transaction
from rsched.db.models import (
    ApprovalRow,
    AuditRow,
    BackupRow,
    LeaseRow,
    RunRow,
    ScheduleVersionRow,
)
from rsched.domain import RunState
from rsched.programfile.generator import generate_program
from rsched.services import ops, programs, runs
from rsched.services.control import SqlControlStore
from rsched.worker.process import start_threads
from rsched.worker.runner import WorkerConfig
from tests.integration.api_support import (
    SETUP,
    World,
    populated,
    table_checksums,
    unique,
)

Served = tuple[World, TestClient]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    url: str = request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url")
    with populated(url, tmp_path_factory.mktemp("runs-api")) as pair:
        yield pair


def _engine(world: World) -> Engine:
    engine: Engine = world.factory.kw["bind"]
    return engine


def _h(world: World, who: str) -> dict[str, str]:
    return world.principals[who].headers()


def _row(world: World, run_id: str) -> RunRow:
    with world.factory() as s:
        row = s.get(RunRow, run_id)
        assert row is not None
        return row


def _audit(world: World, action: str, **where: Any) -> list[AuditRow]:
    with world.factory() as s:
        stmt = select(AuditRow).where(AuditRow.action == action)
        for name, value in where.items():
            stmt = stmt.where(getattr(AuditRow, name) == value)
        return list(s.scalars(stmt.order_by(AuditRow.id)))


def _queued(world: World, key: str = "A") -> str:
    with transaction(world.factory) as s:
        run, _ = runs.create_run(
            s, actor=SETUP, program_id=world.programs[key].id, idempotency_key=unique("queued")
        )
        return run.id


def _events(text: str) -> list[tuple[str, dict[str, Any]]]:
    return list(worker_cmd.sse_events(text.splitlines()))


def _without_audit(engine: Engine) -> dict[str, str]:
    sums = table_checksums(engine)
    sums.pop("audit_log")
    return sums


# ------------------------------------------------------------- a real solve, live


def test_a_real_solve_streams_progress_and_aborts_within_a_second(served: Served) -> None:
    """A worker in this process solves a run queued through the API; the event stream
    delivers its progress and an end event; POST /runs/{id}/abort stops it and the best
    schedule is stored as a draft. The latency is printed (-s)."""
    world, client = served
    db = _engine(world).dialect.name
    # the large program is far from proved optimal after a few seconds: the abort lands
    mapping = generate_program("large", 1)
    mapping["program"]["id"] = pid = f"prog-large-{db}"
    with transaction(world.factory) as s:
        programs.import_program(s, actor=SETUP, mapping=mapping)
        for leftover in s.scalars(select(RunRow.id).where(RunRow.state == "queued")).all():
            runs.request_abort(s, actor=SETUP, run_id=leftover, reason="clean queue for the test")
    admin = _h(world, "admin")
    stop = threading.Event()
    threads = start_threads(
        world.factory,
        SqlControlStore(world.factory),
        stop,
        cfg=WorkerConfig(heartbeat_seconds=1, lease_seconds=10),
        concurrency=1,
        leader_ttl=5,
    )
    try:
        created = client.post(
            f"/programs/{pid}/runs",
            json={"time_limit": 300},
            headers={**admin, "Idempotency-Key": unique("live-run")},
        )
        assert created.status_code == 201, created.text
        run_id = created.json()["id"]

        streamed: dict[str, Any] = {}

        def follow() -> None:
            response = client.get(f"/runs/{run_id}/events", headers=admin)
            streamed["status"] = response.status_code
            streamed["type"] = response.headers.get("content-type", "")
            streamed["text"] = response.text

        follower = threading.Thread(target=follow, daemon=True)
        follower.start()

        deadline = time.monotonic() + 120
        progress: dict[str, Any] = {}
        while time.monotonic() < deadline:
            progress = client.get(f"/runs/{run_id}/progress", headers=admin).json()
            if (progress.get("progress") or {}).get("solutions", 0) >= 1:
                break
            time.sleep(0.1)
        assert progress["state"] == "running" and progress["source"] == "control_store"

        t0 = time.perf_counter()
        aborted = client.post(f"/runs/{run_id}/abort", json={"reason": "latency"}, headers=admin)
        answered = time.perf_counter() - t0
        assert aborted.status_code == 200, aborted.text
        row = _row(world, run_id)
        while row.state == "running" and time.perf_counter() - t0 < 30:
            time.sleep(0.02)
            row = _row(world, run_id)
        stored = time.perf_counter() - t0
        follower.join(timeout=30)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)

    assert row.state == "aborted" and row.result_version_id is not None
    assert row.abort_reason == "latency" and row.abort_requested_at and row.finished_at
    recorded = (row.finished_at - row.abort_requested_at).total_seconds()
    print(  # noqa: T201 (the figure quoted in the docs: pytest -s)
        f"\n[{db}] abort through the API: POST answered in {answered * 1000:.0f} ms; "
        f"run row aborted with its draft {stored:.2f} s after the POST "
        f"(abort_requested_at → finished_at {recorded:.2f} s)"
    )
    assert stored < 5.0, "the solve must stop within about a second (generous for CI)"
    with world.factory() as s:
        version = s.get(ScheduleVersionRow, row.result_version_id)
        assert version is not None and version.status == "draft" and version.run_id == run_id
        assert version.report["validation"]["violations"] == 0

    assert streamed["status"] == 200 and streamed["type"].startswith("text/event-stream")
    events = _events(streamed["text"])
    kinds = [kind for kind, _ in events]
    assert kinds[-1] == "end" and kinds.count("end") == 1 and "progress" in kinds
    assert any((d.get("progress") or {}).get("solutions", 0) >= 1 for k, d in events[:-1])
    end = events[-1][1]
    assert end["state"] == "aborted" and end["result_version_id"] == row.result_version_id

    # aborting it again: a clear 409, audited, nothing changed
    again = client.post(f"/runs/{run_id}/abort", json={"reason": "twice"}, headers=admin)
    assert again.status_code == 409 and again.json()["type"] == "urn:rsched:problem:conflict"
    assert _row(world, run_id).abort_reason == "latency"
    refused = _audit(world, "run.abort", target=run_id, outcome="refused")
    assert [a.detail for a in refused] == [{"state": "aborted"}]


# ---------------------------------------------------------------- create, abort


def test_the_same_key_gives_the_same_run_behind_a_backup(served: Served) -> None:
    world, client = served
    pid = world.programs["A"].id
    headers = {**_h(world, "coordinator_a"), "Idempotency-Key": unique("same-key")}
    first = client.post(f"/programs/{pid}/runs", json={"algorithm": "greedy"}, headers=headers)
    second = client.post(f"/programs/{pid}/runs", json={"algorithm": "greedy"}, headers=headers)
    assert (first.status_code, second.status_code) == (201, 200), (first.text, second.text)
    assert first.json()["id"] == second.json()["id"] and first.json()["state"] == "queued"
    with world.factory() as s:
        key = headers["Idempotency-Key"]
        assert s.scalar(select(func.count()).where(RunRow.idempotency_key == key)) == 1
        assert (s.scalar(select(func.count()).select_from(BackupRow)) or 0) >= 1

    before = _without_audit(_engine(world))
    for bad in ("short", "has space", "x" * 129, "key/with/slashes"):
        r = client.post(
            f"/programs/{pid}/runs",
            headers={**_h(world, "coordinator_a"), "Idempotency-Key": bad},
        )
        assert r.status_code == 422, (bad, r.text)
        assert r.json()["errors"][0]["path"].lower() == "header.idempotency-key"
    missing = client.post(f"/programs/{pid}/runs", headers=_h(world, "coordinator_a"))
    assert missing.status_code == 422
    assert _without_audit(_engine(world)) == before


def test_aborts_of_foreign_and_finished_runs_are_refused_and_audited(served: Served) -> None:
    world, client = served
    foreign = _queued(world, "B")
    before = _without_audit(_engine(world))
    r = client.post(
        f"/runs/{foreign}/abort", json={"reason": "x"}, headers=_h(world, "coordinator_a")
    )
    assert r.status_code == 404 and r.json()["type"] == "urn:rsched:problem:not-found"
    finished = world.programs["A"].run
    r = client.post(f"/runs/{finished}/abort", json={"reason": "x"}, headers=_h(world, "admin"))
    assert r.status_code == 409
    r = client.post(
        f"/runs/{_queued(world)}/abort", json={"reason": " "}, headers=_h(world, "admin")
    )
    assert r.status_code == 422
    assert _row(world, foreign).state == "queued"
    user = world.principals["coordinator_a"].user_id
    assert [a.outcome for a in _audit(world, "run.abort", target=foreign, actor=user)] == [
        "refused"
    ]
    assert _audit(world, "run.abort", target=finished, outcome="refused")
    after = _without_audit(_engine(world))
    assert {k for k in before if before[k] != after[k]} == {"runs"}  # the run queued above

    # the coordinator of the run's program aborts a queued run at once
    mine = _queued(world, "A")
    r = client.post(
        f"/runs/{mine}/abort",
        json={"reason": "no longer needed"},
        headers=_h(world, "coordinator_a"),
    )
    assert r.status_code == 200 and r.json()["state"] == "aborted"
    assert _audit(world, "run.abort", target=mine, outcome="ok")


def test_progress_and_the_active_list(served: Served) -> None:
    world, client = served
    run_a, run_b = _queued(world, "A"), _queued(world, "B")

    def active(who: str, **params: str) -> set[str]:
        r = client.get("/runs/active", params=params, headers=_h(world, who))
        assert r.status_code == 200, r.text
        return {x["id"] for x in r.json()}

    assert run_a in active("coordinator_a") and run_b not in active("coordinator_a")
    assert {run_a, run_b} <= active("admin")
    assert active("admin", program_id=world.programs["B"].id) >= {run_b}
    assert run_a not in active("admin", program_id=world.programs["B"].id)
    r = client.get(
        "/runs/active",
        params={"program_id": world.programs["B"].id},
        headers=_h(world, "coordinator_a"),
    )
    assert r.status_code == 404

    r = client.get(f"/runs/{run_a}/progress", headers=_h(world, "resident"))
    assert r.status_code == 200 and r.json()["source"] == "none" and r.json()["progress"] is None
    live = {"elapsed": 2.5, "solutions": 3, "objective": 120.0, "bound": 100.0}
    SqlControlStore(world.factory).publish_progress(run_a, live)
    doc = client.get(f"/runs/{run_a}/progress", headers=_h(world, "coordinator_a")).json()
    assert doc["source"] == "control_store" and doc["progress"] == live
    done = client.get(f"/runs/{world.programs['A'].run}/progress", headers=_h(world, "faculty"))
    assert done.json()["source"] == "database" and done.json()["progress"]["solutions"] == 1
    assert (
        client.get(f"/runs/{run_a}/progress", headers=_h(world, "coordinator_b")).status_code == 404
    )

    # a finished run's stream: its stored progress, then the end, then it closes
    stream = client.get(f"/runs/{world.programs['A'].run}/events", headers=_h(world, "resident"))
    assert [k for k, _ in _events(stream.text)] == ["progress", "end"]
    for run in (run_a, run_b):
        with transaction(world.factory) as s:
            runs.request_abort(s, actor=SETUP, run_id=run, reason="tidy")


# -------------------------------------------------------------------------- sitrep


def _counts(world: World, program_ids: list[str] | None) -> dict[str, int]:
    with world.factory() as s:
        stmt = select(RunRow.state, func.count()).group_by(RunRow.state)
        if program_ids is not None:
            stmt = stmt.where(RunRow.program_id.in_(program_ids))
        found = {state: int(n) for state, n in s.execute(stmt).all()}
    return {state.value: found.get(state.value, 0) for state in RunState}


def _add_run(world: World, key: str, **values: Any) -> str:
    run_id = _queued(world, key)
    with transaction(world.factory) as s:
        s.execute(update(RunRow).where(RunRow.id == run_id).values(**values))
    return run_id


def test_sitrep_figures_are_the_databases(served: Served) -> None:
    world, client = served
    now = datetime.now(UTC)
    a, b = world.programs["A"].id, world.programs["B"].id
    transient = _add_run(
        world,
        "A",
        state="failed",
        attempt=3,
        finished_at=now - timedelta(minutes=5),
        failure_reason="worker lost after 3 attempt(s) (lease expired)",
        failure_transient=True,
    )
    timed_out = _add_run(
        world,
        "B",
        state="failed",
        attempt=1,
        finished_at=now - timedelta(hours=1),
        failure_reason="no schedule found (unknown, time_limit)",
        stop_reason="time_limit",
        failure_transient=True,
    )
    stuck = _add_run(
        world,
        "A",
        state="running",
        attempt=1,
        started_at=now - timedelta(minutes=3),
        heartbeat_at=now - timedelta(minutes=2),
        lease_owner="host-x:1:aaaaaa/0",
        lease_expires_at=now - timedelta(seconds=90),
    )
    alive = _add_run(
        world,
        "B",
        state="running",
        attempt=1,
        started_at=now - timedelta(seconds=20),
        heartbeat_at=now - timedelta(seconds=2),
        lease_owner="host-y:2:bbbbbb/0",
        lease_expires_at=now + timedelta(seconds=28),
    )
    SqlControlStore(world.factory).publish_progress(alive, {"elapsed": 18.0, "solutions": 4})
    summary = {"violations": 2, "warnings": 5, "coverage": 0.9375, "violations_by_rule": {"R1": 2}}
    with transaction(world.factory) as s:
        version = s.get(ScheduleVersionRow, world.programs["B"].active_version)
        assert version is not None
        saved_report = dict(version.report)
        version.report = {"validation": summary}
        lease = s.get(LeaseRow, "maintenance")
        if lease is None:
            s.add(
                LeaseRow(
                    name="maintenance",
                    holder="host-y:2:bbbbbb",
                    epoch=7,
                    expires_at=now + timedelta(seconds=10),
                )
            )
        else:
            lease.holder, lease.epoch, lease.expires_at = (
                "host-y:2:bbbbbb",
                7,
                now + timedelta(seconds=10),
            )
    try:
        before = table_checksums(_engine(world))
        report = client.get("/ops/sitrep", headers=_h(world, "admin"))
        assert report.status_code == 200, report.text
        doc = report.json()
        assert table_checksums(_engine(world)) == before  # a read writes nothing

        assert doc["scope"] == "all" and doc["runs_by_state"] == _counts(world, None)
        with world.factory() as s:
            window = now - ops.FAILURE_WINDOW - timedelta(minutes=1)
            failed = set(
                s.scalars(
                    select(RunRow.id).where(RunRow.state == "failed", RunRow.finished_at > window)
                )
            )
            active_n = s.scalar(select(func.count()).where(RunRow.state.in_(["queued", "running"])))
        assert {f["run_id"] for f in doc["recent_failures"]} == failed
        assert doc["failures_in_window"] == len(failed) and doc["active_runs_total"] == active_n
        by_id = {f["run_id"]: f for f in doc["recent_failures"]}
        assert by_id[transient]["reason"] == "worker lost after 3 attempt(s) (lease expired)"
        assert by_id[transient]["follow_up"] == "retry_transient"
        assert by_id[timed_out]["follow_up"] == "requeue_longer"
        act = {r["run_id"]: r for r in doc["active_runs"]}
        assert act[alive]["progress"] == {"elapsed": 18.0, "solutions": 4}
        assert act[alive]["progress_source"] == "control_store"
        assert act[stuck]["lease_expires_in_seconds"] < -80
        health = doc["health"]
        assert health["database"] == "ok" and health["redis"] == "not configured"
        assert health["control_store"] == "database" and health["control_store_status"] == "ok"
        assert health["running_past_lease"] == 1 and health["running_with_live_lease"] == 1
        assert health["leader"]["live"] and health["leader"]["epoch"] == 7
        assert health["workers_seen"] == 1  # host-y holds the leader lease and a run lease
        prog_b = next(p for p in doc["programs"] if p["program_id"] == b)
        assert (prog_b["coverage"], prog_b["violations"], prog_b["warnings"]) == (0.9375, 2, 5)
        assert prog_b["active_version_id"] == world.programs["B"].active_version
        prog_a = next(p for p in doc["programs"] if p["program_id"] == a)
        assert prog_a["validated"] is False and prog_a["coverage"] is None
        immediate = {(i["kind"], i["program_id"]): i for i in doc["immediate_actions"]}
        assert stuck in immediate[("run_past_lease", a)]["run_ids"]
        assert transient in immediate[("retry_transient", a)]["run_ids"]
        assert immediate[("active_schedule_violations", b)]["count"] == 2
        watch = {(i["kind"], i["program_id"]): i for i in doc["watch_items"]}
        assert timed_out in watch[("requeue_longer", b)]["run_ids"]
        assert ("coverage_below_full", b) in watch and ("active_schedule_unvalidated", a) in watch
        assert ("no_leader", None) not in immediate

        mine = client.get("/ops/sitrep", headers=_h(world, "coordinator_a")).json()
        assert mine["scope"] == "coordinated" and mine["program_ids"] == [a]
        assert mine["runs_by_state"] == _counts(world, [a])
        assert {p["program_id"] for p in mine["programs"]} == {a}
        assert all(f["program_id"] == a for f in mine["recent_failures"])
        assert client.get("/ops/sitrep", headers=_h(world, "resident")).status_code == 403
        assert (
            client.get(
                "/ops/sitrep", params={"program_id": b}, headers=_h(world, "coordinator_a")
            ).status_code
            == 404
        )

        slack = client.get("/ops/sitrep", params={"format": "slack"}, headers=_h(world, "admin"))
        assert slack.status_code == 200
        body = slack.json()
        assert set(body) == {"text", "blocks"} and isinstance(body["text"], str)
        assert 1 <= len(body["blocks"]) <= 50
        assert {blk["type"] for blk in body["blocks"]} <= {"header", "section", "context"}
        for blk in body["blocks"]:
            if blk["type"] == "section":
                assert blk["text"]["type"] == "mrkdwn" and len(blk["text"]["text"]) <= 3000
            if blk["type"] == "header":
                assert blk["text"]["type"] == "plain_text" and len(blk["text"]["text"]) <= 150
        text = json.dumps(body)
        for state, n in doc["runs_by_state"].items():
            assert f"{state} {n}" in text
        assert f"{len(doc['immediate_actions'])} immediate action(s)" in body["text"]
    finally:
        with transaction(world.factory) as s:
            version = s.get(ScheduleVersionRow, world.programs["B"].active_version)
            assert version is not None
            version.report = saved_report
            s.execute(
                update(RunRow)
                .where(RunRow.id.in_([stuck, alive, transient, timed_out]))
                .values(state="aborted")
            )
            s.execute(update(LeaseRow).values(holder=None, expires_at=now))


# -------------------------------------------------------------------------- fix-it


def test_fix_it_dry_run_is_exactly_what_it_does(served: Served) -> None:
    world, client = served
    now = datetime.now(UTC)
    pid = world.programs["A"].id
    recent = now - timedelta(hours=2)
    transient = _add_run(
        world,
        "A",
        state="failed",
        attempt=2,
        finished_at=recent,
        failure_transient=True,
        failure_reason="solver crashed",
    )
    timed_out = _add_run(
        world,
        "A",
        state="failed",
        attempt=1,
        finished_at=recent,
        stop_reason="time_limit",
        failure_transient=True,
        params={"time_limit": 40.0, "workers": 2, "seed": 3},
    )
    hard = _add_run(
        world,
        "A",
        state="failed",
        attempt=1,
        finished_at=recent,
        failure_reason="no schedule found",
    )
    greedy = _add_run(
        world,
        "A",
        state="failed",
        attempt=1,
        finished_at=recent,
        algorithm="greedy",
        failure_reason="no schedule",
    )
    old = _add_run(
        world,
        "A",
        state="failed",
        attempt=1,
        finished_at=now - timedelta(days=10),
        failure_transient=True,
    )
    headers = _h(world, "coordinator_a")

    def call(mode: str, dry_run: bool) -> dict[str, Any]:
        r = client.post(
            "/ops/fix-it",
            json={"program_id": pid, "mode": mode, "dry_run": dry_run},
            headers=headers,
        )
        assert r.status_code == 200, r.text
        doc: dict[str, Any] = r.json()
        return doc

    mine = {transient, timed_out, hard, greedy, old}
    conservative = call("conservative", True)
    planned = {a["source_run_id"]: a for a in conservative["actions"]}
    assert set(planned) & mine == {transient}
    assert planned[transient]["idempotency_key"] == f"fixit:{transient}:2"
    skipped = {s["run_id"]: s["why"] for s in conservative["skipped"]}
    assert "balanced" in skipped[timed_out] and "greedy" in skipped[hard]
    assert old not in skipped and old not in planned

    before = _without_audit(_engine(world))
    plan = call("greedy", True)
    assert _without_audit(_engine(world)) == before, "a dry run changes nothing"
    planned = {a["source_run_id"]: a for a in plan["actions"]}
    assert planned[transient]["action"] == "retry_transient"
    assert planned[timed_out]["action"] == "requeue_longer"
    assert planned[timed_out]["params"] == {"time_limit": 80.0, "workers": 2, "seed": 3}
    assert planned[hard]["action"] == "fallback_greedy" and planned[hard]["algorithm"] == "greedy"
    assert greedy not in planned and old not in planned
    assert all(a["run_id"] is None for a in plan["actions"])

    with world.factory() as s:
        ids_before = set(s.scalars(select(RunRow.id)))
    done = call("greedy", False)
    strip = ("run_id", "created")
    assert [{k: v for k, v in a.items() if k not in strip} for a in done["actions"]] == [
        {k: v for k, v in a.items() if k not in strip} for a in plan["actions"]
    ]
    assert all(a["created"] is True for a in done["actions"])
    with world.factory() as s:
        new = list(s.scalars(select(RunRow).where(RunRow.id.notin_(ids_before))))
    assert {r.id for r in new} == {a["run_id"] for a in done["actions"]}
    by_key = {r.idempotency_key: r for r in new}
    for a in done["actions"]:
        row = by_key[a["idempotency_key"]]
        assert (row.state, row.algorithm, row.params) == ("queued", a["algorithm"], a["params"])

    again = call("greedy", False)
    assert again["actions"] == []
    assert {s["run_id"] for s in again["skipped"]} >= {transient, timed_out, hard}

    r = client.post("/ops/fix-it", json={"program_id": pid, "mode": "yolo"}, headers=headers)
    assert r.status_code == 422 and r.json()["errors"][0]["path"] == "mode"
    r = client.post(
        "/ops/fix-it", json={"program_id": pid, "mode": "greedy", "task": "rm -rf"}, headers=headers
    )
    assert r.status_code == 422
    audited = _audit(world, "ops.fix_it", actor=world.principals["coordinator_a"].user_id)
    assert [a.detail["dry_run"] for a in audited][-4:] == [True, True, False, False]
    with transaction(world.factory) as s:  # out of later tests' way
        s.execute(
            update(RunRow).where(RunRow.state.in_(["queued", "failed"])).values(state="aborted")
        )


# ----------------------------------------------------------------------- approvals


def test_approval_tokens_are_single_use_expiring_and_bound(served: Served) -> None:
    world, client = served
    a, b = world.programs["A"].id, world.programs["B"].id
    coord, admin = _h(world, "coordinator_a"), _h(world, "admin")

    def ask(program: str, action: str = "fix_it") -> dict[str, Any]:
        r = client.post(
            "/ops/approvals",
            json={"program_id": program, "action": action, "target": "plan-1", "reason": "retry"},
            headers=coord if program == a else admin,
        )
        assert r.status_code == 201, r.text
        doc: dict[str, Any] = r.json()
        return doc

    def decide(body: dict[str, Any], headers: dict[str, str] = coord) -> Any:
        return client.post("/ops/approve", json=body, headers=headers)

    ticket = ask(a)
    with world.factory() as s:
        row = s.get(ApprovalRow, ticket["id"])
        assert (
            row is not None
            and row.token_hash == hashlib.sha256(ticket["token"].encode()).hexdigest()
        )
    ok = decide({"program_id": a, "token": ticket["token"], "action": "fix_it"})
    assert ok.status_code == 200 and ok.json()["decision"] == "approved"
    assert decide({"program_id": a, "token": ticket["token"]}).status_code == 403  # used

    late = ask(a)
    with transaction(world.factory) as s:
        s.execute(
            update(ApprovalRow)
            .where(ApprovalRow.id == late["id"])
            .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    assert decide({"program_id": a, "token": late["token"]}).status_code == 403

    elsewhere = ask(b)  # a token of program B, presented for A
    assert decide({"program_id": a, "token": elsewhere["token"]}).status_code == 403
    wrong = ask(a)
    assert (
        decide({"program_id": a, "token": wrong["token"], "action": "rollback"}).status_code == 403
    )
    assert (
        decide({"program_id": b, "token": wrong["token"]}).status_code == 404
    )  # not coordinator_a's

    with world.factory() as s:
        for pending in (late, elsewhere, wrong):
            row = s.get(ApprovalRow, pending["id"])
            assert row is not None and row.decision is None, "a refusal changes nothing"
    user = world.principals["coordinator_a"].user_id
    whys = [
        r.detail.get("why") for r in _audit(world, "approval.decide", actor=user, outcome="refused")
    ]
    for why in (
        "token already used",
        "token expired",
        "token of another program",
        "token is for fix_it, not rollback",
    ):
        assert why in whys
    assert any("not visible" in str(w) for w in whys)


def test_fix_it_and_approve_are_rate_limited(served: Served) -> None:
    world, client = served
    who = world.principals["coordinator_b"]
    since = datetime.now(UTC) - ops.RATE_WINDOW
    with world.factory() as s:
        used = s.scalar(
            select(func.count()).where(
                AuditRow.actor == who.user_id,
                AuditRow.action == "approval.decide",
                AuditRow.at > since,
            )
        )
    body = {"program_id": world.programs["B"].id, "token": "guess"}
    for _ in range(ops.RATE_LIMIT - int(used or 0)):
        assert client.post("/ops/approve", json=body, headers=who.headers()).status_code == 403
    limited = client.post("/ops/approve", json=body, headers=who.headers())
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
    assert limited.json()["type"] == "urn:rsched:problem:rate-limited"
    assert _audit(world, "approval.decide.rate_limited", actor=who.user_id)

    fix = {"program_id": world.programs["B"].id, "mode": "conservative", "dry_run": True}
    codes = [
        client.post("/ops/fix-it", json=fix, headers=who.headers()).status_code
        for _ in range(ops.RATE_LIMIT + 1)
    ]
    assert codes.count(429) >= 1 and set(codes) <= {200, 429} and codes[-1] == 429
    assert _audit(world, "ops.fix_it.rate_limited", actor=who.user_id)


# ------------------------------------------------------------------ metrics, CLI


def test_metrics_need_no_login_and_carry_no_tenant_data(served: Served) -> None:
    world, client = served
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    assert "scheduler_runs" in r.text and "scheduler_solver_abort_total" in r.text
    for program in world.programs.values():
        assert program.id not in r.text and program.run not in r.text


@pytest.fixture
def live_server(served: Served) -> Iterator[tuple[str, uvicorn.Server]]:
    """The served app on a real socket (uvicorn in a thread), for HTTP clients."""
    _world, client = served
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(client.app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}", server
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def test_runs_watch_follows_the_stream(
    served: Served, live_server: tuple[str, uvicorn.Server], capsys: pytest.CaptureFixture[str]
) -> None:
    import httpx

    world, _client = served
    url, server = live_server
    token = world.principals["resident"].token

    def watch(run_id: str, token: str | None) -> int:
        return worker_cmd.cmd_runs_watch(argparse.Namespace(run_id=run_id, url=url, token=token))

    assert watch(world.programs["A"].run, token) == 0
    assert f"run {world.programs['A'].run} succeeded" in capsys.readouterr().out
    assert watch(world.programs["A"].run, "not-a-token") == worker_cmd.EXIT_FAILURE
    assert watch(world.programs["B"].run, token) == worker_cmd.EXIT_FAILURE  # not theirs: 404

    # a client that leaves: the stream of a queued run (which never ends) closes with it
    closed: list[str] = []

    class Closed(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage().startswith("event stream closed"):
                closed.append(record.getMessage())

    api_log = logging.getLogger("rsched.api")
    handler, level = Closed(), api_log.level
    api_log.addHandler(handler)
    api_log.setLevel(logging.INFO)
    try:
        queued = _queued(world)
        with (
            httpx.Client(base_url=url, headers=world.principals["admin"].headers()) as http,
            http.stream("GET", f"/runs/{queued}/events") as response,
        ):
            assert response.status_code == 200
            lines = response.iter_lines()  # kept: a dropped iterator closes the connection
            assert next(lines) == "retry: 2000"
            time.sleep(1.2)
            assert closed == []  # still streaming (polling every 0.5 s)
        deadline = time.monotonic() + 5
        while not closed and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        api_log.removeHandler(handler)
        api_log.setLevel(level)
    assert closed == ["event stream closed: the client left"]
    assert not server.server_state.tasks


# ------------------------------------------------------- the embedded worker of serve


def test_serve_runs_a_worker_in_process_on_the_embedded_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(env="development", data_dir=tmp_path / "data")
    monkeypatch.setattr("rsched.config.get_settings", lambda: settings)
    seen: dict[str, Any] = {}

    def fake_uvicorn_run(app: Any, **_kw: Any) -> None:
        """Instead of serving: queue a run and wait for the in-process worker to solve it."""
        seen["threads"] = {t.name for t in threading.enumerate()}
        factory = app.state.sessionmaker
        mapping = generate_program("small", 1)
        with transaction(factory) as s:
            pid = programs.import_program(s, actor=SETUP, mapping=mapping)
        with transaction(factory) as s:
            run, _ = runs.create_run(
                s,
                actor=SETUP,
                program_id=pid,
                idempotency_key="serve-run-1",
                params={"time_limit": 10},
            )
        deadline = time.monotonic() + 60
        state = "queued"
        while state in ("queued", "running") and time.monotonic() < deadline:
            time.sleep(0.2)
            with factory() as s:
                state = s.scalar(select(RunRow.state).where(RunRow.id == run.id)) or "gone"
        seen["state"] = state
        app.state.engine.dispose()

    monkeypatch.setattr(uvicorn, "run", fake_uvicorn_run)
    saved = (KEYRING.multi, KEYRING.newest)
    loggers = [logging.getLogger(n) for n in ("rsched", "uvicorn", "uvicorn.error")]
    logging_state = [(lg, lg.handlers[:], lg.level, lg.propagate) for lg in loggers]
    args = argparse.Namespace(
        host="127.0.0.1", port=0, log_level="warning", migrate=False, no_worker=False, workers=1
    )
    try:
        assert serve_cmd.cmd_serve(args) == 0
        assert {"rsched-worker-0", "rsched-leader"} <= seen["threads"]
        assert seen["state"] == "succeeded"
        assert not {"rsched-worker-0", "rsched-leader"} & {t.name for t in threading.enumerate()}

        monkeypatch.setattr(
            uvicorn,
            "run",
            lambda app, **_kw: seen.update(bare={t.name for t in threading.enumerate()}),
        )
        args.no_worker = True
        assert serve_cmd.cmd_serve(args) == 0
        assert "rsched-worker-0" not in seen["bare"]
    finally:
        KEYRING.multi, KEYRING.newest = saved
        for lg, handlers, level, propagate in logging_state:  # serve configures logging
            lg.handlers[:], lg.level, lg.propagate = handlers, level, propagate
