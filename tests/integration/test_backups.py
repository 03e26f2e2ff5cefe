"""Backups on SQLite and PostgreSQL: file names and checksums, verification, the guard
used before writes, failures that block and leave no file, encryption at rest, restore
into an empty database reproducing the JSON export byte for byte, and retention."""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import stat
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import select, text, update
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import Session, sessionmaker

from rsched.cli.main import main as cli
from rsched.config import Settings, get_settings
from rsched.db.base import make_engine, make_sessionmaker, transaction
from rsched.db.migrate import upgrade
from rsched.db.models import BackupRow, SlotRow
from rsched.domain import Assignment, InvalidInput
from rsched.programfile.generator import generate_program
from rsched.services import programs, schedules
from rsched.services.access import Actor
from rsched.services.backups import BackupFailed, BackupService, RestoreRefused, service_for
from rsched.services.leader import NotLeader

ADMIN = Actor(user_id="admin", is_admin=True)
PROGRAM = "bk-small"
NAME = re.compile(
    r"^rsched-(?P<who>[A-Za-z0-9_-]+)-(?P<at>\d{8}T\d{6}\.\d{6}Z)-(?P<why>[A-Za-z0-9_-]+)"
    r"\.(?P<ext>dump|sqlite)(?P<enc>\.enc)?$"
)


def kind(url: str) -> str:
    return make_url(url).get_backend_name()


def magic(url: str) -> bytes:
    return b"PGDMP" if kind(url) == "postgresql" else b"SQLite format 3\x00"


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return tmp_path / "backups"


@pytest.fixture
def settings(tmp_path: Path, fernet_keys: list[str]) -> Settings:
    return Settings(data_dir=tmp_path, encryption_keys=",".join(fernet_keys))


@pytest.fixture
def service(db_url: str, settings: Settings, folder: Path) -> Iterator[BackupService]:
    with BackupService(settings, database_url=db_url, folder=folder) as svc:
        yield svc


def files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def age(factory: sessionmaker[Session], backup_id: str, by: timedelta) -> None:
    with factory() as s, s.begin():
        created = s.scalar(select(BackupRow.created_at).where(BackupRow.id == backup_id))
        assert created is not None
        s.execute(
            update(BackupRow).where(BackupRow.id == backup_id).values(created_at=created - by)
        )


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


# ------------------------------------------------------------------------ create, verify


def test_create_names_the_file_and_records_its_checksum(
    db_url: str, service: BackupService, session_factory: sessionmaker[Session], folder: Path
) -> None:
    record = service.create(reason="manual", program_id="p-1")

    path = Path(record.path)
    assert path.parent == folder.resolve() and path.is_file()
    found = NAME.match(path.name)
    assert found, path.name
    assert found["who"] == "p-1" and found["why"] == "manual" and found["enc"] is None
    assert found["ext"] == ("dump" if kind(db_url) == "postgresql" else "sqlite")
    stamp = datetime.strptime(found["at"], "%Y%m%dT%H%M%S.%fZ").replace(tzinfo=UTC)
    assert stamp == record.created_at
    data = path.read_bytes()
    assert data.startswith(magic(db_url))
    assert record.sha256 == hashlib.sha256(data).hexdigest() and record.size_bytes == len(data)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert files(folder) == [path.name]  # no temporary file left behind
    with session_factory() as s:
        row = s.get(BackupRow, record.id)
        assert row is not None
        assert (row.sha256, row.path, row.reason, row.program_id) == (
            record.sha256,
            record.path,
            "manual",
            "p-1",
        )
    whole = service.create(reason="nightly")
    assert Path(whole.path).name.startswith("rsched-all-")
    assert [r.id for r in service.list()] == [whole.id, record.id]


def test_verify_detects_a_flipped_byte(
    service: BackupService, session_factory: sessionmaker[Session]
) -> None:
    record = service.create(reason="manual")
    assert service.verify(record.id) is True
    flip_a_byte(Path(record.path))
    assert service.verify(record.id) is False
    with session_factory() as s:
        row = s.get(BackupRow, record.id)
        assert row is not None and row.verified_at is None
    # the guard does not rely on a corrupt backup: it makes a new one
    fresh = service.ensure_recent(program_id=PROGRAM, reason="publish")
    assert fresh != record.id and service.verify(fresh)


def test_verify_of_a_missing_file_is_false(service: BackupService) -> None:
    record = service.create(reason="manual")
    Path(record.path).unlink()
    assert service.verify(record.id) is False


# ------------------------------------------------------------------------ the guard


