"""A program's people: list, get, create, update and delete (see ``scope`` for who sees
what). Faculty and residents see only their own record; another person's answers
NotFound. A person in a schedule version is deactivated, not deleted.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from rsched.db import mapping as m
from rsched.db.models import AssignmentRow, PersonRow
from rsched.domain import FieldError, InvalidInput, NotFound, Person, PersonKind
from rsched.services import scope
from rsched.services.access import Actor, Need
from rsched.services.schemas import Page, PersonCreate, PersonPublic, PersonUpdate
from rsched.services.scope import Viewer, page, viewer


def _person_public(view: Viewer, p: Person) -> PersonPublic:
    private = view.sees_private(p.id)
    return PersonPublic(
        id=p.id,
        name=p.name,
        kind=p.kind,
        pgy=p.pgy,
        tags=sorted(p.tags),
        active=p.active,
        military_status=p.military_status if private else None,
        accommodation_notes=p.accommodation_notes if private else None,
    )


def _person(fields: Mapping[str, Any]) -> Person:
    return Person(**{**fields, "tags": frozenset(fields.get("tags", ()))})


def list_people(
    session: Session,
    *,
    actor: Actor,
    program_id: str,
    limit: int = 100,
    offset: int = 0,
    kind: PersonKind | None = None,
    pgy: int | None = None,
    active: bool | None = None,
) -> Page[PersonPublic]:
    view = viewer(session, actor, program_id, Need.READ_PUBLISHED)
    stmt = scope.own(
        select(PersonRow).where(PersonRow.program_id == program_id), PersonRow.id, view
    )
    if kind is not None:
        stmt = stmt.where(PersonRow.kind == str(kind))
    if pgy is not None:
        stmt = stmt.where(PersonRow.pgy == pgy)
    if active is not None:
        stmt = stmt.where(PersonRow.active == active)
    return page(
        session,
        stmt.order_by(PersonRow.id),
        limit=limit,
        offset=offset,
        convert=lambda r: _person_public(view, m.person_from_row(r)),
    )


def get_person(session: Session, *, actor: Actor, program_id: str, person_id: str) -> PersonPublic:
    view = viewer(session, actor, program_id, Need.READ_PUBLISHED)
    if not view.manages and person_id != view.person_id:
        raise NotFound(f"person {person_id!r} not found")
    row = scope.row(session, PersonRow, program_id, person_id, "person")
    return _person_public(view, m.person_from_row(row))


def create_person(
    session: Session, *, actor: Actor, program_id: str, data: PersonCreate
) -> PersonPublic:
    view = viewer(session, actor, program_id, Need.MANAGE)
    person = _person(data.model_dump())
    scope.fresh(session, PersonRow, program_id, person.id, "id")
    session.add(PersonRow(program_id=program_id, **m.person_values(person)))
    session.flush()
    return _person_public(view, person)


def update_person(
    session: Session, *, actor: Actor, program_id: str, person_id: str, data: PersonUpdate
) -> PersonPublic:
    view = viewer(session, actor, program_id, Need.MANAGE)
    row = scope.row(session, PersonRow, program_id, person_id, "person")
    changes = scope.changes(data, {"pgy", "military_status", "accommodation_notes"})
    if "tags" in changes:
        changes["tags"] = frozenset(changes["tags"])
    person = replace(m.person_from_row(row), **changes)
    scope.store(row, m.person_values(person))
    session.flush()
    return _person_public(view, person)


def delete_person(session: Session, *, actor: Actor, program_id: str, person_id: str) -> None:
    """Delete a person with their absences, requests and rotation assignments. A person
    in any schedule version stays (versions are immutable): set ``active`` false instead."""
    viewer(session, actor, program_id, Need.MANAGE)
    row = scope.row(session, PersonRow, program_id, person_id, "person")
    used = session.scalar(
        select(AssignmentRow.version_id)
        .where(AssignmentRow.program_id == program_id, AssignmentRow.person_id == person_id)
        .limit(1)
    )
    if used is not None:
        raise InvalidInput(
            FieldError(
                "person_id",
                f"{person_id!r} is in schedule version "
                f"{used!r}; deactivate them instead (active: false)",
            )
        )
    session.delete(row)
    session.flush()
