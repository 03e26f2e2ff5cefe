"""Safe publishing on SQLite and PostgreSQL: tokens, gate, diff guard, concurrency,
rollback, and crash injection (SIGKILL of the publishing process at every step)."""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path

import pytest
from sqlalchemy import select, text, update
from sqlalchemy.orm import Session, sessionmaker

from rsched.config import Settings
from rsched.crypto.fields import install_keys
from rsched.db.base import make_engine, make_sessionmaker
from rsched.db.models import AuditRow, PublishTokenRow, ScheduleVersionRow, StagingRow
from rsched.domain import Assignment
from rsched.programfile.generator import generate_program
from rsched.programfile.loader import parse_program
from rsched.rules.report import validate
from rsched.services import programs, publishing, schedules
from rsched.services.access import Actor, Forbidden, Membership, Role
from rsched.services.backups import BackupService
from rsched.solver.api import SolveParams, solve

ADMIN = Actor(user_id="admin", is_admin=True)
BOUNDARIES = [
    "token_consumed",
    "checked",
    "backed_up",
    "staged",
    "before_activate",
    "after_supersede",
    "before_commit",
    "committed",
]


@lru_cache(maxsize=1)
def _solved_small_cached() -> tuple[Assignment, ...]:
    result = solve(
        parse_program(generate_program("small", 4)), SolveParams(time_limit=20, deterministic=True)
    )
    assert result.report is not None and result.report.ok
    return result.assignments


def _solved_small() -> list[Assignment]:
    return list(_solved_small_cached())


@dataclass
class World:
    pid: str
    pairs: list[Assignment]
    draft: Callable[[list[Assignment]], str]
    backups: BackupService
    keys: list[str]


def coordinator(pid: str, user: str = "coord") -> Actor:
    return Actor(user_id=user, memberships={pid: Membership(role=Role.COORDINATOR)})


@pytest.fixture
def world(
    session_factory: sessionmaker[Session], fernet_keys: list[str], db_url: str, tmp_path: Path
) -> World:
    mapping = generate_program("small", 4)
    with session_factory() as s, s.begin():
        pid = programs.import_program(s, actor=ADMIN, mapping=mapping)
    pairs = _solved_small()

    def draft(assignments: list[Assignment]) -> str:
        with session_factory() as s, s.begin():
            return schedules.save_draft(
                s,
                actor=ADMIN,
                program_id=pid,
                assignments=assignments,
                report_summary={"source": "test"},
            )

    backups = BackupService(
        Settings(data_dir=tmp_path), database_url=db_url, folder=tmp_path / "backups"
    )
    return World(pid=pid, pairs=pairs, draft=draft, backups=backups, keys=fernet_keys)


def _token(factory: sessionmaker[Session], actor: Actor, pid: str, vid: str) -> str:
    with factory() as s, s.begin():
        token, _ = publishing.create_publish_token(s, actor=actor, program_id=pid, version_id=vid)
    return token


def _publish(factory: sessionmaker[Session], world: World, vid: str) -> None:
    coord = coordinator(world.pid)
    publishing.publish(
        factory,
        actor=coord,
        program_id=world.pid,
        version_id=vid,
        token=_token(factory, coord, world.pid, vid),
        backups=world.backups,
    )


def _active(factory: sessionmaker[Session], pid: str) -> list[str]:
    with factory() as s:
        return list(
            s.scalars(
                select(ScheduleVersionRow.id).where(
                    ScheduleVersionRow.program_id == pid, ScheduleVersionRow.status == "active"
                )
            )
        )


def _content(factory: sessionmaker[Session], vid: str) -> str:
    with factory() as s:
        row = s.get(ScheduleVersionRow, vid)
        assert row is not None
        return row.content_hash


