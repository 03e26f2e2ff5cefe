"""Swaps of published shifts: who could take an assignment (or trade one for it), swap
requests, a coordinator's decision, execution as a small publish (the same gate, diff
guard, backup and audit as any publish), and undo. The rules are the service's
(``rsched.services.swaps``); refusals answer 409 with a report naming the rule.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, status
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from rsched.api.deps import ActorDep, FilterId, Limit, Offset, ProgramId, SessionDep
from rsched.api.errors import backup_failed, problem_responses
from rsched.api.routes.publishing import REFUSALS, BackupsDep, FactoryDep, refused
from rsched.domain import FieldError, InvalidInput
from rsched.services import swaps as svc
from rsched.services.backups import BackupFailed
from rsched.services.publishing import PublishRefused
from rsched.services.schemas import Id, Page

router = APIRouter(
    prefix="/programs/{program_id}/swaps",
    tags=["swaps"],
    responses={**problem_responses(401, 403, 404, 422), **REFUSALS},
)
SwapId = Annotated[str, Path(min_length=1, max_length=64)]
SlotRef = Annotated[
    str,
    Query(
        min_length=1,
        max_length=64,
        description="the shift (slot id) of the assignment in the active schedule",
    ),
]


class SwapCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    person_id: Id = Field(description="who gives the shift (a member: themselves)")
    slot_id: Id = Field(description="the shift given")
    taker_id: Id = Field(description="the counterpart, who takes it")
    taker_slot_id: Id | None = Field(
        default=None, description="a trade: the counterpart's shift given back"
    )
    note: Annotated[str, Field(max_length=svc.NOTE_MAX)] = ""


class SwapDecision(BaseModel):
    model_config = ConfigDict(extra="forbid")
    approve: bool


class SwapUndo(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: Annotated[str, Field(min_length=1, max_length=1000)]


@router.get("/candidates")
def swap_candidates(
    program_id: ProgramId,
    assignment: SlotRef,
    session: SessionDep,
    actor: ActorDep,
    person_id: FilterId = None,
    limit: Limit = 100,
) -> svc.SwapCandidates:
    """Who could take the assignment — ``person_id``'s shift ``assignment`` (the
    caller's own when ``person_id`` is left out) — or trade one of theirs for it,
    without any hard violation, best for fairness first. The assignment's owner and
    coordinators may ask; a shift that has started is refused (422)."""
    who = person_id or actor.person_in(program_id)
    if who is None:
        raise InvalidInput(FieldError("query.person_id", "whose assignment? (required here)"))
    return svc.candidates(
        session,
        actor=actor,
        program_id=program_id,
        person_id=who,
        slot_id=assignment,
        limit=limit,
    )


@router.get("")
def list_swaps(
    program_id: ProgramId,
    session: SessionDep,
    actor: ActorDep,
    limit: Limit = 100,
    offset: Offset = 0,
    status: svc.Status | None = None,
) -> Page[svc.SwapPublic]:
    """Newest first: coordinators see every request, members those they are part of."""
    return svc.list_swaps(
        session, actor=actor, program_id=program_id, limit=limit, offset=offset, status=status
    )


@router.post("", status_code=status.HTTP_201_CREATED, response_model=svc.SwapPublic)
def request_swap(
    program_id: ProgramId,
    body: SwapCreate,
    request: Request,
    session: SessionDep,
    actor: ActorDep,
) -> svc.SwapPublic | Response:
    """Ask for a swap: members for their own shifts (403 otherwise), coordinators for
    anyone's. Refused (409, naming the rule) when it would break a hard rule now."""
    try:
        return svc.request_swap(
            session,
            actor=actor,
            program_id=program_id,
            person_id=body.person_id,
            slot_id=body.slot_id,
            taker_id=body.taker_id,
            taker_slot_id=body.taker_slot_id,
            note=body.note,
        )
    except PublishRefused as exc:
        return refused(request, exc)  # the refusal's audit row is committed


@router.get("/{swap_id}")
def get_swap(
    program_id: ProgramId, swap_id: SwapId, session: SessionDep, actor: ActorDep
) -> svc.SwapPublic:
    return svc.get_swap(session, actor=actor, program_id=program_id, swap_id=swap_id)


@router.post("/{swap_id}/decision", response_model=svc.SwapPublic)
def decide_swap(
    program_id: ProgramId,
    swap_id: SwapId,
    body: SwapDecision,
    request: Request,
    session: SessionDep,
    actor: ActorDep,
) -> svc.SwapPublic | Response:
    """A coordinator approves or denies a pending request (409 when it is not pending)."""
    try:
        return svc.decide_swap(
            session, actor=actor, program_id=program_id, swap_id=swap_id, approve=body.approve
        )
    except PublishRefused as exc:
        return refused(request, exc)


@router.post("/{swap_id}/execute", response_model=svc.SwapExecuted)
def execute_swap(
    program_id: ProgramId,
    swap_id: SwapId,
    actor: ActorDep,
    request: Request,
    factory: FactoryDep,
    backups: BackupsDep,
) -> svc.SwapExecuted | Response:
    """Make the swap — its counterpart (accepting it) or a coordinator: re-checked
    against the active schedule, then published through the gate, the diff guard and a
    backup. 409 with the report when anything refuses; nothing is published then."""
    try:
        return svc.execute_swap(
            factory, actor=actor, program_id=program_id, swap_id=swap_id, backups=backups
        )
    except PublishRefused as exc:
        return refused(request, exc)
    except BackupFailed as exc:
        return backup_failed(request, exc)


@router.post("/{swap_id}/undo", response_model=svc.SwapPublic)
def undo_swap(
    program_id: ProgramId,
    swap_id: SwapId,
    body: SwapUndo,
    actor: ActorDep,
    request: Request,
    factory: FactoryDep,
    backups: BackupsDep,
) -> svc.SwapPublic | Response:
    """A coordinator undoes an executed swap by rolling back its publish — while it is
    still the program's last publish (409 otherwise)."""
    try:
        return svc.undo_swap(
            factory,
            actor=actor,
            program_id=program_id,
            swap_id=swap_id,
            reason=body.reason,
            backups=backups,
        )
    except PublishRefused as exc:
        return refused(request, exc)
    except BackupFailed as exc:
        return backup_failed(request, exc)
