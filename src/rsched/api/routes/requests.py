"""Requests (wants to work / wants to be off) of a program's people. Faculty and
residents submit their own; coordinators manage everyone's."""

from __future__ import annotations

from fastapi import APIRouter, status

from rsched.api.deps import ActorDep, FilterId, Key, Limit, Offset, ProgramId, SessionDep
from rsched.api.errors import problem_responses
from rsched.services import requests as svc
from rsched.services.schemas import Page, RequestCreate, RequestPublic, RequestUpdate

router = APIRouter(
    prefix="/programs/{program_id}/requests",
    tags=["requests"],
    responses=problem_responses(401, 403, 404, 422),
)


@router.get("")
def list_requests(
    program_id: ProgramId,
    session: SessionDep,
    actor: ActorDep,
    limit: Limit = 100,
    offset: Offset = 0,
    person_id: FilterId = None,
) -> Page[RequestPublic]:
    return svc.list_requests(
        session,
        actor=actor,
        program_id=program_id,
        limit=limit,
        offset=offset,
        person_id=person_id,
    )


@router.get("/{request_id}")
def get_request(
    program_id: ProgramId, request_id: Key, session: SessionDep, actor: ActorDep
) -> RequestPublic:
    return svc.get_request(session, actor=actor, program_id=program_id, request_id=request_id)


@router.post("", status_code=status.HTTP_201_CREATED)
def create_request(
    program_id: ProgramId, data: RequestCreate, session: SessionDep, actor: ActorDep
) -> RequestPublic:
    """Faculty and residents may submit requests for themselves only (403 otherwise)."""
    return svc.create_request(session, actor=actor, program_id=program_id, data=data)


@router.patch("/{request_id}")
def update_request(
    program_id: ProgramId,
    request_id: Key,
    data: RequestUpdate,
    session: SessionDep,
    actor: ActorDep,
) -> RequestPublic:
    return svc.update_request(
        session, actor=actor, program_id=program_id, request_id=request_id, data=data
    )


@router.delete("/{request_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_request(
    program_id: ProgramId, request_id: Key, session: SessionDep, actor: ActorDep
) -> None:
    svc.delete_request(session, actor=actor, program_id=program_id, request_id=request_id)
