"""Rotations of a program (coordinators only)."""

from __future__ import annotations

from fastapi import APIRouter, status

from rsched.api.deps import ActorDep, Key, Limit, Offset, ProgramId, SessionDep
from rsched.api.errors import problem_responses
from rsched.services import rotations as svc
from rsched.services.schemas import Page, RotationCreate, RotationPublic, RotationUpdate

router = APIRouter(
    prefix="/programs/{program_id}/rotations",
    tags=["rotations"],
    responses=problem_responses(401, 403, 404, 422),
)


@router.get("")
def list_rotations(
    program_id: ProgramId,
    session: SessionDep,
    actor: ActorDep,
    limit: Limit = 100,
    offset: Offset = 0,
) -> Page[RotationPublic]:
    return svc.list_rotations(
        session, actor=actor, program_id=program_id, limit=limit, offset=offset
    )


@router.get("/{rotation_id}")
def get_rotation(
    program_id: ProgramId, rotation_id: Key, session: SessionDep, actor: ActorDep
) -> RotationPublic:
    return svc.get_rotation(session, actor=actor, program_id=program_id, rotation_id=rotation_id)


@router.post("", status_code=status.HTTP_201_CREATED)
def create_rotation(
    program_id: ProgramId, data: RotationCreate, session: SessionDep, actor: ActorDep
) -> RotationPublic:
    return svc.create_rotation(session, actor=actor, program_id=program_id, data=data)


@router.patch("/{rotation_id}")
def update_rotation(
    program_id: ProgramId,
    rotation_id: Key,
    data: RotationUpdate,
    session: SessionDep,
    actor: ActorDep,
) -> RotationPublic:
    return svc.update_rotation(
        session, actor=actor, program_id=program_id, rotation_id=rotation_id, data=data
    )


@router.delete("/{rotation_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_rotation(
    program_id: ProgramId, rotation_id: Key, session: SessionDep, actor: ActorDep
) -> None:
    """Refused (422) while residents are assigned to it for a block."""
    svc.delete_rotation(session, actor=actor, program_id=program_id, rotation_id=rotation_id)