def _swap_two(pairs: list[Assignment]) -> list[Assignment]:
    """A small change that still passes the gate: drop one assignment whose removal
    leaves the schedule legal and fully covered (a slot staffed above its minimum)."""
    data = parse_program(generate_program("small", 4))
    for i in range(len(pairs)):
        candidate = pairs[:i] + pairs[i + 1 :]
        report = validate(data, candidate)
        if report.ok and report.coverage == 1.0:
            return candidate
    raise AssertionError("no single removal keeps the schedule legal")


def _analyzed_at(factory: sessionmaker[Session], table: str) -> datetime | None:
    with factory() as s:  # a new transaction: the statistics snapshot is per transaction
        value = s.execute(
            text("SELECT last_analyze FROM pg_stat_user_tables WHERE relname = :t"), {"t": table}
        ).scalar()
    return value if isinstance(value, datetime) else None


def _sqlite_stats(factory: sessionmaker[Session]) -> set[str]:
    with factory() as s:
        known = s.execute(text("SELECT name FROM sqlite_master WHERE name = 'sqlite_stat1'"))
        if known.first() is None:
            return set()
        return set(s.scalars(text("SELECT DISTINCT tbl FROM sqlite_stat1")))


def test_a_publish_refreshes_the_planner_statistics_of_what_the_feeds_read(
    session_factory: sessionmaker[Session], world: World
) -> None:
    vid = world.draft(world.pairs)
    postgres = session_factory.kw["bind"].dialect.name == "postgresql"
    if postgres:
        before = {t: _analyzed_at(session_factory, t) for t in publishing.PUBLISHED_TABLES}
    else:
        with session_factory() as s, s.begin():
            s.execute(text("DROP TABLE IF EXISTS sqlite_stat1"))
    _publish(session_factory, world, vid)
    assert set(publishing.PUBLISHED_TABLES) >= {"assignments", "slots", "schedule_versions"}
    if postgres:
        for table, earlier in before.items():
            after = _analyzed_at(session_factory, table)
            assert after is not None and (earlier is None or after > earlier), table
    else:
        assert _sqlite_stats(session_factory) >= set(publishing.PUBLISHED_TABLES)


