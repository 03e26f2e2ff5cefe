"""Worker processes and the maintenance leader, for real.

- The leader lease on SQLite and PostgreSQL: racing contenders elect exactly one holder;
  a follower takes over with the next epoch once the holder stops renewing; a write
  fenced with an old epoch raises NotLeader and changes nothing; a take-over waits for
  the old leader's fenced transaction to end.
- The maintenance pass: what it deletes and what it keeps.
- Two `rsched worker` processes on one PostgreSQL database: exactly one leads; `kill -9`
  of the leader, and the other takes over within the leader ttl (the failover time is
  printed).
- `kill -9` of the worker solving a run, once a checkpoint is in the database: the other
  worker claims the run as attempt 2, resumes from the checkpoint and stores exactly one
  result; the killed worker's solver child is gone too (the recovery time is printed).
- The `runs` commands and `rsched worker --once` on the embedded SQLite default.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from rsched.cli.main import main as cli_main
from rsched.config import get_settings
from rsched.db.base import make_engine, make_sessionmaker
from rsched.db.models import (
    AuditRow,
    ControlRow,
    FeedTokenRow,
    LeaseRow,
    PersonRow,
    RefreshTokenRow,
    RunCheckpointRow,
    RunRow,
    ScheduleVersionRow,
    UserRow,
)
from rsched.programfile.generator import generate_program
from rsched.services import programs
from rsched.services import runs as q
from rsched.services.access import Actor
from rsched.services.control import SqlControlStore
from rsched.services.leader import LeaderLease, NotLeader, current_lease
from rsched.worker.maintenance import maintenance_tick

ADMIN = Actor(user_id="admin", is_admin=True)
T = TypeVar("T")

RSCHED = (sys.executable, "-m", "rsched.cli.main")
LEADER_TTL = 4.0
RUN_LEASE = 4.0


def wait_for(what: str, probe: Callable[[], T | None], timeout: float, every: float = 0.05) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(every)


# ------------------------------------------------------------------ the leader lease


def test_racing_contenders_elect_exactly_one_leader(
    session_factory: sessionmaker[Session],
) -> None:
    def race(leases: list[LeaderLease]) -> list[int | None]:
        start = threading.Barrier(len(leases))
        got: list[int | None] = [None] * len(leases)

        def contend(i: int) -> None:
            start.wait()
            got[i] = leases[i].try_acquire()

        threads = [threading.Thread(target=contend, args=(i,)) for i in range(len(leases))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return got

    # the row does not exist yet: every contender tries to create it
    first = [LeaderLease(session_factory, holder=f"c{i}", ttl=30) for i in range(6)]
    got = race(first)
    assert sorted(got, key=lambda e: e or 0) == [None] * 5 + [1]
    winner = first[[e is not None for e in got].index(True)]
    row = current_lease(session_factory)
    assert row is not None and (row.holder, row.epoch) == (winner.holder, 1)

    # the lease expired: every contender races to take it over, one wins epoch 2
    with session_factory() as s, s.begin():
        s.execute(update(LeaseRow).values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    second = [LeaderLease(session_factory, holder=f"d{i}", ttl=30) for i in range(6)]
    got = race(second)
    assert sorted(got, key=lambda e: e or 0) == [None] * 5 + [2]
    assert winner.renew() is False and winner.epoch is None


def test_follower_takes_over_with_the_next_epoch_and_the_old_leader_is_fenced(
    session_factory: sessionmaker[Session],
) -> None:
    ttl = 1.5
    old = LeaderLease(session_factory, holder="old", ttl=ttl)
    new = LeaderLease(session_factory, holder="new", ttl=ttl)
    assert old.try_acquire() == 1
    assert new.try_acquire() is None
    assert old.renew() and old.try_acquire() == 1  # taking it again as its holder: same epoch
    renewed_at = time.monotonic()
    assert new.try_acquire() is None

    # the old leader stops renewing (paused, partitioned): the follower takes over
    epoch = wait_for("the take-over", new.try_acquire, timeout=ttl + 2)
    took = time.monotonic() - renewed_at
    assert epoch == 2 and ttl - 0.2 <= took <= ttl + 1.0

    # the old leader wakes up still believing it leads: every fenced write fails
    assert old.epoch == 1
    with pytest.raises(NotLeader, match="now held by new"):
        with session_factory() as s, s.begin():
            old.fenced(s)
            s.add(ControlRow(key="written-by-old", value={}, expires_at=datetime.now(UTC)))
    with session_factory() as s:
        assert s.get(ControlRow, "written-by-old") is None
    assert old.renew() is False and old.epoch is None
    with session_factory() as s, s.begin():
        assert new.fenced(s) == 2

    # a clean release lets the next holder in at once, with a new epoch
    new.release()
    assert old.try_acquire() == 3


def test_a_take_over_waits_for_the_old_leaders_fenced_transaction(
    session_factory: sessionmaker[Session],
) -> None:
    old = LeaderLease(session_factory, holder="old", ttl=1.0)
    new = LeaderLease(session_factory, holder="new", ttl=30)
    assert old.try_acquire() == 1
    acquired: list[tuple[int | None, float]] = []
    with session_factory() as s, s.begin():
        old.fenced(s)  # locks the lease row (PostgreSQL) / the database (SQLite)
        time.sleep(1.2)  # the lease expires while the fenced transaction is open
        taker = threading.Thread(
            target=lambda: acquired.append((new.try_acquire(), time.monotonic()))
        )
        taker.start()
        time.sleep(0.5)
        assert not acquired, "the take-over did not wait for the fenced transaction"
        s.add(ControlRow(key="last-write-of-epoch-1", value={}, expires_at=datetime.now(UTC)))
        committing = time.monotonic()
    taker.join(timeout=10)
    assert acquired and acquired[0][0] == 2 and acquired[0][1] >= committing
    with session_factory() as s:
        assert s.get(ControlRow, "last-write-of-epoch-1") is not None


# ---------------------------------------------------------------- the maintenance pass


@pytest.fixture
def small_program(session_factory: sessionmaker[Session], fernet_keys: list[str]) -> str:
    with session_factory() as s, s.begin():
        return programs.import_program(s, actor=ADMIN, mapping=generate_program("small", 1))


def _run(s: Session, pid: str, key: str, **values: object) -> str:
    run, _ = q.create_run(s, actor=ADMIN, program_id=pid, idempotency_key=key)
    s.execute(update(RunRow).where(RunRow.id == run.id).values(**values))
    for objective in (3.0, 2.0):
        s.add(
            RunCheckpointRow(
                run_id=run.id,
                program_id=pid,
                attempt=1,
                objective=objective,
                sha256="0" * 64,
                content="{}",
                created_at=datetime.now(UTC),
            )
        )
    return run.id


def test_maintenance_pass_reaps_expires_and_cleans_up_only_what_is_due(
    session_factory: sessionmaker[Session], small_program: str
) -> None:
    now = datetime.now(UTC)
    with session_factory() as s, s.begin():
        person = s.scalars(
            select(PersonRow.id).where(PersonRow.program_id == small_program)
        ).first()
        s.add(UserRow(id="u1", email="u1@example.org", password_hash="x", created_at=now))
        s.flush()
        for name, expires in (("expired", now - timedelta(hours=1)), ("live", now + timedelta(1))):
            s.add(
                RefreshTokenRow(
                    id=name, user_id="u1", family="f", token_hash=name * 4, expires_at=expires
                )
            )
        for name, revoked in (
            ("revoked-long-ago", now - timedelta(days=31)),
            ("revoked-lately", now - timedelta(days=5)),
            ("live", None),
        ):
            s.add(
                FeedTokenRow(
                    id=name,
                    program_id=small_program,
                    person_id=person,
                    token_hash=name,
                    created_at=now - timedelta(days=60),
                    revoked_at=revoked,
                )
            )
        s.add(ControlRow(key="progress:old", value={}, expires_at=now - timedelta(seconds=1)))
        s.add(ControlRow(key="progress:live", value={}, expires_at=now + timedelta(hours=1)))
        old_run = _run(
            s, small_program, "finished-8d", state="succeeded", finished_at=now - timedelta(8)
        )
        recent_run = _run(
            s, small_program, "finished-1d", state="failed", finished_at=now - timedelta(1)
        )
        lost_run = _run(
            s,
            small_program,
            "lost-worker",
            state="running",
            attempt=1,
            lease_owner="dead",
            lease_expires_at=now - timedelta(seconds=5),
        )

    lease = LeaderLease(session_factory, holder="leader", ttl=30)
    assert lease.try_acquire() == 1
    report = maintenance_tick(session_factory, SqlControlStore(session_factory), lease)

    assert report.epoch == 1 and not report.failed
    assert report.run_gauges is not None  # counted after the reaping
    assert report.run_gauges.by_state == {"succeeded": 1, "failed": 1, "queued": 1}
    assert report.reaped_runs == [lost_run]
    assert report.counts() == {
        "reaped_runs": 1,
        "refresh_tokens_deleted": 1,
        "feed_tokens_deleted": 1,
        "control_rows_purged": 1,
        "checkpoints_deleted": 2,
        "backups_deleted": 0,
        "events_delivered": 0,
    }
    with session_factory() as s:
        assert set(s.scalars(select(RefreshTokenRow.id))) == {"live"}
        assert set(s.scalars(select(FeedTokenRow.id))) == {"revoked-lately", "live"}
        assert set(s.scalars(select(ControlRow.key))) == {"progress:live"}
        kept = set(s.scalars(select(RunCheckpointRow.run_id)))
        assert kept == {recent_run, lost_run}
        assert {r.id: r.state for r in s.scalars(select(RunRow))} == {
            old_run: "succeeded",  # the run row stays, only its checkpoints went
            recent_run: "failed",
            lost_run: "queued",
        }

    # a deposed leader's pass writes nothing
    with session_factory() as s, s.begin():
        s.add(ControlRow(key="progress:old2", value={}, expires_at=now - timedelta(seconds=1)))
        s.execute(update(LeaseRow).values(holder="someone-else", epoch=2))
    with pytest.raises(NotLeader):
        maintenance_tick(session_factory, SqlControlStore(session_factory), lease)
    with session_factory() as s:
        assert s.get(ControlRow, "progress:old2") is not None


# -------------------------------------------------------------- worker processes (PG)

PG_ONLY = pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)


class Workers:
    """`rsched worker` subprocesses on one database, logs in ``tmp_path``."""

    def __init__(self, tmp_path: Path, env: dict[str, str]) -> None:
        self.tmp_path = tmp_path
        self.env = env
        self.procs: dict[int, subprocess.Popen[bytes]] = {}

    def start(self, name: str, *extra: str) -> subprocess.Popen[bytes]:
        log = (self.tmp_path / f"{name}.log").open("wb")
        proc = subprocess.Popen(
            [
                *RSCHED,
                "worker",
                "--leader-ttl",
                str(LEADER_TTL),
                "--lease-seconds",
                str(RUN_LEASE),
                "--heartbeat-seconds",
                "1",
                *extra,
            ],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self.procs[proc.pid] = proc
        return proc

    def started(self, name: str) -> dict[str, object]:
        """The "worker started" log line of worker ``name`` (once it is written)."""

        def line() -> dict[str, object] | None:
            for text in (self.tmp_path / f"{name}.log").read_text().splitlines():
                if text.startswith("{") and '"worker started"' in text:
                    doc: dict[str, object] = json.loads(text)
                    return doc
            return None

        return wait_for(f"{name} to start", line, 60, every=0.1)

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-4000:]}"
            for p in sorted(self.tmp_path.glob("*.log"))
        )

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)


@pytest.fixture
def workers(db_url: str, tmp_path: Path, fernet_keys: list[str]) -> Iterator[Workers]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RSCHED_")}
    env.update(
        RSCHED_ENV="development",
        RSCHED_DATABASE_URL=db_url,
        RSCHED_DATA_DIR=str(tmp_path / "data"),
        RSCHED_ENCRYPTION_KEYS=fernet_keys[0],
    )
    group = Workers(tmp_path, env)
    try:
        yield group
    finally:
        group.stop_all()
        print(group.logs())  # noqa: T201 (pytest shows it only when the test fails)


def holder_pid(holder: str | None) -> int | None:
    """Worker ids are ``host:pid:random`` (``/n`` for a solve thread)."""
    return None if holder is None else int(holder.split(":")[1])


@PG_ONLY
def test_two_worker_processes_one_leader_and_failover_after_kill_9(
    session_factory: sessionmaker[Session], workers: Workers
) -> None:
    a = workers.start("worker-a", "--metrics-port", "0")
    b = workers.start("worker-b", "--metrics-port", "0")
    first = wait_for(
        "a leader", lambda: (r := current_lease(session_factory)) and r.holder and r, 30
    )
    leader_pid = holder_pid(first.holder)
    assert leader_pid in (a.pid, b.pid)
    # exactly one leads, and keeps leading while it lives (renewing, same epoch)
    seen = set()
    for _ in range(20):
        row = current_lease(session_factory)
        assert row is not None
        seen.add((row.holder, row.epoch))
        time.sleep(0.1)
    assert seen == {(first.holder, first.epoch)}
    # and each process says so on its /metrics
    gauges = {}
    for name, proc in (("worker-a", a), ("worker-b", b)):
        port = workers.started(name)["metrics_port"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as page:
            body = page.read().decode()
        gauges[proc.pid] = re.search(r"^scheduler_leader (\S+)$", body, re.M)
    assert {pid: float(m.group(1)) if m else None for pid, m in gauges.items()} == {
        a.pid: 1.0 if leader_pid == a.pid else 0.0,
        b.pid: 1.0 if leader_pid == b.pid else 0.0,
    }

    survivor = b if leader_pid == a.pid else a
    os.kill(leader_pid, signal.SIGKILL)
    killed_at = time.monotonic()
    taken = wait_for(
        "the take-over",
        lambda: (r := current_lease(session_factory)) and r.holder != first.holder and r,
        LEADER_TTL + 5,
        every=0.02,
    )
    failover = time.monotonic() - killed_at
    print(f"\nleader failover after kill -9: {failover:.2f} s (leader ttl {LEADER_TTL:g} s)")  # noqa: T201
    assert holder_pid(taken.holder) == survivor.pid and taken.epoch == first.epoch + 1
    assert failover <= LEADER_TTL + 1.5

    # SIGTERM: the survivor stops cleanly and releases the lease
    survivor.send_signal(signal.SIGTERM)
    assert survivor.wait(timeout=15) == 0
    row = current_lease(session_factory)
    assert row is not None and row.holder is None and row.epoch == taken.epoch
    assert '"leadership acquired"' in workers.logs()


def _children(pid: int) -> list[int]:
    kids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid and b"spawn_main" in cmdline:
            kids.append(int(entry.name))
    return kids


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state in ("Z", "X")  # a zombie has exited: only its exit status remains


@PG_ONLY
@pytest.mark.slow
def test_kill_9_mid_solve_resumes_from_the_checkpoint_on_the_other_worker(
    session_factory: sessionmaker[Session], workers: Workers
) -> None:
    with session_factory() as s, s.begin():
        pid = programs.import_program(s, actor=ADMIN, mapping=generate_program("large", 1))
    a, b = workers.start("worker-a"), workers.start("worker-b")
    wait_for("a leader", lambda: (r := current_lease(session_factory)) and r.holder, 30)
    made = subprocess.run(
        [*RSCHED, "runs", "create", pid, "--time-limit", "40", "--key", "kill-9-run-1"],
        env=workers.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    run_id = made.stdout.strip()

    def checkpoints(attempt: int) -> list[float]:
        with session_factory() as s:
            return list(
                s.scalars(
                    select(RunCheckpointRow.objective)
                    .where(RunCheckpointRow.run_id == run_id, RunCheckpointRow.attempt == attempt)
                    .order_by(RunCheckpointRow.id)
                )
            )

    # the first attempt has stored a few improving solutions: kill its worker
    wait_for("checkpoints of attempt 1", lambda: len(checkpoints(1)) >= 3, 60, every=0.1)
    with session_factory() as s:
        row = s.get(RunRow, run_id)
        assert row is not None and row.attempt == 1 and row.state == "running"
        victim = holder_pid(row.lease_owner)
    assert victim in (a.pid, b.pid)
    solver_children = _children(victim)
    assert len(solver_children) == 1, "the solve runs in one sandboxed child"
    os.kill(victim, signal.SIGKILL)
    killed_at = time.monotonic()
    best_before = min(checkpoints(1))

    wait_for("the solver child to die with its worker", lambda: _gone(solver_children[0]), 3)

    def reclaimed() -> bool:
        with session_factory() as s:
            row = s.get(RunRow, run_id)
            return row is not None and row.attempt == 2

    wait_for("the second attempt", reclaimed, RUN_LEASE + LEADER_TTL + 10, every=0.05)
    recovered = time.monotonic() - killed_at
    survivor = b if victim == a.pid else a

    def finished() -> RunRow | None:
        with session_factory() as s:
            row = s.get(RunRow, run_id)
            return row if row is not None and row.state not in q.ACTIVE else None

    done = wait_for("the run to finish", finished, 120, every=0.5)
    print(  # noqa: T201
        f"\nkill -9 mid-solve: attempt 2 claimed {recovered:.2f} s after the kill "
        f"(run lease {RUN_LEASE:g} s, leader ttl {LEADER_TTL:g} s); run finished "
        f"{time.monotonic() - killed_at:.1f} s after the kill"
    )
    resumed = checkpoints(2)
    print(  # noqa: T201
        f"best objective of attempt 1: {best_before:g}; first of attempt 2: {resumed[0]:g}; "
        f"final: {done.best_objective}"
    )
    assert done.state == "succeeded" and done.attempt == 2, done.failure_reason
    assert holder_pid(done.lease_owner) is None and done.result_version_id is not None
    with session_factory() as s:
        versions = list(
            s.scalars(select(ScheduleVersionRow.id).where(ScheduleVersionRow.run_id == run_id))
        )
        assert versions == [done.result_version_id]
        attempts = set(
            s.scalars(select(RunCheckpointRow.attempt).where(RunCheckpointRow.run_id == run_id))
        )
        assert attempts == {1, 2}
    # resumed, not restarted: the second attempt's first solution is the first attempt's
    # best (the checkpoint given as a hint), or better
    assert resumed[0] <= best_before, (best_before, resumed[:5])
    assert survivor.poll() is None  # the survivor kept working

    shown = subprocess.run(
        [*RSCHED, "runs", "show", run_id, "--json"],
        env=workers.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    doc = json.loads(shown.stdout)
    assert (doc["state"], doc["attempt"]) == ("succeeded", 2)


# ------------------------------------------------ the CLI on the embedded database


@pytest.fixture
def embedded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fernet_keys: list[str]
) -> Iterator[sessionmaker[Session]]:
    for name in list(os.environ):
        if name.startswith("RSCHED_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("RSCHED_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("RSCHED_ENCRYPTION_KEYS", fernet_keys[0])
    get_settings.cache_clear()
    assert cli_main(["runs", "list"]) == 0  # creates and migrates the SQLite file
    engine = make_engine(get_settings().resolved_database_url())
    try:
        yield make_sessionmaker(engine)
    finally:
        engine.dispose()
        get_settings.cache_clear()


def test_runs_commands_and_worker_once_on_the_embedded_database(
    embedded: sessionmaker[Session], capsys: pytest.CaptureFixture[str]
) -> None:
    with embedded() as s, s.begin():
        pid = programs.import_program(s, actor=ADMIN, mapping=generate_program("small", 1))
    capsys.readouterr()

    assert cli_main(["runs", "create", pid, "--time-limit", "5", "--key", "cli-run-0001"]) == 0
    run_id = capsys.readouterr().out.strip()
    assert cli_main(["runs", "create", pid, "--time-limit", "5", "--key", "cli-run-0001"]) == 0
    assert capsys.readouterr().out.strip() == run_id  # same key, same run
    assert cli_main(["runs", "create", pid, "--time-limit", "5"]) == 0
    other = capsys.readouterr().out.strip()
    assert other != run_id

    assert cli_main(["runs", "list", "--program", pid, "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [r["id"] for r in listed] == [run_id, other]
    assert all(r["state"] == "queued" for r in listed)

    assert cli_main(["runs", "abort", other, "--reason", "not needed"]) == 0
    capsys.readouterr()
    assert cli_main(["runs", "abort", other, "--reason", "again"]) == 3  # finished: conflict
    assert "only queued or running" in capsys.readouterr().err
    assert cli_main(["runs", "show", "no-such-run"]) == 3

    # one pass of a worker: maintenance (it leads: no one else does) and the oldest run
    from rsched.worker.process import run_worker

    assert run_worker(get_settings(), stop=threading.Event(), once=True, heartbeat_seconds=1) == 0
    assert cli_main(["runs", "show", run_id, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["state"] == "succeeded" and doc["attempt"] == 1 and doc["result_version_id"]

    with embedded() as s:
        actors = {(a.action, a.target): a.actor for a in s.scalars(select(AuditRow))}
        user = actors[("run.create", run_id)]
        assert user is not None and user.startswith("cli:")
        assert actors[("run.abort", other)] == user
        assert s.scalar(select(func.count()).select_from(RunRow)) == 2
        lease = s.get(LeaseRow, "maintenance")
        assert lease is not None and lease.holder is None and lease.epoch == 1