def test_ensure_recent_reuses_a_fresh_backup_and_replaces_a_stale_one(
    service: BackupService, session_factory: sessionmaker[Session], folder: Path
) -> None:
    first = service.ensure_recent(program_id=PROGRAM, reason="publish")
    assert service.ensure_recent(program_id="other", reason="swap") == first
    assert len(files(folder)) == 1

    age(session_factory, first, timedelta(hours=2, minutes=1))
    second = service.ensure_recent(program_id=PROGRAM, reason="publish")
    assert second != first
    name = Path(service.get(second).path).name
    assert name.startswith(f"rsched-{PROGRAM}-") and "-publish." in name
    assert service.ensure_recent(program_id=PROGRAM, reason="publish") == second
    assert len(files(folder)) == 2


def test_max_age_and_encryption_come_from_the_settings(
    db_url: str, settings: Settings, folder: Path, session_factory: sessionmaker[Session]
) -> None:
    configured = Settings(
        data_dir=settings.data_dir,
        encryption_keys=settings.encryption_keys,
        database_url=db_url,
        backup_max_age_minutes=10,
        backup_encrypt=True,
    )
    with service_for(configured) as svc:
        first = svc.ensure_recent(program_id=PROGRAM, reason="generate")
        assert svc.get(first).encrypted and files(folder)[0].endswith(".enc")
        age(session_factory, first, timedelta(minutes=9))
        assert svc.ensure_recent(program_id=PROGRAM, reason="generate") == first
        age(session_factory, first, timedelta(minutes=2))
        assert svc.ensure_recent(program_id=PROGRAM, reason="generate") != first
    with service_for(configured, encrypt=False) as svc:
        assert not svc.create(reason="plain").encrypted


def fake_pg_dump(tmp_path: Path) -> Path:
    """A pg_dump that writes part of a file, then fails."""
    script = tmp_path / "pg_dump_partial"
    script.write_text(
        "#!/bin/sh\n"
        'for a in "$@"; do case "$a" in --file=*) echo partial > "${a#--file=}";; esac; done\n'
        "echo 'pg_dump: error: connection lost' >&2\n"
        "exit 1\n"
    )
    script.chmod(0o755)
    return script


