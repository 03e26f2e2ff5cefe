"""Notifications through a transactional outbox.

``enqueue`` adds an event row in the caller's session, so the event commits with the
change it describes and vanishes with it when the transaction rolls back: no event is
ever sent for a change that did not happen, and none is lost for one that did.

``deliver_pending`` (run by the worker) POSTs each due event to every configured
webhook (``Settings.webhooks``, from ``RSCHED_WEBHOOKS``):

- a plain ``http(s)://`` URL gets the event as JSON
  ``{"id", "kind", "program_id", "payload", "created_at"}``;
- a ``slack+https://`` URL gets a Slack-compatible message ``{"text", "blocks"}`` POSTed
  to the ``https://`` URL behind the prefix (``slack+http://`` likewise, for tests).

Delivery is at least once. Receivers de-duplicate by the event ``id`` (a crash between
a POST and the database update resends it).

Per-webhook state (the documented choice): the event remembers, in a reserved key of
its payload (``_delivery``: SHA-256 prefix of the URL → time accepted), which webhooks
answered 2xx, and a retry POSTs only to the others, so a webhook that accepted an event
never gets it again. The reserved key is never sent. URLs themselves are not stored
(a Slack webhook URL is a secret). The event is marked delivered (``delivered_at``) once
every configured webhook has accepted it. On any failure ``attempts`` grows,
``last_error`` says what failed, and the event is due again after
``min(2**attempts * 10 s, 1 h)`` (``attempts`` counted before this failure: 10 s, 20 s,
40 s, … capped at an hour). Events are retried for ever: none is dropped.

Claims: an event is claimed by a conditional update of its ``next_attempt_at`` (to now +
a lease covering the whole batch), so two workers never POST the same event at the same
time; a worker that dies mid-batch leaves its events due again when the lease ends.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from rsched.db.models import OutboxRow
from rsched.domain.errors import FieldError, InvalidInput

KIND_MAX = 64
STATE_KEY = "_delivery"
BASE_DELAY = timedelta(seconds=10)
MAX_DELAY = timedelta(hours=1)
TIMEOUT_SECONDS = 5.0
SLACK_PREFIX = "slack+"
ERROR_MAX = 2000

Post = Callable[[str, dict[str, Any]], int]
"""POST a JSON body to a URL; the HTTP status code (raises on a transport error)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DeliveryReport:
    delivered: tuple[int, ...] = ()
    """Events every webhook has now accepted."""
    retrying: tuple[int, ...] = ()
    """Events that failed for at least one webhook, rescheduled with backoff."""
    errors: tuple[tuple[int, str], ...] = ()
    skipped: int = 0
    """Due events another worker claimed first."""


@dataclass(frozen=True, slots=True)
class Webhook:
    url: str
    """The URL to POST to (without the ``slack+`` prefix)."""
    slack: bool

    @classmethod
    def parse(cls, raw: str) -> Webhook:
        value = raw.strip()
        slack = value.startswith(SLACK_PREFIX)
        url = value[len(SLACK_PREFIX) :] if slack else value
        parts = urlsplit(url)
        if parts.scheme not in {"http", "https"} or not parts.netloc:
            raise InvalidInput(
                FieldError(
                    "webhooks",
                    f"{_label(value)}: must be an http(s):// or slack+https:// URL",
                )
            )
        return cls(url=url, slack=slack)

    @property
    def key(self) -> str:
        """How the per-event state names this webhook (never the URL: it may hold a
        secret)."""
        tag = "slack+" if self.slack else ""
        return hashlib.sha256((tag + self.url).encode("utf-8")).hexdigest()[:16]

    @property
    def label(self) -> str:
        return _label(self.url)


def _label(url: str) -> str:
    """Scheme and host of a URL, for errors and logs (the path may be a secret)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.netloc else "<invalid url>"


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def backoff(attempts: int) -> timedelta:
    """Delay before the next try of an event that has failed ``attempts`` times before
    this failure: ``min(2**attempts * 10 s, 1 h)``."""
    if attempts >= 9:  # 2**9 * 10 s > 1 h
        return MAX_DELAY
    delay: timedelta = BASE_DELAY * (1 << max(attempts, 0))
    return min(delay, MAX_DELAY)


# ------------------------------------------------------------------------ enqueue


def enqueue(
    session: Session,
    *,
    kind: str,
    program_id: str | None,
    payload: dict[str, Any],
    now: datetime | None = None,
) -> OutboxRow:
    """Add an event to the caller's transaction (committed or rolled back with it)."""
    if not isinstance(kind, str) or not kind.strip() or len(kind) > KIND_MAX:
        raise InvalidInput(FieldError("kind", f"an event kind of 1-{KIND_MAX} characters"))
    if STATE_KEY in payload:
        raise InvalidInput(FieldError(f"payload.{STATE_KEY}", "is reserved for delivery state"))
    try:
        plain = json.loads(json.dumps(payload, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise InvalidInput(FieldError("payload", f"must be plain JSON data ({exc})")) from None
    at = _utc(now) if now is not None else datetime.now(UTC)
    row = OutboxRow(
        program_id=program_id,
        kind=kind,
        payload=plain,
        created_at=at,
        attempts=0,
        next_attempt_at=at,
        delivered_at=None,
        last_error=None,
    )
    session.add(row)
    return row


# ------------------------------------------------------------------------ bodies


def json_body(row: OutboxRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "kind": row.kind,
        "program_id": row.program_id,
        "payload": {k: v for k, v in (row.payload or {}).items() if k != STATE_KEY},
        "created_at": _utc(row.created_at).isoformat(),
    }


def _mrkdwn(value: Any) -> str:
    return str(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def summary(kind: str, program_id: str | None, payload: dict[str, Any]) -> str:
    """One line for people (the Slack text)."""
    where = f"program *{_mrkdwn(program_id)}*" if program_id else "rsched"
    p = {k: _mrkdwn(v) for k, v in payload.items() if k != STATE_KEY}
    if kind in {"publish", "swap"}:
        what = "Schedule published" if kind == "publish" else "Swap published"
        line = f"{what} in {where}: version `{p.get('version_id', '?')}`"
        return line + (f" by {p['actor']}" if p.get("actor") else "")
    if kind == "rollback":
        line = f"Schedule rolled back in {where}: restored `{p.get('restored', '?')}`"
        return line + (f" (reason: {p['reason']})" if p.get("reason") else "")
    if kind == "approval":
        return (
            f"Approval {p.get('decision', 'decided')} in {where}: "
            f"{p.get('action', '?')} on `{p.get('target', '?')}`"
        )
    return f"Event {_mrkdwn(kind)} in {where}"


def slack_body(row: OutboxRow) -> dict[str, Any]:
    text = summary(row.kind, row.program_id, row.payload or {})
    context = f"rsched event {row.id} · {row.kind} · {_utc(row.created_at).isoformat()}"
    return {
        "text": text,
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": text}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": context}]},
        ],
    }


