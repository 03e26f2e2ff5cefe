"""Operations: the situation report (JSON, or a Slack message body), fix-it, and
approvals (request a single-use token for a pending action; approve or deny with it).

Every figure in these answers is counted from the database or read from the control
store (see :mod:`rsched.services.ops`). Fix-it only ever uses its fixed list of actions;
fix-it and approve are rate-limited per caller (429 with ``Retry-After``); everything is
audited, refusals included.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, status
from pydantic import BaseModel, ConfigDict, Field

from rsched.api.deps import ActorDep, SessionDep, SettingsDep
from rsched.api.errors import backup_failed, problem_responses
from rsched.api.routes.runs import StoreDep, backup_guard
from rsched.services import approvals, ops
from rsched.services.backups import BackupFailed

router = APIRouter(prefix="/ops", tags=["ops"], responses=problem_responses(401, 403, 404, 422))

ProgramField = Annotated[str, Field(min_length=1, max_length=64)]


class SlackMessage(BaseModel):
    """A Slack message body (``chat.postMessage`` / incoming webhook): post it as is."""

    text: str
    blocks: list[dict[str, Any]]


class FixItBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    program_id: ProgramField
    mode: Annotated[
        str,
        Field(
            max_length=32,
            description="conservative: retry transient failures; balanced: also re-queue "
            "runs that hit their time limit with twice the limit (at most 1 h); greedy: "
            "also fall back to the greedy solver",
            json_schema_extra={"enum": list(ops.MODES)},
        ),
    ]
    dry_run: bool = Field(default=False, description="answer the plan, change nothing")


class ApprovalCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    program_id: ProgramField
    action: Annotated[
        str, Field(max_length=64, json_schema_extra={"enum": sorted(approvals.ACTIONS)})
    ]
    target: Annotated[str, Field(min_length=1, max_length=200)]
    reason: Annotated[str, Field(min_length=1, max_length=1000)]


class ApprovalTicket(BaseModel):
    id: str
    program_id: str
    action: str
    target: str
    token: str = Field(description="single use; shown once (only its hash is stored)")
    expires_at: datetime


class ApproveBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    program_id: ProgramField
    token: Annotated[str, Field(min_length=1, max_length=256)]
    approve: bool = Field(default=True, description="false: deny")
    action: Annotated[str | None, Field(max_length=64)] = Field(
        default=None, description="the action the token must be for (refused otherwise)"
    )


@router.get("/sitrep")
def ops_sitrep(
    session: SessionDep,
    actor: ActorDep,
    store: StoreDep,
    program_id: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
    format: Literal["json", "slack"] = "json",
) -> ops.Sitrep | SlackMessage:
    """Runs by state, recent failures with reasons, active runs and their progress,
    health of the database, Redis and the workers, each program's active schedule
    (coverage, violations), immediate actions and watch items — for every program
    (admins) or the caller's coordinated programs. ``format=slack``: the same report as a
    Slack message body."""
    report = ops.sitrep(session, actor=actor, store=store, program_id=program_id)
    if format == "slack":
        return SlackMessage.model_validate(ops.slack_body(report))
    return report


@router.post("/fix-it", response_model=ops.FixItPlan, responses=problem_responses(429, 503))
def fix_it(
    body: FixItBody,
    request: Request,
    session: SessionDep,
    actor: ActorDep,
    settings: SettingsDep,
) -> Any:
    """Queue follow-ups of the program's recently failed runs (coordinators and admins),
    using only the actions the mode allows; ``dry_run`` shows exactly that plan and
    changes nothing. Runs get derived idempotency keys (``fixit:<run>:<attempt>``), so
    calling again never queues a follow-up twice. At most 10 calls a minute per caller."""
    try:
        return ops.fix_it(
            session,
            actor=actor,
            program_id=body.program_id,
            mode=body.mode,
            dry_run=body.dry_run,
            guard=backup_guard(settings, body.program_id),
        )
    except BackupFailed as exc:
        return backup_failed(request, exc)


@router.post("/approvals", status_code=status.HTTP_201_CREATED)
def request_approval(body: ApprovalCreate, session: SessionDep, actor: ActorDep) -> ApprovalTicket:
    """Ask for an approval of a pending action (coordinators and admins): the answer holds
    a single-use token that expires in 30 minutes; only its hash is stored."""
    ticket = approvals.request_approval(
        session,
        actor=actor,
        program_id=body.program_id,
        action=body.action,
        target=body.target,
        reason=body.reason,
    )
    return ApprovalTicket(
        id=ticket.id,
        program_id=body.program_id,
        action=body.action,
        target=body.target,
        token=ticket.token,
        expires_at=ticket.expires_at,
    )


@router.post("/approve", responses=problem_responses(429))
def decide_approval(
    body: ApproveBody, session: SessionDep, actor: ActorDep
) -> ops.ApprovalDecision:
    """Approve (or deny) with a token, once. A second use, an expired token, a token of
    another program or for another action: 403, audited. At most 10 decisions a minute
    per caller, refusals included."""
    return ops.approve(
        session,
        actor=actor,
        token=body.token,
        approve=body.approve,
        program_id=body.program_id,
        action=body.action,
    )
