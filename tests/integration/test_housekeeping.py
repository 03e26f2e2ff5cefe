"""The leader's housekeeping: backup retention under the lease fence, outbox delivery."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from rsched.config import Settings
from rsched.db.models import BackupRow, OutboxRow
from rsched.services import outbox
from rsched.services.backups import BackupService
from rsched.services.control import SqlControlStore
from rsched.services.leader import LeaderLease
from rsched.worker.maintenance import Housekeeping, MaintenanceReport, maintenance_tick


class Receiver:
    """A webhook on 127.0.0.1 that accepts every POST and keeps its JSON body."""

    def __init__(self) -> None:
        received: list[dict[str, object]] = []

        class Hook(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.append(json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                return

        self.received = received
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    hook = Receiver()
    threading.Thread(target=hook.server.serve_forever, daemon=True).start()
    yield hook
    hook.server.shutdown()
    hook.server.server_close()


def leaders_pass(factory: sessionmaker[Session], housekeeping: Housekeeping) -> MaintenanceReport:
    lease = LeaderLease(factory, holder="leader", ttl=30)
    assert lease.try_acquire() is not None
    return maintenance_tick(factory, SqlControlStore(factory), lease, housekeeping=housekeeping)


def test_retention_and_delivery_run_in_the_leaders_pass(
    session_factory: sessionmaker[Session],
    db_url: str,
    tmp_path: Path,
    fernet_keys: list[str],
    receiver: Receiver,
) -> None:
    backups = BackupService(
        Settings(data_dir=tmp_path), database_url=db_url, folder=tmp_path / "backups"
    )
    made = [backups.create(reason="manual") for _ in range(3)]
    with session_factory() as s, s.begin():
        for age, backup in zip((42, 41, 40), made, strict=True):
            s.execute(
                update(BackupRow)
                .where(BackupRow.id == backup.id)
                .values(created_at=datetime.now(UTC) - timedelta(days=age))
            )
        outbox.enqueue(s, kind="publish", program_id=None, payload={"version_id": "v1"})

    report = leaders_pass(session_factory, Housekeeping(backups=backups, webhooks=(receiver.url,)))
    assert not report.failed, report.failed
    assert report.backups_deleted == 1  # three 40-day-old backups: the two newest stay
    assert report.events_delivered == 1 and receiver.received[0]["kind"] == "publish"
    with session_factory() as s:
        alive = list(s.scalars(select(BackupRow.id).where(BackupRow.deleted_at.is_(None))))
        assert sorted(alive) == sorted(b.id for b in made[1:])
        assert s.scalars(select(OutboxRow.delivered_at)).one() is not None


def test_the_leader_delivers_to_the_webhooks_of_the_settings(
    session_factory: sessionmaker[Session], db_url: str, tmp_path: Path, receiver: Receiver
) -> None:
    with session_factory() as s, s.begin():
        outbox.enqueue(s, kind="publish", program_id=None, payload={"version_id": "v1"})
    without = Settings(data_dir=tmp_path, database_url=db_url, webhooks=())
    report = leaders_pass(session_factory, Housekeeping.from_settings(without))
    assert "outbox (no RSCHED_WEBHOOKS)" in report.skipped
    assert report.events_delivered == 0 and receiver.received == []

    with_hook = Settings(data_dir=tmp_path, database_url=db_url, webhooks=(receiver.url,))
    report = leaders_pass(session_factory, Housekeeping.from_settings(with_hook))
    assert not report.failed, report.failed
    assert report.events_delivered == 1 and receiver.received[0]["kind"] == "publish"
    assert not any(skipped.startswith("outbox") for skipped in report.skipped)
