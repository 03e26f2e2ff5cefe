"""What the services of a program's records share: the caller as seen from one program
(``Viewer``), a page of a listing, and the checks and writes of list, get, create, update
and delete (people, shift types, rotations, slot patterns, absences and requests).

Every function of those services takes the caller's ``Session`` and writes in the
caller's transaction (it flushes, never commits), and asks ``authorize`` first. Who sees
what:

* coordinators and admins: everything in the program;
* faculty and residents: their own person record, their own absences and requests, the
  shift types (to read the published schedule); they may submit requests for themselves.
  Another person's record answers NotFound, as another program's does.

Sensitive fields (``military_status``, ``accommodation_notes``, ``leave_type``) are shown
to coordinators and admins and to the person they describe, to nobody else.

The services call the helpers here through the module (``scope.fresh(...)``), so a test
can replace one for all of them.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel
from sqlalchemy import Select, false, func, select
from sqlalchemy.orm import Session

from rsched.db.models import PersonRow, ProgramRow
from rsched.domain import FieldError, InvalidInput, NotFound
from rsched.services.access import Actor, Need, Role, authorize
from rsched.services.schemas import Page

R = TypeVar("R")
MAX_LIMIT = 500


@dataclass(frozen=True, slots=True)
class Viewer:
    """The actor as seen from one program."""

    role: Role
    person_id: str | None
    program: ProgramRow

    @property
    def manages(self) -> bool:
        return self.role in (Role.ADMIN, Role.COORDINATOR)

    def sees_private(self, person_id: str) -> bool:
        return self.manages or (self.person_id is not None and person_id == self.person_id)


def viewer(session: Session, actor: Actor, program_id: str, need: Need) -> Viewer:
    """``authorize``, then the program's row (NotFound when it does not exist)."""
    role = authorize(actor, program_id, need)
    row = session.get(ProgramRow, program_id)
    if row is None:
        raise NotFound(f"program {program_id!r} not found")
    return Viewer(role=role, person_id=actor.person_in(program_id), program=row)


def page(
    session: Session,
    stmt: Select[*tuple[Any, ...]],
    *,
    limit: int,
    offset: int,
    convert: Callable[[Any], R],
    whole_rows: bool = False,
) -> Page[R]:
    """Two queries whatever the size: the count and the rows of the page. ``convert``
    gets the first entity of each result row, or the whole row with ``whole_rows``."""
    errors = []
    if not 1 <= limit <= MAX_LIMIT:
        errors.append(FieldError("limit", f"must be 1..{MAX_LIMIT}"))
    if offset < 0:
        errors.append(FieldError("offset", "must be ≥ 0"))
    if errors:
        raise InvalidInput(errors)
    total = session.scalar(select(func.count()).select_from(stmt.order_by(None).subquery()))
    window = stmt.limit(limit).offset(offset)
    rows = session.execute(window).all() if whole_rows else session.scalars(window).all()
    return Page(items=[convert(r) for r in rows], total=total or 0, limit=limit, offset=offset)


def own(stmt: Select[Any], column: Any, view: Viewer) -> Select[Any]:
    """Limit ``stmt`` to the viewer's own rows unless they manage the program."""
    if view.manages:
        return stmt
    return stmt.where(column == view.person_id if view.person_id else false())


def row(session: Session, table: Any, program_id: str, key: str, label: str) -> Any:
    """The program's row of ``table`` with that key; NotFound names it as ``label``."""
    found = session.get(table, (program_id, key))
    if found is None:
        raise NotFound(f"{label} {key!r} not found")
    return found


def fresh(session: Session, table: Any, program_id: str, key: str, field: str) -> None:
    """InvalidInput on ``field`` when the program already has a row with that key."""
    if session.get(table, (program_id, key)) is not None:
        raise InvalidInput(FieldError(field, f"{key!r} already exists in this program"))


def changes(update: BaseModel, nullable: set[str]) -> dict[str, Any]:
    """The fields an update sets; null only where the field may be empty."""
    values = update.model_dump(exclude_unset=True)
    errors = [
        FieldError(k, "must not be null")
        for k, v in values.items()
        if v is None and k not in nullable
    ]
    if errors:
        raise InvalidInput(errors)
    return values


def store(row: Any, values: Mapping[str, Any]) -> None:
    """Set the row's attributes to ``values``."""
    for key, value in values.items():
        setattr(row, key, value)


def person_known(session: Session, program_id: str, person_id: str, field: str) -> None:
    """InvalidInput on ``field`` unless the program has that person."""
    if session.get(PersonRow, (program_id, person_id)) is None:
        raise InvalidInput(FieldError(field, f"unknown person {person_id!r}"))


def new_id(prefix: str) -> str:
    """A new random id, ``prefix-`` and 12 hex digits."""
    return f"{prefix}-{secrets.token_hex(6)}"
