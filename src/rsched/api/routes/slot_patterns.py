"""Slot patterns of a program, as written in the program file (coordinators only).
Creating or editing one does not change existing slots."""

from __future__ import annotations

from fastapi import APIRouter, status

from rsched.api.deps import ActorDep, Key, Limit, Offset, ProgramId, SessionDep
from rsched.api.errors import problem_responses
from rsched.services import slot_patterns as svc
from rsched.services.schemas import Page, SlotPatternCreate, SlotPatternPublic, SlotPatternUpdate

router = APIRouter(
    prefix="/programs/{program_id}/slot-patterns",
    tags=["slot patterns"],
    responses=problem_responses(401, 403, 404, 422),
)


@router.get("")
def list_slot_patterns(
    program_id: ProgramId,
    session: SessionDep,
    actor: ActorDep,
    limit: Limit = 100,
    offset: Offset = 0,
) -> Page[SlotPatternPublic]:
    return svc.list_slot_patterns(
        session, actor=actor, program_id=program_id, limit=limit, offset=offset
    )


@router.get("/{pattern_id}")
def get_slot_pattern(
    program_id: ProgramId, pattern_id: Key, session: SessionDep, actor: ActorDep
) -> SlotPatternPublic:
    return svc.get_slot_pattern(session, actor=actor, program_id=program_id, pattern_id=pattern_id)


@router.post("", status_code=status.HTTP_201_CREATED)
def create_slot_pattern(
    program_id: ProgramId, data: SlotPatternCreate, session: SessionDep, actor: ActorDep
) -> SlotPatternPublic:
    return svc.create_slot_pattern(session, actor=actor, program_id=program_id, data=data)


@router.patch("/{pattern_id}")
def update_slot_pattern(
    program_id: ProgramId,
    pattern_id: Key,
    data: SlotPatternUpdate,
    session: SessionDep,
    actor: ActorDep,
) -> SlotPatternPublic:
    return svc.update_slot_pattern(
        session, actor=actor, program_id=program_id, pattern_id=pattern_id, data=data
    )


@router.delete("/{pattern_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_slot_pattern(
    program_id: ProgramId, pattern_id: Key, session: SessionDep, actor: ActorDep
) -> None:
    svc.delete_slot_pattern(session, actor=actor, program_id=program_id, pattern_id=pattern_id)
