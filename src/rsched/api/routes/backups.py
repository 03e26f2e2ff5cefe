"""Backups of the whole database (admins only: a backup holds every program): make one,
list them, verify a file against its recorded checksum, restore one into an empty
database, and retention (a dry run by default). The backup service is
``rsched.services.backups``, configured by the settings (``{data_dir}/backups``).

Each write is audited with the admin's id. A restore never overwrites: a target with
any table in it answers 409 and is left untouched.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request, status
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from rsched.api.deps import ActorDep, Limit, Offset, SessionDep
from rsched.api.errors import problem, problem_responses
from rsched.api.routes.publishing import BackupsDep
from rsched.domain import FieldError, InvalidInput
from rsched.services import audit
from rsched.services.access import Actor, Forbidden
from rsched.services.backups import (
    REASON_MAX,
    RETENTION_DAYS,
    BackupFailed,
    BackupRecord,
    RestoreRefused,
)
from rsched.services.schemas import Page

router = APIRouter(
    prefix="/backups",
    tags=["backups"],
    responses=problem_responses(401, 403, 404, 422, 503),
)
BackupId = Annotated[str, Path(min_length=1, max_length=64)]


def _admin(actor: ActorDep) -> Actor:
    """Backups hold every program: admins only (not an admin's token scoped to some)."""
    if not actor.is_admin or actor.scopes is not None:
        raise Forbidden("only an admin may manage backups")
    return actor


AdminDep = Annotated[Actor, Depends(_admin)]


class BackupPublic(BaseModel):
    id: str
    program_id: str | None = Field(description="whose write asked for it (null: an admin)")
    name: str = Field(description="the file name in the backup folder")
    reason: str
    sha256: str
    size_bytes: int
    encrypted: bool
    protected: bool = Field(description="kept by retention whatever its age (the baseline)")
    created_at: datetime
    verified_at: datetime | None
    deleted_at: datetime | None

    @classmethod
    def of(cls, record: BackupRecord) -> BackupPublic:
        return cls(
            id=record.id,
            program_id=record.program_id,
            name=record.name,
            reason=record.reason,
            sha256=record.sha256,
            size_bytes=record.size_bytes,
            encrypted=record.encrypted,
            protected=record.protected,
            created_at=record.created_at,
            verified_at=record.verified_at,
            deleted_at=record.deleted_at,
        )


class BackupCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: Annotated[str, Field(min_length=1, max_length=REASON_MAX)] = "api"


class Verified(BaseModel):
    id: str
    ok: bool = Field(description="the file matches its checksum (and opens, if encrypted)")


class RestoreBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    target_url: Annotated[str, Field(min_length=1, max_length=2000)] = Field(
        description="database URL of an EMPTY database (sqlite:///… or postgresql+psycopg://…) "
        "of the same kind as the backup; a non-empty target is refused (409)"
    )


class Restored(BaseModel):
    id: str
    target: str = Field(description="the target URL, password hidden")


class RetentionBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dry_run: bool = Field(default=True, description="only say what would be deleted")
    keep_days: int = Field(default=RETENTION_DAYS, ge=1, le=3650)


class RetentionPublic(BaseModel):
    dry_run: bool
    cutoff: datetime = Field(description="backups older than this go (but the newest two)")
    delete: list[BackupPublic]
    keep: list[BackupPublic]
    problems: list[str]


def _failed(request: Request, exc: BackupFailed) -> Response:
    return problem(request, 503, kind="backup-failed", title="Backup failed", detail=str(exc))


def _masked(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        raise InvalidInput(FieldError("target_url", "not a database URL")) from None


@router.get("")
def list_backups(
    _admin: AdminDep, backups: BackupsDep, limit: Limit = 100, offset: Offset = 0
) -> Page[BackupPublic]:
    """Newest first (deleted ones left out)."""
    records = backups.list()
    return Page(
        items=[BackupPublic.of(r) for r in records[offset : offset + limit]],
        total=len(records),
        limit=limit,
        offset=offset,
    )


@router.post("", status_code=status.HTTP_201_CREATED, response_model=BackupPublic)
def create_backup(
    admin: AdminDep,
    body: BackupCreate,
    request: Request,
    session: SessionDep,
    backups: BackupsDep,
) -> BackupPublic | Response:
    """Back up the whole database now."""
    try:
        record = backups.create(reason=body.reason)
    except BackupFailed as exc:
        return _failed(request, exc)
    audit.record(session, actor=admin, action="backup.create", target=record.id)
    return BackupPublic.of(record)


@router.post("/retention")
def backup_retention(
    admin: AdminDep, body: RetentionBody, session: SessionDep, backups: BackupsDep
) -> RetentionPublic:
    """Backups older than ``keep_days`` (30) go, keeping the two newest and every
    protected one. ``dry_run`` (the default) changes nothing."""
    plan = backups.retention(dry_run=body.dry_run, keep_days=body.keep_days)
    if not body.dry_run:
        audit.record(
            session,
            actor=admin,
            action="backup.retention",
            detail={"deleted": [r.id for r in plan.delete], "problems": list(plan.problems)},
        )
    return RetentionPublic(
        dry_run=plan.dry_run,
        cutoff=plan.cutoff,
        delete=[BackupPublic.of(r) for r in plan.delete],
        keep=[BackupPublic.of(r) for r in plan.keep],
        problems=list(plan.problems),
    )


@router.get("/{backup_id}")
def get_backup(_admin: AdminDep, backup_id: BackupId, backups: BackupsDep) -> BackupPublic:
    return BackupPublic.of(backups.get(backup_id))


@router.post("/{backup_id}/verify")
def verify_backup(
    admin: AdminDep, backup_id: BackupId, session: SessionDep, backups: BackupsDep
) -> Verified:
    """Recompute the file's SHA-256 (and open it, if encrypted). A backup that fails is
    never reused by the backup guard."""
    ok = backups.verify(backup_id)
    audit.record(
        session,
        actor=admin,
        action="backup.verify",
        target=backup_id,
        outcome="ok" if ok else "failed",
    )
    return Verified(id=backup_id, ok=ok)


@router.post(
    "/{backup_id}/restore",
    response_model=Restored,
    responses=problem_responses(409),
)
def restore_backup(
    admin: AdminDep,
    backup_id: BackupId,
    body: RestoreBody,
    request: Request,
    session: SessionDep,
    backups: BackupsDep,
) -> Restored | Response:
    """Restore into an empty database (checksum checked first). Never into one with
    tables in it: 409, the target untouched."""
    target = _masked(body.target_url)
    try:
        backups.restore(backup_id, target_url=body.target_url, force=False)
    except RestoreRefused as exc:
        audit.record(
            session,
            actor=admin,
            action="backup.restore",
            target=backup_id,
            outcome="refused",
            detail={"target": target},
        )
        return problem(
            request, 409, kind="restore-refused", title="Restore refused", detail=str(exc)
        )
    except BackupFailed as exc:
        return _failed(request, exc)
    audit.record(
        session, actor=admin, action="backup.restore", target=backup_id, detail={"target": target}
    )
    return Restored(id=backup_id, target=target)
