"""Personal calendar feeds: secret, revocable tokens and the ICS text behind them.

A feed is read with its secret token alone (no actor: the token is the credential); only
the token's SHA-256 is stored, so the secret is shown once, at creation. Its owner (or a
coordinator of the program) creates and revokes them.

Reading a feed is the hottest public path of the service (every calendar client of every
person polls it), so it is two index-only-shaped queries and no domain objects: the
token joined to its person and program, then the person's assignments in the active
versions joined to their slots and shift types, starting from the (few) active versions
so the plan does not depend on fresh planner statistics. The text is deterministic for
the same data (DTSTAMP is the creation time of the version holding the event), so the
route can answer ``If-None-Match`` with 304.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from datetime import UTC, datetime

from sqlalchemy import bindparam, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session, sessionmaker

from rsched.db import mapping as m
from rsched.db.models import (
    AssignmentRow,
    FeedTokenRow,
    PersonRow,
    ProgramRow,
    ScheduleVersionRow,
    ShiftTypeRow,
    SlotRow,
)
from rsched.domain import NotFound, ScheduleStatus
from rsched.interchange.ics import Event, calendar_name, render_calendar
from rsched.services.access import Actor, Need
from rsched.services.scope import Viewer, viewer

_tokens, _people, _programs = FeedTokenRow.__table__, PersonRow.__table__, ProgramRow.__table__
_versions, _assignments = ScheduleVersionRow.__table__, AssignmentRow.__table__
_slots, _shifts = SlotRow.__table__, ShiftTypeRow.__table__
_token, _person, _program = _tokens.c, _people.c, _programs.c
_version, _assignment, _slot, _shift = _versions.c, _assignments.c, _slots.c, _shifts.c

_FEED = (
    select(
        _token.program_id,
        _token.person_id,
        _token.revoked_at,
        _person.name,
        _program.name,
        _program.timezone,
    )
    .join(_people, (_person.program_id == _token.program_id) & (_person.id == _token.person_id))
    .join(_programs, _program.id == _token.program_id)
    .where(_token.token_hash == bindparam("token_hash"))
)
_EVENTS = (
    select(
        _slot.id,
        _slot.shift,
        _slot.kind,
        _slot.start,
        _slot.end,
        _shift.name,
        _version.created_at,
    )
    .select_from(_versions)
    .join(
        _assignments,
        (_assignment.program_id == _version.program_id) & (_assignment.version_id == _version.id),
    )
    .join(_slots, (_slot.program_id == _assignment.program_id) & (_slot.id == _assignment.slot_id))
    .outerjoin(_shifts, (_shift.program_id == _slot.program_id) & (_shift.code == _slot.shift))
    .where(
        _version.program_id == bindparam("program_id"),
        _version.status == ScheduleStatus.ACTIVE.value,
        _assignment.person_id == bindparam("person_id"),
    )
    .order_by(_slot.start, _slot.id)
)
"""Both statements are built once (parameters bound per call): building and keying a
statement per request was a tenth of the feed's time."""


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _feed_owner(session: Session, view: Viewer, person_id: str) -> None:
    """Coordinators manage anyone's feed; faculty and residents their own."""
    if (
        not view.sees_private(person_id)
        or session.get(PersonRow, (view.program.id, person_id)) is None
    ):
        raise NotFound(f"person {person_id!r} not found")


def create_feed_token(session: Session, *, actor: Actor, program_id: str, person_id: str) -> str:
    """A new secret feed token for ``person_id``, returned once; only its hash is kept."""
    view = viewer(session, actor, program_id, Need.READ_PUBLISHED)
    _feed_owner(session, view, person_id)
    token = secrets.token_urlsafe(32)
    session.add(
        FeedTokenRow(
            id=uuid.uuid4().hex,
            program_id=program_id,
            person_id=person_id,
            token_hash=token_hash(token),
            created_at=datetime.now(UTC),
        )
    )
    session.flush()
    return token


def revoke_feed_token(session: Session, *, actor: Actor, program_id: str, person_id: str) -> int:
    """Revoke every live feed token of ``person_id``; how many were revoked."""
    view = viewer(session, actor, program_id, Need.READ_PUBLISHED)
    _feed_owner(session, view, person_id)
    result = session.execute(
        update(FeedTokenRow)
        .where(
            FeedTokenRow.program_id == program_id,
            FeedTokenRow.person_id == person_id,
            FeedTokenRow.revoked_at.is_(None),
        )
        .values(revoked_at=datetime.now(UTC))
    )
    return int(getattr(result, "rowcount", 0) or 0)


def calendar_by_feed_token(db: Session | Connection, token: str) -> str:
    """The ICS text of the token's person: their assignments in the program's active
    versions, by start. An unknown or revoked token answers NotFound."""
    found = db.execute(_FEED, {"token_hash": token_hash(token)}).first()
    if found is None or found.revoked_at is not None:
        raise NotFound("calendar feed not found")
    program_id, person_id, _, person_name, program_name, timezone = found
    rows = db.execute(_EVENTS, {"program_id": program_id, "person_id": person_id})
    events: list[Event] = []
    seen: set[str] = set()
    for slot_id, shift, kind, start, end, shift_name, stamp in rows:
        if slot_id in seen:  # one slot in two active versions: one event
            continue
        seen.add(slot_id)
        events.append(
            Event(
                slot_id=slot_id,
                person_id=person_id,
                start=m.as_utc(start),
                end=m.as_utc(end),
                shift=shift,
                shift_name=shift_name,
                kind=kind,
                program_name=program_name,
                stamp=m.as_utc(stamp).replace(microsecond=0),
            )
        )
    return render_calendar(calendar_name(program_name, person_name), timezone, events)


def read_calendar(factory: sessionmaker[Session], token: str) -> str:
    """:func:`calendar_by_feed_token` on a connection of its own, for callers without a
    session (the feed route: no ORM session is needed for two plain reads).

    Its two statements run in autocommit mode: each reads a consistent snapshot of its
    own, and no BEGIN and ROLLBACK round trips surround them (this path writes nothing,
    and a publish landing between the two only means the newer schedule is shown)."""
    engine = factory.kw["bind"]
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        return calendar_by_feed_token(conn, token)
