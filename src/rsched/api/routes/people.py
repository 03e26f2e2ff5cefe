"""People of a program: residents and faculty."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, status

from rsched.api.deps import ActorDep, Key, Limit, Offset, ProgramId, SessionDep
from rsched.api.errors import problem_responses
from rsched.domain import PersonKind
from rsched.domain.model import MAX_PGY
from rsched.services import people as svc
from rsched.services.schemas import Page, PersonCreate, PersonPublic, PersonUpdate

router = APIRouter(
    prefix="/programs/{program_id}/people",
    tags=["people"],
    responses=problem_responses(401, 403, 404, 422),
)


@router.get("")
def list_people(
    program_id: ProgramId,
    session: SessionDep,
    actor: ActorDep,
    limit: Limit = 100,
    offset: Offset = 0,
    kind: PersonKind | None = None,
    pgy: Annotated[int | None, Query(ge=1, le=MAX_PGY)] = None,
    active: bool | None = None,
) -> Page[PersonPublic]:
    """Everyone for coordinators; a faculty member or resident sees only themselves."""
    return svc.list_people(
        session,
        actor=actor,
        program_id=program_id,
        limit=limit,
        offset=offset,
        kind=kind,
        pgy=pgy,
        active=active,
    )


@router.get("/{person_id}")
def get_person(
    program_id: ProgramId, person_id: Key, session: SessionDep, actor: ActorDep
) -> PersonPublic:
    return svc.get_person(session, actor=actor, program_id=program_id, person_id=person_id)


@router.post("", status_code=status.HTTP_201_CREATED)
def create_person(
    program_id: ProgramId, data: PersonCreate, session: SessionDep, actor: ActorDep
) -> PersonPublic:
    return svc.create_person(session, actor=actor, program_id=program_id, data=data)


@router.patch("/{person_id}")
def update_person(
    program_id: ProgramId, person_id: Key, data: PersonUpdate, session: SessionDep, actor: ActorDep
) -> PersonPublic:
    return svc.update_person(
        session, actor=actor, program_id=program_id, person_id=person_id, data=data
    )


@router.delete("/{person_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_person(
    program_id: ProgramId, person_id: Key, session: SessionDep, actor: ActorDep
) -> None:
    """Refused (422) for a person in any schedule version: deactivate them instead."""
    svc.delete_person(session, actor=actor, program_id=program_id, person_id=person_id)
