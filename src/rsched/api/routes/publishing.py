"""Publishing: the diff of a draft against the active schedule, one-time publish tokens,
publishing (validation gate, diff guard, backup, staged activation), rollback, and the
repair of the active schedule after new absences. Coordinators and admins of the
program; the rules are the publishing service's (``rsched.services.publishing``).

Refusals of the gate, the diff guard or a state conflict answer 409 with the service's
report in the problem (``report``); a write that could not be preceded by a backup
answers 503 and changes nothing.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, status
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session, sessionmaker

from rsched.api.deps import ActorDep, Key, ProgramId, SessionDep, SettingsDep
from rsched.api.errors import (
    PROBLEM_JSON,
    Problem,
    ProblemResponse,
    backup_failed,
    problem,
    problem_responses,
)
from rsched.services import publishing, swaps
from rsched.services.backups import BackupFailed, BackupService, service_for
from rsched.services.publishing import PublishRefused

router = APIRouter(tags=["publishing"], responses=problem_responses(401, 403, 404, 422))
log = logging.getLogger("rsched.api")

VERSION = "/programs/{program_id}/schedules/{version_id}"
Text = Annotated[str, Field(min_length=1, max_length=1000)]
REPAIR_MAX_SECONDS = 5.0
"""A repair runs inside the request: about a second for a medium program after a week's
absence. What needs longer is a solve for a run (``POST /programs/{id}/runs``)."""


# ---------------------------------------------------------------- shared plumbing


def _factory(request: Request) -> sessionmaker[Session]:
    factory: sessionmaker[Session] = request.app.state.sessionmaker
    return factory


def _backups(settings: SettingsDep) -> Iterator[BackupService]:
    with service_for(settings) as service:
        yield service


FactoryDep = Annotated[sessionmaker[Session], Depends(_factory)]
"""The app's sessionmaker, for services that run several transactions of their own."""
BackupsDep = Annotated[BackupService, Depends(_backups)]
"""The backup service of the configured database (``{data_dir}/backups``)."""


class RefusedProblem(Problem):
    report: dict[str, Any] = Field(description="why: the gate, the diff, the rules broken")


REFUSALS: dict[int | str, dict[str, Any]] = {
    409: {
        "model": RefusedProblem,
        "description": "Refused (the report says why); nothing was changed",
        "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/RefusedProblem"}}},
    },
    **problem_responses(503),
}


def refused(request: Request, exc: PublishRefused) -> Response:
    """409 with the service's report in the problem."""
    plain = problem(request, 409, kind="refused", title="Refused", detail=str(exc))
    body = json.loads(bytes(plain.body))
    body["report"] = json.loads(json.dumps(exc.report, default=str))
    return ProblemResponse(body, status_code=409)


# --------------------------------------------------------------------- shapes


class PersonChangePublic(BaseModel):
    person: str
    added: list[str]
    removed: list[str]
    before: int = Field(description="the person's assignments in the active schedule")
    fraction: float | None = Field(description="changes ÷ before (null: nothing before)")
    verdict: str = Field(description="ok, warn or refuse")


class DiffPublic(BaseModel):
    version_id: str
    against: list[str] = Field(description="the active versions the draft is compared with")
    added: int
    removed: int
    active_assignments: int
    churn: float = Field(description="max(added, removed) ÷ active assignments")
    verdict: str = Field(description="the diff guard's verdict: ok, warn or refuse")
    reasons: list[str]
    people: list[PersonChangePublic]


class PublishToken(BaseModel):
    token: str = Field(description="shown once; only its hash is stored")
    program_id: str
    version_id: str
    expires_at: datetime


class PublishBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    token: Annotated[str, Field(min_length=1, max_length=200)]
    override_reason: Text | None = Field(
        default=None,
        description="publish past a diff-guard refusal; needs an approved publish_override",
    )


class Published(BaseModel):
    version_id: str
    staging_id: str
    superseded: list[str]
    diff: DiffPublic
    gate: dict[str, Any]


class RollbackBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: Text


class RolledBack(BaseModel):
    program_id: str
    restored_version_id: str | None = Field(
        description="the version active again (null: nothing was active before)"
    )


class RepairBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    time_limit: float = Field(default=2.0, gt=0, le=REPAIR_MAX_SECONDS, description="seconds")
    workers: int = Field(default=2, ge=1, le=8, description="solver threads")


# --------------------------------------------------------------------- routes


@router.get(VERSION + "/diff")
def get_diff(
    program_id: ProgramId, version_id: Key, session: SessionDep, actor: ActorDep
) -> DiffPublic:
    """The version against the active schedule it would replace: assignments added and
    removed per person, churn, and the diff guard's verdict."""
    report = publishing.diff(session, actor=actor, program_id=program_id, version_id=version_id)
    return DiffPublic.model_validate(report.to_dict())


@router.post(VERSION + "/publish-token", status_code=status.HTTP_201_CREATED)
def create_publish_token(
    program_id: ProgramId, version_id: Key, session: SessionDep, actor: ActorDep
) -> PublishToken:
    """A one-time token to publish this draft: bound to the draft, the program and the
    caller, expiring in minutes (``publish.token_minutes``, 10 by default)."""
    token, expires_at = publishing.create_publish_token(
        session, actor=actor, program_id=program_id, version_id=version_id
    )
    return PublishToken(
        token=token, program_id=program_id, version_id=version_id, expires_at=expires_at
    )


@router.post(VERSION + "/publish", response_model=Published, responses=REFUSALS)
def publish_version(
    program_id: ProgramId,
    version_id: Key,
    body: PublishBody,
    actor: ActorDep,
    request: Request,
    factory: FactoryDep,
    backups: BackupsDep,
) -> Published | Response:
    """Consume the token (403 when unknown, expired, used or someone else's: audited),
    re-validate the draft (gate) and diff it (guard): 409 with the report when either
    refuses. Then a backup, a staged activation, and the draft is the active schedule."""
    try:
        result = publishing.publish(
            factory,
            actor=actor,
            program_id=program_id,
            version_id=version_id,
            token=body.token,
            backups=backups,
            override_reason=body.override_reason,
        )
    except PublishRefused as exc:
        return refused(request, exc)
    except BackupFailed as exc:
        return backup_failed(request, exc)
    return Published(
        version_id=result.version_id,
        staging_id=result.staging_id,
        superseded=list(result.superseded),
        diff=DiffPublic.model_validate(result.diff.to_dict()),
        gate=result.gate,
    )


@router.post(
    "/programs/{program_id}/schedules/rollback", response_model=RolledBack, responses=REFUSALS
)
def rollback_schedule(
    program_id: ProgramId,
    body: RollbackBody,
    actor: ActorDep,
    request: Request,
    factory: FactoryDep,
    backups: BackupsDep,
) -> RolledBack | Response:
    """Undo the program's last publish: the versions active before it are active again
    (audited with the reason). 404 when nothing was published."""
    try:
        restored = publishing.rollback(
            factory, actor=actor, program_id=program_id, reason=body.reason, backups=backups
        )
    except PublishRefused as exc:
        return refused(request, exc)
    except BackupFailed as exc:
        return backup_failed(request, exc)
    return RolledBack(program_id=program_id, restored_version_id=restored or None)


@router.post("/programs/{program_id}/repair", status_code=status.HTTP_201_CREATED)
def repair_program(
    program_id: ProgramId,
    session: SessionDep,
    actor: ActorDep,
    body: RepairBody | None = None,
) -> swaps.RepairPublic:
    """Re-solve only the days of the active schedule that the program's current
    absences (or other changes) broke, and store the result as a draft: its churn
    against the active schedule and its hard violations."""
    options = body or RepairBody()
    return swaps.repair_active(
        session,
        actor=actor,
        program_id=program_id,
        time_limit=options.time_limit,
        workers=options.workers,
    )
