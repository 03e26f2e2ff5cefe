"""Programs: the ones the caller may see, one of them, and importing a program file."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, status

from rsched.api.deps import ActorDep, Limit, Offset, ProgramId, SessionDep, SettingsDep
from rsched.api.errors import problem_responses
from rsched.services import catalog
from rsched.services import programs as svc
from rsched.services.backups import service_for
from rsched.services.catalog import ProgramPublic
from rsched.services.schemas import Page

router = APIRouter(
    prefix="/programs", tags=["programs"], responses=problem_responses(401, 403, 404, 422)
)

ProgramFile = Annotated[
    dict[str, Any],
    Body(
        description=(
            "A program file (rsched.program/1) as JSON; its JSON Schema is printed by "
            "`rsched schema program`."
        )
    ),
]


@router.get("")
def list_programs(
    session: SessionDep, actor: ActorDep, limit: Limit = 100, offset: Offset = 0
) -> Page[ProgramPublic]:
    """Every program for an admin, otherwise the caller's own."""
    return catalog.list_programs(session, actor=actor, limit=limit, offset=offset)


@router.post("/import", status_code=status.HTTP_201_CREATED)
def import_program(
    body: ProgramFile, session: SessionDep, actor: ActorDep, settings: SettingsDep
) -> ProgramPublic:
    """Admins only. The file gets the checks of ``rsched program check`` and every
    problem is listed (422, paths as in the file); nothing is written unless all pass.
    A bulk change: a recent backup is made first if none exists (503 if it fails)."""
    with service_for(settings) as backups:
        program_id = svc.import_program(session, actor=actor, mapping=body, backups=backups)
    return catalog.get_program(session, actor=actor, program_id=program_id)


@router.get("/{program_id}")
def get_program(program_id: ProgramId, session: SessionDep, actor: ActorDep) -> ProgramPublic:
    return catalog.get_program(session, actor=actor, program_id=program_id)
