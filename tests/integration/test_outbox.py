"""The transactional outbox on SQLite and PostgreSQL: an event lives and dies with the
transaction that wrote it; delivery POSTs JSON and Slack bodies to a real HTTP server on
127.0.0.1, retries a failing webhook with exponential backoff, and never sends an event
to a webhook twice once it has accepted it."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from rsched.db.mapping import as_utc
from rsched.db.models import OutboxRow
from rsched.domain import InvalidInput
from rsched.services import approvals, outbox
from rsched.services.access import Actor

ADMIN = Actor(user_id="admin", is_admin=True)


class Receiver:
    """A tiny webhook receiver: records every POST; ``fail[path] = n`` answers HTTP 500
    to the next n POSTs on that path."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.received: list[tuple[str, dict[str, Any], int]] = []
        self.fail: dict[str, int] = {}
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"null")
                with receiver.lock:
                    left = receiver.fail.get(self.path, 0)
                    status = 500 if left > 0 else 200
                    if left > 0:
                        receiver.fail[self.path] = left - 1
                    receiver.received.append((self.path, body, status))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]

    def url(self, path: str, *, slack: bool = False) -> str:
        return f"{'slack+' if slack else ''}http://127.0.0.1:{self.port}{path}"

    def bodies(self, path: str, *, ok_only: bool = True) -> list[dict[str, Any]]:
        with self.lock:
            return [b for p, b, st in self.received if p == path and (st == 200 or not ok_only)]

    def count(self, path: str) -> int:
        with self.lock:
            return sum(1 for p, _b, _s in self.received if p == path)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    thread = threading.Thread(target=r.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield r
    finally:
        r.server.shutdown()
        r.server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def factory(session_factory: sessionmaker[Session]) -> sessionmaker[Session]:
    return session_factory


def add_event(factory: sessionmaker[Session], kind: str = "publish", **payload: Any) -> int:
    with factory() as s, s.begin():
        row = outbox.enqueue(s, kind=kind, program_id="p1", payload=payload or {"version_id": "v1"})
        s.flush()
        return row.id


def event(factory: sessionmaker[Session], event_id: int) -> OutboxRow:
    with factory() as s:
        row = s.get(OutboxRow, event_id)
        assert row is not None
        s.expunge(row)
        return row


class Boom(Exception):
    pass


def test_an_event_of_a_rolled_back_transaction_is_never_delivered(
    factory: sessionmaker[Session], receiver: Receiver
) -> None:
    with pytest.raises(Boom), factory() as s, s.begin():
        outbox.enqueue(s, kind="publish", program_id="p1", payload={"version_id": "gone"})
        s.flush()
        raise Boom
    kept = add_event(factory, version_id="kept")
    # approvals.decide writes its event in the caller's transaction: rolled back, none
    with factory() as s, s.begin():
        doomed = approvals.request_approval(
            s, actor=ADMIN, program_id="p1", action="rollback", target="v1", reason="r"
        )
    with pytest.raises(Boom), factory() as s, s.begin():
        approvals.decide(s, actor=ADMIN, token=doomed.token, approve=True, program_id="p1")
        raise Boom
    with factory() as s, s.begin():
        approvals.decide(s, actor=ADMIN, token=doomed.token, approve=False, program_id="p1")

    report = outbox.deliver_pending(factory, webhooks=[receiver.url("/hook")])

    bodies = receiver.bodies("/hook")
    assert len(report.delivered) == 2
    assert [b["kind"] for b in bodies] == ["publish", "approval"]
    assert bodies[0]["id"] == kept and bodies[0]["payload"] == {"version_id": "kept"}
    assert bodies[1]["payload"]["decision"] == "denied"
    assert bodies[1]["payload"]["approval_id"] == doomed.id
    with factory() as s:  # the rolled-back events were never written at all
        assert sorted(s.scalars(select(OutboxRow.kind))) == ["approval", "publish"]


def test_json_and_slack_bodies_reach_the_webhooks_once(
    factory: sessionmaker[Session], receiver: Receiver
) -> None:
    event_id = add_event(
        factory, version_id="v42", superseded=["v41"], staging_id="s1", actor="u<1>"
    )
    hooks = [receiver.url("/hook"), receiver.url("/slack", slack=True)]

    report = outbox.deliver_pending(factory, webhooks=hooks)

    assert report.delivered == (event_id,) and not report.retrying
    (body,) = receiver.bodies("/hook")
    assert set(body) == {"id", "kind", "program_id", "payload", "created_at"}
    assert body["id"] == event_id and body["kind"] == "publish" and body["program_id"] == "p1"
    assert body["payload"] == {
        "version_id": "v42",
        "superseded": ["v41"],
        "staging_id": "s1",
        "actor": "u<1>",
    }
    assert datetime.fromisoformat(body["created_at"]).tzinfo is not None
    (slack,) = receiver.bodies("/slack")
    assert set(slack) == {"text", "blocks"}
    assert "v42" in slack["text"] and "p1" in slack["text"]
    assert "u&lt;1&gt;" in slack["text"]  # Slack control characters escaped
    assert slack["blocks"][0] == {
        "type": "section",
        "text": {"type": "mrkdwn", "text": slack["text"]},
    }
    row = event(factory, event_id)
    assert row.delivered_at is not None and row.last_error is None and row.attempts == 0

    later = datetime.now(UTC) + timedelta(days=1)
    again = outbox.deliver_pending(factory, webhooks=hooks, now=later)
    assert again == outbox.DeliveryReport()
    assert receiver.count("/hook") == 1 and receiver.count("/slack") == 1


def test_a_failing_webhook_is_retried_with_backoff_and_delivered_later(
    factory: sessionmaker[Session], receiver: Receiver
) -> None:
    event_id = add_event(factory, version_id="v7")
    receiver.fail["/flaky"] = 2
    hooks = [receiver.url("/hook"), receiver.url("/flaky")]
    t0 = datetime.now(UTC) + timedelta(seconds=1)

    first = outbox.deliver_pending(factory, webhooks=hooks, now=t0)
    assert first.retrying == (event_id,) and not first.delivered
    row = event(factory, event_id)
    assert row.delivered_at is None and row.attempts == 1
    assert as_utc(row.next_attempt_at) == t0 + timedelta(seconds=10)
    assert row.last_error == f"http://127.0.0.1:{receiver.port}: HTTP 500"

    early = outbox.deliver_pending(factory, webhooks=hooks, now=t0 + timedelta(seconds=9))
    assert early == outbox.DeliveryReport()
    assert receiver.count("/flaky") == 1

    t1 = t0 + timedelta(seconds=10)
    second = outbox.deliver_pending(factory, webhooks=hooks, now=t1)
    assert second.retrying == (event_id,)
    row = event(factory, event_id)
    assert row.attempts == 2 and as_utc(row.next_attempt_at) == t1 + timedelta(seconds=20)

    t2 = t1 + timedelta(seconds=20)
    third = outbox.deliver_pending(factory, webhooks=hooks, now=t2)
    assert third.delivered == (event_id,)
    row = event(factory, event_id)
    assert as_utc(row.delivered_at) == t2 and row.last_error is None  # type: ignore[arg-type]

    # the healthy webhook accepted on the first try and never got it again
    assert receiver.count("/hook") == 1
    assert receiver.count("/flaky") == 3 and len(receiver.bodies("/flaky")) == 1
    assert receiver.bodies("/flaky")[0]["id"] == event_id
    outbox.deliver_pending(factory, webhooks=hooks, now=t2 + timedelta(hours=2))
    assert receiver.count("/hook") == 1 and receiver.count("/flaky") == 3


def test_transport_errors_are_retried_and_the_backoff_is_capped(
    factory: sessionmaker[Session],
) -> None:
    event_id = add_event(factory)
    calls: list[str] = []

    def down(url: str, body: dict[str, Any]) -> int:
        calls.append(url)
        raise ConnectionError("refused")

    at = datetime.now(UTC) + timedelta(seconds=1)
    for attempt in range(12):
        report = outbox.deliver_pending(
            factory, webhooks=["https://hooks.example.org/secret/path"], post=down, now=at
        )
        assert report.retrying == (event_id,)
        row = event(factory, event_id)
        assert row.attempts == attempt + 1
        assert as_utc(row.next_attempt_at) - at == min(
            timedelta(seconds=10 * 2**attempt), timedelta(hours=1)
        )
        assert row.last_error == "https://hooks.example.org: ConnectionError: refused"
        at = as_utc(row.next_attempt_at)
    assert len(calls) == 12 and row.delivered_at is None  # never dropped

    report = outbox.deliver_pending(
        factory, webhooks=["https://hooks.example.org/x"], post=lambda u, b: 204, now=at
    )
    assert report.delivered == (event_id,)


def test_two_deliverers_at_once_send_each_event_once(
    factory: sessionmaker[Session], receiver: Receiver
) -> None:
    ids = [add_event(factory, version_id=f"v{i}") for i in range(20)]
    hooks = [receiver.url("/hook")]
    reports: list[outbox.DeliveryReport] = []
    start = threading.Barrier(2)

    def run() -> None:
        start.wait()
        reports.append(outbox.deliver_pending(factory, webhooks=hooks, batch=20))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    sent = sorted(b["id"] for b in receiver.bodies("/hook"))
    assert sent == sorted(ids)
    assert sorted(i for r in reports for i in r.delivered) == sorted(ids)


def test_no_webhook_configured_keeps_events_waiting(factory: sessionmaker[Session]) -> None:
    event_id = add_event(factory)
    assert outbox.deliver_pending(factory, webhooks=[]) == outbox.DeliveryReport()
    assert event(factory, event_id).delivered_at is None


def test_bad_webhooks_and_bad_events_are_refused() -> None:
    # RSCHED_WEBHOOKS itself is checked by Settings (tests/unit/test_settings.py).
    with pytest.raises(InvalidInput) as err:
        outbox.Webhook.parse("ftp://nope.example/secret")
    assert "secret" not in str(err.value)
    with pytest.raises(InvalidInput):
        outbox.enqueue(None, kind="x", program_id=None, payload={"_delivery": {}})  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        outbox.enqueue(None, kind="x", program_id=None, payload={"t": datetime.now()})  # type: ignore[arg-type]