# ------------------------------------------------------------------------ delivery


def httpx_post(timeout: float = TIMEOUT_SECONDS) -> Post:
    """The real POST: JSON body, short timeout, no redirects followed."""

    def post(url: str, body: dict[str, Any]) -> int:
        response = httpx.post(url, json=body, timeout=timeout, follow_redirects=False)
        return response.status_code

    return post


def _claim(
    factory: sessionmaker[Session], *, now: datetime, batch: int, lease: timedelta
) -> tuple[list[int], int]:
    """Claim up to ``batch`` due events (oldest first); their ids, and how many due
    events another worker took first."""
    with factory() as s, s.begin():
        stmt = (
            select(OutboxRow.id, OutboxRow.next_attempt_at)
            .where(OutboxRow.delivered_at.is_(None), OutboxRow.next_attempt_at <= now)
            .order_by(OutboxRow.next_attempt_at, OutboxRow.id)
            .limit(batch)
        )
        if s.get_bind().dialect.name == "postgresql":
            stmt = stmt.with_for_update(skip_locked=True)
        due = list(s.execute(stmt))
    claimed: list[int] = []
    for event_id, seen in due:
        with factory() as s, s.begin():
            result = s.execute(
                update(OutboxRow)
                .where(
                    OutboxRow.id == event_id,
                    OutboxRow.delivered_at.is_(None),
                    OutboxRow.next_attempt_at == seen,
                )
                .values(next_attempt_at=now + lease)
                .execution_options(synchronize_session=False)
            )
            if int(getattr(result, "rowcount", 0) or 0) == 1:
                claimed.append(int(event_id))
    return claimed, len(due) - len(claimed)


def deliver_pending(
    factory: sessionmaker[Session],
    *,
    webhooks: Sequence[str],
    post: Post | None = None,
    now: datetime | None = None,
    batch: int = 50,
    timeout: float = TIMEOUT_SECONDS,
) -> DeliveryReport:
    """Deliver the due events (up to ``batch``) to every webhook. With no webhook
    configured nothing is sent and the events wait (they are not dropped)."""
    hooks = [Webhook.parse(u) for u in webhooks]
    if not hooks or batch < 1:
        return DeliveryReport()
    send = post or httpx_post(timeout)
    at = _utc(now) if now is not None else datetime.now(UTC)
    lease = timedelta(seconds=timeout * len(hooks) * batch + 60)
    claimed, skipped = _claim(factory, now=at, batch=batch, lease=lease)
    delivered: list[int] = []
    retrying: list[int] = []
    errors: list[tuple[int, str]] = []
    for event_id in claimed:
        with factory() as s:
            row = s.get(OutboxRow, event_id)
            if row is None or row.delivered_at is not None:
                continue
            s.expunge(row)
        state: dict[str, str] = dict((row.payload or {}).get(STATE_KEY) or {})
        failures: list[str] = []
        for hook in hooks:
            if hook.key in state:
                continue
            body = slack_body(row) if hook.slack else json_body(row)
            try:
                status = send(hook.url, body)
            except Exception as exc:  # any transport failure is retried later
                failures.append(f"{hook.label}: {type(exc).__name__}: {exc}")
                continue
            if 200 <= status < 300:
                state[hook.key] = at.isoformat()
            else:
                failures.append(f"{hook.label}: HTTP {status}")
        payload = {**(row.payload or {}), STATE_KEY: state}
        values: dict[str, Any] = {"payload": payload}
        if failures:
            message = "; ".join(failures)[:ERROR_MAX]
            values |= {
                "attempts": row.attempts + 1,
                "next_attempt_at": at + backoff(row.attempts),
                "last_error": message,
            }
            retrying.append(event_id)
            errors.append((event_id, message))
        else:
            values |= {"delivered_at": at, "last_error": None}
            delivered.append(event_id)
        with factory() as s, s.begin():
            s.execute(
                update(OutboxRow)
                .where(OutboxRow.id == event_id, OutboxRow.delivered_at.is_(None))
                .values(**values)
                .execution_options(synchronize_session=False)
            )
    return DeliveryReport(
        delivered=tuple(delivered),
        retrying=tuple(retrying),
        errors=tuple(errors),
        skipped=skipped,
    )
