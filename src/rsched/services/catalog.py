"""The programs a caller may see: a page of them, or one. Admins see every program,
everyone else the programs they are a member of; any other program answers NotFound
(never 403), like every program-scoped read."""

from __future__ import annotations

from datetime import date

from sqlalchemy import false, select
from sqlalchemy.orm import Session

from rsched.db.models import ProgramRow
from rsched.services.access import Actor, Need
from rsched.services.schemas import Page, Shape
from rsched.services.scope import page, viewer


class ProgramPublic(Shape):
    id: str
    name: str
    timezone: str
    academic_year_start: date
    block_length_days: int
    horizon_start: date
    horizon_end: date
    role: str
    """The caller's role in the program (admin, coordinator, faculty, resident)."""


def _public(row: ProgramRow, role: str) -> ProgramPublic:
    return ProgramPublic(
        id=row.id,
        name=row.name,
        timezone=row.timezone,
        academic_year_start=row.academic_year_start,
        block_length_days=row.block_length_days,
        horizon_start=row.horizon_start,
        horizon_end=row.horizon_end,
        role=role,
    )


def list_programs(
    session: Session, *, actor: Actor, limit: int = 100, offset: int = 0
) -> Page[ProgramPublic]:
    stmt = select(ProgramRow)
    visible = actor.visible_programs()
    if visible is not None:
        stmt = stmt.where(ProgramRow.id.in_(sorted(visible)) if visible else false())
    return page(
        session,
        stmt.order_by(ProgramRow.id),
        limit=limit,
        offset=offset,
        convert=lambda r: _public(r, str(actor.role_in(r.id))),
    )


def get_program(session: Session, *, actor: Actor, program_id: str) -> ProgramPublic:
    view = viewer(session, actor, program_id, Need.READ_PUBLISHED)
    return _public(view.program, str(view.role))
