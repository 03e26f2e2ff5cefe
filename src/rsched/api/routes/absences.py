"""Absences (leave) of a program's people."""

from __future__ import annotations

from datetime import date
from typing import Annotated

from fastapi import APIRouter, Query, status

from rsched.api.deps import ActorDep, FilterId, Key, Limit, Offset, ProgramId, SessionDep
from rsched.api.errors import problem_responses
from rsched.services import absences as svc
from rsched.services.schemas import AbsenceCreate, AbsencePublic, AbsenceUpdate, Page

router = APIRouter(
    prefix="/programs/{program_id}/absences",
    tags=["absences"],
    responses=problem_responses(401, 403, 404, 422),
)


@router.get("")
def list_absences(
    program_id: ProgramId,
    session: SessionDep,
    actor: ActorDep,
    limit: Limit = 100,
    offset: Offset = 0,
    person_id: FilterId = None,
    start: Annotated[date | None, Query(description="first local day (inclusive)")] = None,
    end: Annotated[date | None, Query(description="last local day (inclusive)")] = None,
) -> Page[AbsencePublic]:
    """Absences overlapping the local days start..end; others' absences are visible to
    coordinators only."""
    return svc.list_absences(
        session,
        actor=actor,
        program_id=program_id,
        limit=limit,
        offset=offset,
        person_id=person_id,
        start=start,
        end=end,
    )


@router.get("/{absence_id}")
def get_absence(
    program_id: ProgramId, absence_id: Key, session: SessionDep, actor: ActorDep
) -> AbsencePublic:
    return svc.get_absence(session, actor=actor, program_id=program_id, absence_id=absence_id)


@router.post("", status_code=status.HTTP_201_CREATED)
def create_absence(
    program_id: ProgramId, data: AbsenceCreate, session: SessionDep, actor: ActorDep
) -> AbsencePublic:
    return svc.create_absence(session, actor=actor, program_id=program_id, data=data)


@router.patch("/{absence_id}")
def update_absence(
    program_id: ProgramId,
    absence_id: Key,
    data: AbsenceUpdate,
    session: SessionDep,
    actor: ActorDep,
) -> AbsencePublic:
    return svc.update_absence(
        session, actor=actor, program_id=program_id, absence_id=absence_id, data=data
    )


@router.delete("/{absence_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_absence(
    program_id: ProgramId, absence_id: Key, session: SessionDep, actor: ActorDep
) -> None:
    svc.delete_absence(session, actor=actor, program_id=program_id, absence_id=absence_id)
