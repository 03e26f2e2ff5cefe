"""Runs on the database queue, on SQLite and PostgreSQL for real: idempotent creation,
exclusive claims, fencing of stale workers, lease expiry, and a full solve by the worker."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from rsched.db.models import RunCheckpointRow, RunRow, ScheduleVersionRow
from rsched.domain import InvalidInput, NotFound, RunState
from rsched.programfile.generator import generate_program
from rsched.services import programs
from rsched.services import runs as q
from rsched.services.access import Actor, Membership, Role
from rsched.services.control import SqlControlStore
from rsched.worker.runner import WorkerConfig, execute

ADMIN = Actor(user_id="admin", is_admin=True)


@pytest.fixture
def program_id(session_factory: sessionmaker[Session], fernet_keys: list[str]) -> str:
    mapping = generate_program("small", 1)
    with session_factory() as s, s.begin():
        return programs.import_program(s, actor=ADMIN, mapping=mapping)


def _create(factory: sessionmaker[Session], pid: str, key: str, **params: object) -> q.RunView:
    with factory() as s, s.begin():
        run, _ = q.create_run(
            s, actor=ADMIN, program_id=pid, idempotency_key=key, params={"time_limit": 10, **params}
        )
        return run


def test_same_idempotency_key_gives_the_same_run(session_factory, program_id) -> None:
    a = _create(session_factory, program_id, "key-000001")
    b = _create(session_factory, program_id, "key-000001")
    c = _create(session_factory, program_id, "key-000002")
    assert a.id == b.id != c.id


def test_duplicate_submissions_under_concurrency_make_one_run(session_factory, program_id) -> None:
    ids: list[str] = []
    errors: list[BaseException] = []

    def submit() -> None:
        try:
            ids.append(_create(session_factory, program_id, "same-key-under-race").id)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=submit) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(set(ids)) == 1
    with session_factory() as s:
        assert len(list(s.scalars(select(RunRow)))) == 1


@pytest.mark.parametrize("key", ["short", "has space inside", "x" * 200, ""])
def test_malformed_idempotency_key_is_refused(session_factory, program_id, key: str) -> None:
    with session_factory() as s, pytest.raises(InvalidInput, match="idempotency_key"):
        q.create_run(s, actor=ADMIN, program_id=program_id, idempotency_key=key)


def test_bad_solver_parameters_are_refused(session_factory, program_id) -> None:
    with session_factory() as s, pytest.raises(InvalidInput) as err:
        q.create_run(
            s,
            actor=ADMIN,
            program_id=program_id,
            idempotency_key="bad-params-1",
            algorithm="magic",
            params={"time_limit": -1},
        )
    assert {e.path for e in err.value.errors} == {"solver", "time_limit"}


def test_other_programs_coordinator_cannot_see_or_abort(session_factory, program_id) -> None:
    run = _create(session_factory, program_id, "foreign-01")
    other = Actor(user_id="u2", memberships={"other": Membership(role=Role.COORDINATOR)})
    with session_factory() as s:
        with pytest.raises(NotFound):
            q.get_run(s, actor=other, run_id=run.id)
        with pytest.raises(NotFound):
            q.request_abort(s, actor=other, run_id=run.id, reason="not mine")


def test_racing_workers_claim_each_run_exactly_once(session_factory, program_id) -> None:
    for i in range(50):
        _create(session_factory, program_id, f"race-run-{i:03d}")
    claims: list[tuple[str, str]] = []
    lock = threading.Lock()

    def worker(name: str) -> None:
        while True:
            with session_factory() as s, s.begin():
                claim = q.claim_next(s, owner=name, lease_seconds=30)
                if claim is None:
                    return
                q.finish(s, claim, state=RunState.SUCCEEDED)
            with lock:
                claims.append((claim.run_id, name))

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    counts = Counter(run for run, _ in claims)
    assert len(counts) == 50 and set(counts.values()) == {1}


def test_stale_worker_is_fenced_after_its_lease_expires(session_factory, program_id) -> None:
    run = _create(session_factory, program_id, "fence-run-1")
    with session_factory() as s, s.begin():
        old = q.claim_next(s, owner="old-worker", lease_seconds=30)
    assert old is not None and old.attempt == 1
    # the old worker goes silent; its lease expires and the run is reaped and re-claimed
    with session_factory() as s, s.begin():
        s.execute(
            update(RunRow)
            .where(RunRow.id == run.id)
            .values(lease_expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    with session_factory() as s, s.begin():
        assert q.reap_expired(s) == [run.id]
    with session_factory() as s, s.begin():
        new = q.claim_next(s, owner="new-worker", lease_seconds=30)
    assert new is not None and new.attempt == 2
    # every late write of the old attempt is refused, and changes nothing
    with session_factory() as s, s.begin(), pytest.raises(q.Fenced):
        q.heartbeat(s, old, lease_seconds=30)
    with session_factory() as s, s.begin(), pytest.raises(q.Fenced):
        q.save_checkpoint(s, old, pairs=[("r01", "x")], objective=1.0)
    with session_factory() as s, s.begin(), pytest.raises(q.Fenced):
        q.finish(s, old, state=RunState.SUCCEEDED)
    with session_factory() as s:
        row = s.get(RunRow, run.id)
        assert row is not None and row.state == "running" and row.lease_owner == "new-worker"
        assert not list(s.scalars(select(RunCheckpointRow)))


def test_run_fails_with_the_reason_after_its_last_attempt(session_factory, program_id) -> None:
    with session_factory() as s, s.begin():
        run, _ = q.create_run(
            s, actor=ADMIN, program_id=program_id, idempotency_key="flaky-run-1", max_attempts=2
        )
    for _ in range(2):
        with session_factory() as s, s.begin():
            assert q.claim_next(s, owner="dies", lease_seconds=30) is not None
        with session_factory() as s, s.begin():
            s.execute(
                update(RunRow)
                .where(RunRow.id == run.id)
                .values(lease_expires_at=datetime.now(UTC) - timedelta(seconds=1))
            )
            q.reap_expired(s)
    with session_factory() as s:
        row = s.get(RunRow, run.id)
        assert row is not None and row.state == "failed"
        assert "lease expired" in (row.failure_reason or "")


def test_worker_solves_a_run_into_a_validated_draft(session_factory, program_id) -> None:
    run = _create(session_factory, program_id, "solve-run-1")
    store = SqlControlStore(session_factory)
    starts: list[int] = []
    with session_factory() as s, s.begin():
        claim = q.claim_next(s, owner="w1", lease_seconds=30)
    assert claim is not None
    outcome = execute(
        session_factory,
        store,
        claim,
        WorkerConfig(heartbeat_seconds=1),
        on_child_start=lambda: starts.append(1),
    )
    assert outcome.state == "succeeded" and outcome.version_id and starts == [1]
    with session_factory() as s:
        row = s.get(RunRow, run.id)
        assert row is not None and row.result_version_id == outcome.version_id
        version = s.get(ScheduleVersionRow, outcome.version_id)
        assert version is not None and version.status == "draft"
        assert version.report["validation"]["violations"] == 0
        assert list(s.scalars(select(RunCheckpointRow).where(RunCheckpointRow.run_id == run.id)))
    assert store.progress(run.id) is not None


def test_abort_of_a_running_solve_keeps_the_best_schedule(
    session_factory: sessionmaker[Session], fernet_keys: list[str]
) -> None:
    # the large program is far from proved optimal after a few seconds: the abort lands
    with session_factory() as s, s.begin():
        pid = programs.import_program(s, actor=ADMIN, mapping=generate_program("large", 1))
    run = _create(session_factory, pid, "abort-run-1", time_limit=300)
    store = SqlControlStore(session_factory)
    with session_factory() as s, s.begin():
        claim = q.claim_next(s, owner="w1", lease_seconds=30)
    assert claim is not None
    aborted_at: list[datetime] = []

    def abort_once_a_schedule_exists() -> None:
        for _ in range(600):
            progress = store.progress(run.id)
            if progress and progress.get("solutions", 0) >= 1:
                break
            threading.Event().wait(0.1)
        with session_factory() as s, s.begin():
            q.request_abort(s, actor=ADMIN, run_id=run.id, reason="testing abort")
        store.request_abort(run.id, "testing abort")
        aborted_at.append(datetime.now(UTC))

    threading.Thread(target=abort_once_a_schedule_exists, daemon=True).start()
    outcome = execute(session_factory, store, claim, WorkerConfig(heartbeat_seconds=1))
    finished = datetime.now(UTC)
    assert outcome.state == "aborted" and outcome.version_id is not None
    assert aborted_at and (finished - aborted_at[0]) < timedelta(seconds=5)
    with session_factory() as s:
        row = s.get(RunRow, run.id)
        assert row is not None and row.state == "aborted"
        assert row.failure_reason == "testing abort" and row.result_version_id == outcome.version_id
        version = s.get(ScheduleVersionRow, outcome.version_id)
        assert version is not None and version.report["validation"]["violations"] == 0
        # aborting a finished run is a conflict, audited, nothing changed
        with pytest.raises(q.RunConflict):
            q.request_abort(s, actor=ADMIN, run_id=run.id, reason="again")


def test_an_abort_racing_a_claim_still_stops_the_run(session_factory, program_id) -> None:
    run = _create(session_factory, program_id, "abort-race-01")
    with session_factory() as reader:
        seen = reader.get(RunRow, run.id)  # held: the abort below works from this read
        assert seen is not None and seen.state == RunState.QUEUED.value
        with session_factory() as s, s.begin():  # a worker claims it meanwhile
            claim = q.claim_next(s, owner="w1", lease_seconds=30)
            assert claim is not None and claim.run_id == run.id
        view = q.request_abort(reader, actor=ADMIN, run_id=run.id, reason="stop it")
        reader.commit()
    assert view.state == RunState.RUNNING.value
    with session_factory() as s:
        assert q.abort_requested(s, run.id) == "stop it"  # the worker will see it


def test_an_abort_racing_the_end_of_a_run_is_a_conflict(session_factory, program_id) -> None:
    run = _create(session_factory, program_id, "abort-race-02")
    with session_factory() as reader:
        seen = reader.get(RunRow, run.id)
        assert seen is not None and seen.state == RunState.QUEUED.value
        with session_factory() as s, s.begin():
            claim = q.claim_next(s, owner="w1", lease_seconds=30)
            assert claim is not None
            q.finish(s, claim, state=RunState.SUCCEEDED)
        with pytest.raises(q.RunConflict, match="succeeded"):
            q.request_abort(reader, actor=ADMIN, run_id=run.id, reason="too late")
    with session_factory() as s:
        assert q.abort_requested(s, run.id) is None


def test_a_worker_whose_clock_is_slow_keeps_its_lease(
    session_factory, program_id, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = _create(session_factory, program_id, "slow-clock-01")
    monkeypatch.setattr(q, "now", lambda: datetime.now(UTC) - timedelta(minutes=10))
    with session_factory() as s, s.begin():  # on a host whose clock is 10 minutes behind
        claim = q.claim_next(s, owner="slow-host", lease_seconds=30)
        assert claim is not None and claim.run_id == run.id
        q.heartbeat(s, claim, lease_seconds=30)
    monkeypatch.undo()
    with session_factory() as s, s.begin():  # the reaper, on a host with the right time
        assert q.reap_expired(s) == []
    with session_factory() as s:
        assert s.get(RunRow, run.id).state == RunState.RUNNING.value
