"""A program's requests (a person asks to work, or not to work, a day): list, get,
create, update and delete (see ``scope`` for who sees what). Faculty and residents see and
submit their own; coordinators and admins submit, change and delete anyone's.
"""

from __future__ import annotations

from dataclasses import replace

from sqlalchemy import select
from sqlalchemy.orm import Session

from rsched.db import mapping as m
from rsched.db.models import RequestRow, ShiftTypeRow
from rsched.domain import FieldError, InvalidInput, NotFound, Request
from rsched.services import scope
from rsched.services.access import Actor, Forbidden, Need
from rsched.services.schemas import Page, RequestCreate, RequestPublic, RequestUpdate
from rsched.services.scope import Viewer, page, viewer


def _request_public(r: Request) -> RequestPublic:
    return RequestPublic(
        id=r.id, person_id=r.person_id, day=r.day, wants=r.wants, weight=r.weight, shift=r.shift
    )


def _checked_request(session: Session, view: Viewer, request: Request) -> Request:
    program = view.program
    scope.person_known(session, program.id, request.person_id, "person_id")
    errors = []
    if not program.horizon_start <= request.day <= program.horizon_end:
        errors.append(
            FieldError("day", f"outside the horizon {program.horizon_start}..{program.horizon_end}")
        )
    if request.shift is not None and session.get(ShiftTypeRow, (program.id, request.shift)) is None:
        errors.append(FieldError("shift", f"unknown shift type {request.shift!r}"))
    if errors:
        raise InvalidInput(errors)
    return request


def list_requests(
    session: Session,
    *,
    actor: Actor,
    program_id: str,
    limit: int = 100,
    offset: int = 0,
    person_id: str | None = None,
) -> Page[RequestPublic]:
    view = viewer(session, actor, program_id, Need.READ_PUBLISHED)
    stmt = scope.own(
        select(RequestRow).where(RequestRow.program_id == program_id), RequestRow.person_id, view
    )
    if person_id is not None:
        stmt = stmt.where(RequestRow.person_id == person_id)
    stmt = stmt.order_by(RequestRow.day, RequestRow.id)
    return page(
        session,
        stmt,
        limit=limit,
        offset=offset,
        convert=lambda r: _request_public(m.request_from_row(r)),
    )


def get_request(
    session: Session, *, actor: Actor, program_id: str, request_id: str
) -> RequestPublic:
    view = viewer(session, actor, program_id, Need.READ_PUBLISHED)
    request = m.request_from_row(scope.row(session, RequestRow, program_id, request_id, "request"))
    if not view.sees_private(request.person_id):
        raise NotFound(f"request {request_id!r} not found")
    return _request_public(request)


def create_request(
    session: Session, *, actor: Actor, program_id: str, data: RequestCreate
) -> RequestPublic:
    """Coordinators submit for anyone; faculty and residents for themselves only."""
    view = viewer(session, actor, program_id, Need.READ_PUBLISHED)
    if not view.sees_private(data.person_id):
        raise Forbidden("you may submit requests only for yourself")
    request = Request(**{**data.model_dump(), "id": data.id or scope.new_id("request")})
    scope.fresh(session, RequestRow, program_id, request.id, "id")
    _checked_request(session, view, request)
    session.add(RequestRow(program_id=program_id, **m.request_values(request)))
    session.flush()
    return _request_public(request)


def update_request(
    session: Session, *, actor: Actor, program_id: str, request_id: str, data: RequestUpdate
) -> RequestPublic:
    view = viewer(session, actor, program_id, Need.MANAGE)
    row = scope.row(session, RequestRow, program_id, request_id, "request")
    request = replace(m.request_from_row(row), **scope.changes(data, {"shift"}))
    _checked_request(session, view, request)
    scope.store(row, m.request_values(request))
    session.flush()
    return _request_public(request)


def delete_request(session: Session, *, actor: Actor, program_id: str, request_id: str) -> None:
    viewer(session, actor, program_id, Need.MANAGE)
    session.delete(scope.row(session, RequestRow, program_id, request_id, "request"))
    session.flush()
