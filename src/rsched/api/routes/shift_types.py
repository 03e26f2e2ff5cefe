"""Shift types of a program (keyed by their code)."""

from __future__ import annotations

from fastapi import APIRouter, status

from rsched.api.deps import ActorDep, Key, Limit, Offset, ProgramId, SessionDep
from rsched.api.errors import problem_responses
from rsched.domain import ShiftKind
from rsched.services import shift_types as svc
from rsched.services.schemas import Page, ShiftTypeCreate, ShiftTypePublic, ShiftTypeUpdate

router = APIRouter(
    prefix="/programs/{program_id}/shift-types",
    tags=["shift types"],
    responses=problem_responses(401, 403, 404, 422),
)


@router.get("")
def list_shift_types(
    program_id: ProgramId,
    session: SessionDep,
    actor: ActorDep,
    limit: Limit = 100,
    offset: Offset = 0,
    kind: ShiftKind | None = None,
) -> Page[ShiftTypePublic]:
    return svc.list_shift_types(
        session, actor=actor, program_id=program_id, limit=limit, offset=offset, kind=kind
    )


@router.get("/{code}")
def get_shift_type(
    program_id: ProgramId, code: Key, session: SessionDep, actor: ActorDep
) -> ShiftTypePublic:
    return svc.get_shift_type(session, actor=actor, program_id=program_id, code=code)


@router.post("", status_code=status.HTTP_201_CREATED)
def create_shift_type(
    program_id: ProgramId, data: ShiftTypeCreate, session: SessionDep, actor: ActorDep
) -> ShiftTypePublic:
    return svc.create_shift_type(session, actor=actor, program_id=program_id, data=data)


@router.patch("/{code}")
def update_shift_type(
    program_id: ProgramId, code: Key, data: ShiftTypeUpdate, session: SessionDep, actor: ActorDep
) -> ShiftTypePublic:
    """The times and kind of a shift type that already has slots cannot change (422)."""
    return svc.update_shift_type(session, actor=actor, program_id=program_id, code=code, data=data)


@router.delete("/{code}", status_code=status.HTTP_204_NO_CONTENT)
def delete_shift_type(
    program_id: ProgramId, code: Key, session: SessionDep, actor: ActorDep
) -> None:
    """Refused (422) while slots, rotations, slot patterns or requests use it."""
    svc.delete_shift_type(session, actor=actor, program_id=program_id, code=code)