def test_a_failed_backup_raises_blocks_the_guard_and_leaves_no_file(
    db_url: str,
    settings: Settings,
    tmp_path: Path,
    session_factory: sessionmaker[Session],
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the backup folder should be")
    with BackupService(settings, database_url=db_url, folder=blocker / "backups") as svc:
        with pytest.raises(BackupFailed, match="cannot be created"):
            svc.create(reason="manual")
        with pytest.raises(BackupFailed):
            svc.ensure_recent(program_id=PROGRAM, reason="publish")
    assert blocker.read_text().startswith("a file")

    folder = tmp_path / "b"
    if kind(db_url) == "postgresql":
        broken = [
            (str(tmp_path / "no-such" / "pg_dump"), "pg_dump not found"),
            (str(fake_pg_dump(tmp_path)), "connection lost"),
        ]
        for pg_dump, why in broken:
            for encrypt in (False, True):
                with BackupService(
                    settings, database_url=db_url, folder=folder, encrypt=encrypt, pg_dump=pg_dump
                ) as svc:
                    with pytest.raises(BackupFailed, match=why):
                        svc.ensure_recent(program_id=PROGRAM, reason="publish")
    else:
        missing = f"sqlite:///{tmp_path / 'missing.db'}"
        with BackupService(settings, database_url=missing, folder=folder) as svc:
            with pytest.raises(BackupFailed, match="not found"):
                svc.create(reason="manual")
        assert not (tmp_path / "missing.db").exists()  # never created by the attempt
    assert files(folder) == []
    with session_factory() as s:
        assert s.scalars(select(BackupRow)).all() == []


def test_a_backup_that_cannot_be_recorded_removes_its_file(
    db_url: str, settings: Settings, folder: Path, session_factory: sessionmaker[Session]
) -> None:
    with BackupService(settings, database_url=db_url, folder=folder) as svc:
        svc.create(reason="first")
        with session_factory() as s, s.begin():  # make the bookkeeping insert fail
            s.execute(text("ALTER TABLE backups RENAME TO backups_moved"))
        try:
            with pytest.raises(BackupFailed, match="could not be recorded"):
                svc.create(reason="second")
        finally:
            with session_factory() as s, s.begin():
                s.execute(text("ALTER TABLE backups_moved RENAME TO backups"))
    assert [n for n in files(folder) if "second" in n] == []


# ------------------------------------------------------------------------ encryption


def test_an_encrypted_backup_is_a_fernet_token_and_round_trips(
    db_url: str, settings: Settings, folder: Path, fernet_keys: list[str]
) -> None:
    with BackupService(settings, database_url=db_url, folder=folder, encrypt=True) as svc:
        record = svc.create(reason="manual")
        path = Path(record.path)
        assert path.name.endswith(".enc") and record.encrypted
        stored = path.read_bytes()
        assert not stored.startswith(magic(db_url))
        assert hashlib.sha256(stored).hexdigest() == record.sha256
        plain = Fernet(fernet_keys[0].encode()).decrypt(stored)
        assert plain.startswith(magic(db_url))
        assert svc.verify(record.id)

    # another keyring cannot open it: verification fails
    other = Settings(data_dir=settings.data_dir, encryption_keys=Fernet.generate_key().decode())
    with BackupService(other, database_url=db_url, folder=folder) as svc:
        assert svc.verify(record.id) is False


# ------------------------------------------------------------------------ restore


def import_and_draft(factory: sessionmaker[Session]) -> str:
    mapping = generate_program("small", 1)
    mapping["program"]["id"] = PROGRAM
    mapping["people"][0]["military_status"] = "reserve"
    with transaction(factory) as s:
        programs.import_program(s, actor=ADMIN, mapping=mapping)
    with factory() as s:
        slots = s.scalars(
            select(SlotRow.id)
            .where(SlotRow.program_id == PROGRAM)
            .order_by(SlotRow.start, SlotRow.id)
            .limit(60)
        ).all()
    chosen = [
        Assignment(person_id=f"r{i % 12 + 1:02d}", slot_id=sid) for i, sid in enumerate(slots)
    ]
    with transaction(factory) as s:
        return schedules.save_draft(
            s,
            actor=ADMIN,
            program_id=PROGRAM,
            assignments=chosen,
            report_summary={"note": "backup test", "score": 1.5},
        )


def export(factory: sessionmaker[Session], version_id: str) -> str:
    with factory() as s:
        document = schedules.export_json(s, actor=ADMIN, program_id=PROGRAM, version_id=version_id)
    return json.dumps(document, sort_keys=True)


@pytest.fixture
def empty_target(db_url: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """A new, empty database of the same kind: a new PostgreSQL database or SQLite file."""
    if kind(db_url) != "postgresql":
        yield f"sqlite:///{tmp_path / 'restored' / 'rsched.db'}"
        return
    admin: Engine = request.getfixturevalue("_pg_admin")
    name = f"rsched_restore_{secrets.token_hex(4)}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield admin.url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.mark.parametrize("encrypt", [False, True], ids=["plain", "encrypted"])
def test_restore_into_an_empty_database_reproduces_the_export_byte_for_byte(
    encrypt: bool,
    db_url: str,
    settings: Settings,
    folder: Path,
    session_factory: sessionmaker[Session],
    empty_target: str,
) -> None:
    version_id = import_and_draft(session_factory)
    before = export(session_factory, version_id)
    with BackupService(settings, database_url=db_url, folder=folder, encrypt=encrypt) as svc:
        record = svc.create(reason="manual", program_id=PROGRAM)
        svc.restore(record.id, target_url=empty_target)

        engine = make_engine(empty_target)
        try:
            after = export(make_sessionmaker(engine), version_id)
        finally:
            engine.dispose()
        assert after == before

        with pytest.raises(RestoreRefused, match="not empty"):
            svc.restore(record.id, target_url=empty_target)
        svc.restore(record.id, target_url=empty_target, force=True)
        engine = make_engine(empty_target)
        try:
            assert export(make_sessionmaker(engine), version_id) == before
        finally:
            engine.dispose()

        flip_a_byte(Path(record.path))
        with pytest.raises(BackupFailed, match="checksum"):
            svc.restore(record.id, target_url=empty_target, force=True)


def test_restore_refuses_a_target_of_the_other_kind(
    db_url: str, service: BackupService, tmp_path: Path
) -> None:
    record = service.create(reason="manual")
    other = (
        f"sqlite:///{tmp_path / 'x.db'}"
        if kind(db_url) == "postgresql"
        else "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    )
    with pytest.raises(InvalidInput):
        service.restore(record.id, target_url=other)


# ------------------------------------------------------------------------ retention


def test_retention_keeps_two_and_the_baseline_and_dry_run_changes_nothing(
    service: BackupService, session_factory: sessionmaker[Session]
) -> None:
    baseline = service.create(reason="baseline", protected=True)
    old = [service.create(reason=f"old{i}") for i in range(3)]
    recent = service.create(reason="recent")
    for record, days in zip([baseline, *old, recent], [90, 60, 45, 40, 1], strict=True):
        age(session_factory, record.id, timedelta(days=days))
    # newest first: recent (1 d), old2 (40 d), old1 (45 d), old0 (60 d), baseline (90 d)
    paths = {r.id: Path(r.path) for r in [baseline, *old, recent]}

    def snapshot() -> dict[str, Any]:
        with session_factory() as s:
            rows = {r.id: (r.deleted_at, r.verified_at) for r in s.scalars(select(BackupRow))}
        return {"rows": rows, "files": {i: p.exists() for i, p in paths.items()}}

    before = snapshot()
    plan = service.retention(dry_run=True)
    assert plan.dry_run
    assert {r.id for r in plan.delete} == {old[0].id, old[1].id}
    assert {r.id for r in plan.keep} == {baseline.id, old[2].id, recent.id}
    assert snapshot() == before

    def not_leader(_s: Session) -> None:
        raise NotLeader("another process leads")

    with pytest.raises(NotLeader):
        service.retention(dry_run=False, fence=not_leader)
    assert snapshot() == before

    done = service.retention(dry_run=False, fence=lambda _s: None)
    assert {r.id for r in done.delete} == {old[0].id, old[1].id} and not done.problems
    assert all(r.deleted_at is not None for r in done.delete)
    assert not paths[old[0].id].exists() and not paths[old[1].id].exists()
    assert all(paths[i].exists() for i in (baseline.id, old[2].id, recent.id))
    assert {r.id for r in service.list()} == {baseline.id, old[2].id, recent.id}
    assert {r.id for r in service.list(include_deleted=True)} == set(paths)

    # a year later nothing new is younger than 30 days: still the two newest + baseline
    later = service.retention(dry_run=False, now=datetime.now(UTC) + timedelta(days=365))
    assert later.delete == ()
    assert {r.id for r in service.list()} == {baseline.id, old[2].id, recent.id}


# ------------------------------------------------------------------------ command line


@pytest.fixture
def cli_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fernet_keys: list[str]
) -> Iterator[pytest.MonkeyPatch]:
    """The commands' environment: a migrated SQLite database in ``tmp_path``."""
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    upgrade(url)
    for name in ("RSCHED_BACKUP_ENCRYPT", "RSCHED_BACKUP_MAX_AGE_MINUTES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RSCHED_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("RSCHED_DATABASE_URL", url)
    monkeypatch.setenv("RSCHED_ENCRYPTION_KEYS", ",".join(fernet_keys))
    get_settings.cache_clear()
    yield monkeypatch
    get_settings.cache_clear()


def test_the_backup_commands(
    tmp_path: Path, cli_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli(["backup", "create", "--reason", "baseline", "--protected"]) == 0
    assert cli(["backup", "create", "--encrypt"]) == 0
    out = capsys.readouterr().out
    baseline, encrypted = re.findall(r"^[0-9a-f]{32}$", out, flags=re.M)
    assert cli(["backup", "list"]) == 0
    listing = capsys.readouterr().out
    assert "protected" in listing and "encrypted" in listing
    assert cli(["backup", "verify", encrypted]) == 0
    assert cli(["backup", "verify", "nope"]) == 3
    target = f"sqlite:///{tmp_path / 'restored.db'}"
    assert cli(["backup", "restore", encrypted, "--target-url", target]) == 0
    assert cli(["backup", "restore", encrypted, "--target-url", target]) == 3
    assert "not empty" in capsys.readouterr().err
    assert cli(["backup", "restore", encrypted, "--target-url", "mysql://x/y"]) == 2
    assert cli(["backup", "retention", "--dry-run"]) == 0
    assert "would delete 0, keep 2" in capsys.readouterr().out
    assert cli(["backup", "retention"]) == 0
    assert "deleted 0, keep 2" in capsys.readouterr().out
    flip_a_byte(
        tmp_path / "backups" / next(n for n in files(tmp_path / "backups") if "baseline" in n)
    )
    assert cli(["backup", "verify", baseline]) == 1
    assert "MISMATCH" in capsys.readouterr().out


def test_backup_create_follows_the_backup_settings(
    cli_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    cli_env.setenv("RSCHED_BACKUP_ENCRYPT", "yes")
    get_settings.cache_clear()
    assert cli(["backup", "create"]) == 0
    assert cli(["backup", "list"]) == 0
    assert "encrypted" in capsys.readouterr().out
    cli_env.setenv("RSCHED_BACKUP_MAX_AGE_MINUTES", "0")
    get_settings.cache_clear()
    assert cli(["backup", "create"]) == 2
    assert "RSCHED_BACKUP_MAX_AGE_MINUTES: " in capsys.readouterr().err
