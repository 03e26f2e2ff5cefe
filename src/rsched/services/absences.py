"""A program's absences: list, get, create, update and delete (see ``scope`` for who
sees what). Faculty and residents see their own; coordinators and admins write them. An
absence must not overlap another absence of the same person.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import date, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from rsched.db import mapping as m
from rsched.db.models import AbsenceRow
from rsched.domain import Absence, FieldError, InvalidInput, NotFound
from rsched.domain.calendar import local_midnight, zone
from rsched.services import scope
from rsched.services.access import Actor, Need
from rsched.services.schemas import AbsenceCreate, AbsencePublic, AbsenceUpdate, Page
from rsched.services.scope import Viewer, page, viewer


def _absence_public(view: Viewer, a: Absence) -> AbsencePublic:
    return AbsencePublic(
        id=a.id,
        person_id=a.person_id,
        start=a.start,
        end=a.end,
        blocking=a.blocking,
        leave_type=a.leave_type if view.sees_private(a.person_id) else None,
    )


def _checked_absence(session: Session, program_id: str, absence: Absence) -> Absence:
    """Known person, and no overlap with another absence of theirs (as the loader checks)."""
    scope.person_known(session, program_id, absence.person_id, "person_id")
    clash = session.scalar(
        select(AbsenceRow.id)
        .where(
            AbsenceRow.program_id == program_id,
            AbsenceRow.person_id == absence.person_id,
            AbsenceRow.id != absence.id,
            AbsenceRow.start < m.as_utc(absence.end),
            AbsenceRow.end > m.as_utc(absence.start),
        )
        .limit(1)
    )
    if clash is not None:
        raise InvalidInput(FieldError("start", f"overlaps absence {clash!r} of the same person"))
    return absence


def list_absences(
    session: Session,
    *,
    actor: Actor,
    program_id: str,
    limit: int = 100,
    offset: int = 0,
    person_id: str | None = None,
    start: date | None = None,
    end: date | None = None,
) -> Page[AbsencePublic]:
    """Absences overlapping the local days ``start``..``end`` (inclusive, either optional)."""
    view = viewer(session, actor, program_id, Need.READ_PUBLISHED)
    stmt = scope.own(
        select(AbsenceRow).where(AbsenceRow.program_id == program_id), AbsenceRow.person_id, view
    )
    tz = zone(view.program.timezone)
    if person_id is not None:
        stmt = stmt.where(AbsenceRow.person_id == person_id)
    if start is not None:
        stmt = stmt.where(AbsenceRow.end > local_midnight(start, tz))
    if end is not None:
        stmt = stmt.where(AbsenceRow.start < local_midnight(end + timedelta(days=1), tz))
    stmt = stmt.order_by(AbsenceRow.start, AbsenceRow.id)
    return page(
        session,
        stmt,
        limit=limit,
        offset=offset,
        convert=lambda r: _absence_public(view, m.absence_from_row(r)),
    )


def get_absence(
    session: Session, *, actor: Actor, program_id: str, absence_id: str
) -> AbsencePublic:
    view = viewer(session, actor, program_id, Need.READ_PUBLISHED)
    absence = m.absence_from_row(scope.row(session, AbsenceRow, program_id, absence_id, "absence"))
    if not view.sees_private(absence.person_id):
        raise NotFound(f"absence {absence_id!r} not found")
    return _absence_public(view, absence)


def create_absence(
    session: Session, *, actor: Actor, program_id: str, data: AbsenceCreate
) -> AbsencePublic:
    view = viewer(session, actor, program_id, Need.MANAGE)
    absence = Absence(**{**data.model_dump(), "id": data.id or scope.new_id("absence")})
    scope.fresh(session, AbsenceRow, program_id, absence.id, "id")
    _checked_absence(session, program_id, absence)
    session.add(AbsenceRow(program_id=program_id, **m.absence_values(absence)))
    session.flush()
    return _absence_public(view, absence)


def update_absence(
    session: Session, *, actor: Actor, program_id: str, absence_id: str, data: AbsenceUpdate
) -> AbsencePublic:
    view = viewer(session, actor, program_id, Need.MANAGE)
    row = scope.row(session, AbsenceRow, program_id, absence_id, "absence")
    absence = replace(m.absence_from_row(row), **scope.changes(data, set()))
    _checked_absence(session, program_id, absence)
    scope.store(row, m.absence_values(absence))
    session.flush()
    return _absence_public(view, absence)


def delete_absence(session: Session, *, actor: Actor, program_id: str, absence_id: str) -> None:
    viewer(session, actor, program_id, Need.MANAGE)
    session.delete(scope.row(session, AbsenceRow, program_id, absence_id, "absence"))
    session.flush()