def test_publish_with_token_then_replay_expired_wrong_user_wrong_program(
    session_factory: sessionmaker[Session], world: World
) -> None:
    pid, draft, backups = world.pid, world.draft, world.backups
    vid = draft(world.pairs)
    coord = coordinator(pid)
    token = _token(session_factory, coord, pid, vid)
    # wrong user: a token is bound to the user who asked for it
    with pytest.raises(Forbidden):
        publishing.publish(
            session_factory,
            actor=coordinator(pid, "someone-else"),
            program_id=pid,
            version_id=vid,
            token=token,
            backups=backups,
        )
    result = publishing.publish(
        session_factory,
        actor=coord,
        program_id=pid,
        version_id=vid,
        token=token,
        backups=backups,
    )
    assert _active(session_factory, pid) == [vid] and result.superseded == ()
    with pytest.raises(Forbidden):  # replay
        publishing.publish(
            session_factory,
            actor=coord,
            program_id=pid,
            version_id=vid,
            token=token,
            backups=backups,
        )
    vid2 = draft(_swap_two(world.pairs))
    expired = _token(session_factory, coord, pid, vid2)
    with session_factory() as s, s.begin():
        s.execute(
            update(PublishTokenRow).values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    with pytest.raises(Forbidden):
        publishing.publish(
            session_factory,
            actor=coord,
            program_id=pid,
            version_id=vid2,
            token=expired,
            backups=backups,
        )
    foreign = coordinator("other-program")
    with pytest.raises(Exception) as err:
        publishing.publish(
            session_factory,
            actor=foreign,
            program_id=pid,
            version_id=vid2,
            token=expired,
            backups=backups,
        )
    assert type(err.value).__name__ in {"NotFound", "Forbidden"}
    with session_factory() as s:
        refused = list(
            s.scalars(
                select(AuditRow).where(AuditRow.action == "publish", AuditRow.outcome == "refused")
            )
        )
    assert len(refused) >= 3


def test_gate_refuses_a_draft_with_a_hard_violation(
    session_factory: sessionmaker[Session], world: World
) -> None:
    pid, draft, backups, pairs = world.pid, world.draft, world.backups, world.pairs
    vid = draft(pairs[: len(pairs) // 2])
    coord = coordinator(pid)
    token = _token(session_factory, coord, pid, vid)
    with pytest.raises(publishing.PublishRefused, match="validation gate") as err:
        publishing.publish(
            session_factory,
            actor=coord,
            program_id=pid,
            version_id=vid,
            token=token,
            backups=backups,
        )
    assert "coverage" in str(err.value)
    assert _active(session_factory, pid) == []


def test_diff_guard_override_needs_an_approval(
    session_factory: sessionmaker[Session], world: World
) -> None:
    pid, draft, backups, pairs = world.pid, world.draft, world.backups, world.pairs
    coord = coordinator(pid)
    v1 = draft(pairs)
    publishing.publish(
        session_factory,
        actor=coord,
        program_id=pid,
        version_id=v1,
        token=_token(session_factory, coord, pid, v1),
        backups=backups,
    )
    # a draft that moves every resident assignment to other people: far above the churn limit
    people = sorted({a.person_id for a in pairs})
    rotate = {p: people[(i + 1) % len(people)] for i, p in enumerate(people)}
    v2 = draft([Assignment(person_id=rotate[a.person_id], slot_id=a.slot_id) for a in pairs])
    with pytest.raises(publishing.PublishRefused):
        publishing.publish(
            session_factory,
            actor=coord,
            program_id=pid,
            version_id=v2,
            token=_token(session_factory, coord, pid, v2),
            backups=backups,
            override_reason="no approval",
        )
    assert _active(session_factory, pid) == [v1]


def test_two_concurrent_publishes_one_wins(
    session_factory: sessionmaker[Session], world: World
) -> None:
    pid, draft, backups, pairs = world.pid, world.draft, world.backups, world.pairs
    coord = coordinator(pid)
    a, b = draft(pairs), draft(pairs[::-1])
    tokens = {v: _token(session_factory, coord, pid, v) for v in (a, b)}
    outcomes: dict[str, str] = {}

    def go(vid: str) -> None:
        try:
            publishing.publish(
                session_factory,
                actor=coord,
                program_id=pid,
                version_id=vid,
                token=tokens[vid],
                backups=backups,
            )
            outcomes[vid] = "published"
        except publishing.PublishRefused as exc:
            outcomes[vid] = f"refused: {exc}"

    threads = [threading.Thread(target=go, args=(v,)) for v in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    active = _active(session_factory, pid)
    assert len(active) == 1
    assert sorted(outcomes.values()).count("published") >= 1
    with session_factory() as s:
        assert not list(s.scalars(select(StagingRow).where(StagingRow.state == "pending")))


def test_rollback_restores_the_previous_schedule_exactly(
    session_factory: sessionmaker[Session], world: World
) -> None:
    pid, draft, backups, pairs = world.pid, world.draft, world.backups, world.pairs
    coord = coordinator(pid)
    v1 = draft(pairs)
    publishing.publish(
        session_factory,
        actor=coord,
        program_id=pid,
        version_id=v1,
        token=_token(session_factory, coord, pid, v1),
        backups=backups,
    )
    v2 = draft(pairs)  # same content, new version
    publishing.publish(
        session_factory,
        actor=coord,
        program_id=pid,
        version_id=v2,
        token=_token(session_factory, coord, pid, v2),
        backups=backups,
    )
    assert _active(session_factory, pid) == [v2]
    restored = publishing.rollback(
        session_factory,
        actor=coord,
        program_id=pid,
        reason="bad publish",
        backups=backups,
    )
    assert restored == v1 and _active(session_factory, pid) == [v1]
    with session_factory() as s:
        assert s.get(ScheduleVersionRow, v2).status == "draft"
        assert list(s.scalars(select(AuditRow).where(AuditRow.action == "rollback")))


# ------------------------------------------------------------- crash injection


def _publish_and_die(
    url: str, keys: list[str], pid: str, vid: str, token: str, at: str, folder: str
) -> None:
    install_keys(keys)
    factory = make_sessionmaker(make_engine(url))

    def hook(step: str) -> None:
        if step == at:
            os.kill(os.getpid(), signal.SIGKILL)

    backups = BackupService(
        Settings(data_dir=Path(folder)), database_url=url, folder=Path(folder) / "backups"
    )
    publishing.publish(
        factory,
        actor=coordinator(pid),
        program_id=pid,
        version_id=vid,
        token=token,
        backups=backups,
        hook=hook,
    )


@pytest.mark.parametrize("at", BOUNDARIES)
def test_sigkill_at_every_step_leaves_exactly_old_or_new(
    session_factory: sessionmaker[Session],
    world: World,
    db_url: str,
    tmp_path: Path,
    at: str,
) -> None:
    pid, draft, backups, pairs = world.pid, world.draft, world.backups, world.pairs
    coord = coordinator(pid)
    old = draft(pairs)
    publishing.publish(
        session_factory,
        actor=coord,
        program_id=pid,
        version_id=old,
        token=_token(session_factory, coord, pid, old),
        backups=backups,
    )
    new = draft(_swap_two(pairs))
    token = _token(session_factory, coord, pid, new)
    ctx = multiprocessing.get_context("spawn")
    child = ctx.Process(
        target=_publish_and_die, args=(db_url, world.keys, pid, new, token, at, str(tmp_path))
    )
    child.start()
    child.join(120)
    assert child.exitcode == -signal.SIGKILL
    # restart: recovery resolves any pending staging
    publishing.recover(session_factory)
    active = _active(session_factory, pid)
    assert len(active) == 1 and active[0] in (old, new)
    expected = {old: _content(session_factory, old), new: _content(session_factory, new)}
    assert _content(session_factory, active[0]) == expected[active[0]]
    with session_factory() as s:
        assert not list(s.scalars(select(StagingRow).where(StagingRow.state == "pending")))
    if at in ("token_consumed", "checked", "backed_up"):
        assert active == [old]  # nothing was staged: the old schedule stands
    if at in ("before_commit",) or at == "committed":
        assert active[0] in (old, new)


def test_gate_with_n1_enabled_reports_who_cannot_be_absorbed(
    session_factory: sessionmaker[Session], world: World
) -> None:
    from rsched.db.models import ProgramRow
    from rsched.solver.n1 import n_minus_one

    vid = world.draft(world.pairs)
    with session_factory() as s, s.begin():
        program = s.get(ProgramRow, world.pid)
        assert program is not None
        program.settings = {**program.settings, "publish": {"n1_required": True}}
    with session_factory() as s:
        policy = publishing.PublishPolicy.of(s.get(ProgramRow, world.pid).settings)  # type: ignore[union-attr]
        checks = publishing.gate(s, world.pid, vid, policy)
    expected = n_minus_one(
        parse_program(generate_program("small", 4)),
        world.pairs,
        params_per_person=SolveParams(time_limit=2, workers=1),
    ).not_absorbable
    assert checks["n1"]["not_absorbable"] == expected
    assert checks["ok"] == (not expected)
    if expected:
        assert any(p.startswith("N-1:") for p in checks["problems"])


def _staging_state(factory: sessionmaker[Session], staging_id: str) -> str:
    with factory() as s:
        row = s.get(StagingRow, staging_id)
        assert row is not None
        return row.state


def test_recovery_racing_the_publishers_activation_leaves_its_commit_alone(
    session_factory: sessionmaker[Session], world: World
) -> None:
    vid = world.draft(world.pairs)
    staging_id = publishing.stage(
        session_factory,
        actor=coordinator(world.pid),
        program_id=world.pid,
        version_id=vid,
        detail={},
    )
    at_commit, go = threading.Event(), threading.Event()

    def hold(step: str) -> None:
        if step == "before_commit":  # the program row is locked until this commits
            at_commit.set()
            assert go.wait(20)

    publisher = threading.Thread(
        target=publishing.activate, args=(session_factory, staging_id), kwargs={"hook": hold}
    )
    publisher.start()
    assert at_commit.wait(20)
    recovered: list[list[tuple[str, str]]] = []
    recovery = threading.Thread(
        target=lambda: recovered.append(publishing.recover(session_factory))
    )
    recovery.start()  # reads the staging as pending, then waits for the program's lock
    time.sleep(0.5)
    go.set()
    publisher.join(30)
    recovery.join(30)
    assert recovered == [[]]  # found it resolved once it had the lock: left alone
    assert _staging_state(session_factory, staging_id) == "committed"
    assert _active(session_factory, world.pid) == [vid]


def test_a_publish_whose_staging_another_process_recovered_reports_success(
    session_factory: sessionmaker[Session], world: World
) -> None:
    vid = world.draft(world.pairs)
    coord = coordinator(world.pid)
    recovered: list[list[tuple[str, str]]] = []

    def meanwhile(step: str) -> None:
        if step == "staged":  # another process starts up and recovers pending stagings
            recovered.append(publishing.recover(session_factory))

    result = publishing.publish(
        session_factory,
        actor=coord,
        program_id=world.pid,
        version_id=vid,
        token=_token(session_factory, coord, world.pid, vid),
        backups=world.backups,
        hook=meanwhile,
    )
    assert [state for _, state in recovered[0]] == ["committed"]
    assert result.version_id == vid and _active(session_factory, world.pid) == [vid]
    assert _staging_state(session_factory, result.staging_id) == "committed"


class _PublishesMeanwhile:
    """A backup guard that, asked for the rollback's backup, lets another publish land
    first: the window between a rollback's checks and its locked write."""

    def __init__(self, real: BackupService, publish_other: Callable[[], None]) -> None:
        self.real, self.publish_other = real, publish_other

    def ensure_recent(self, *, program_id: str, reason: str) -> None:
        if reason == "rollback":
            self.publish_other()
        self.real.ensure_recent(program_id=program_id, reason=reason)


def test_a_rollback_racing_a_publish_rolls_back_the_publish_it_locked_on(
    session_factory: sessionmaker[Session], world: World
) -> None:
    first = world.draft(world.pairs)
    _publish(session_factory, world, first)
    second = world.draft(_swap_two(world.pairs))
    meanwhile = _PublishesMeanwhile(world.backups, lambda: _publish(session_factory, world, second))
    restored = publishing.rollback(
        session_factory,
        actor=coordinator(world.pid),
        program_id=world.pid,
        reason="undo",
        backups=meanwhile,
    )
    # the last publish under the lock was the second one: it is the one undone, whole
    assert restored == first and _active(session_factory, world.pid) == [first]


def test_an_undo_of_one_publish_never_undoes_a_later_one(
    session_factory: sessionmaker[Session], world: World
) -> None:
    first = world.draft(world.pairs)
    _publish(session_factory, world, first)
    second = world.draft(_swap_two(world.pairs))
    meanwhile = _PublishesMeanwhile(world.backups, lambda: _publish(session_factory, world, second))
    with pytest.raises(publishing.PublishRefused, match="no longer that of version"):
        publishing.rollback(
            session_factory,
            actor=coordinator(world.pid),
            program_id=world.pid,
            reason="undo the first",
            backups=meanwhile,
            expected_version_id=first,
        )
    assert _active(session_factory, world.pid) == [second]
