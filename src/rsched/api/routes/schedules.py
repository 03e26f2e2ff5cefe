"""Schedules: versions (the active one and drafts), the people × days grid, assignment
lists, exports (JSON interchange, CSV), and personal calendar feeds.

Faculty and residents see active versions only; drafts answer 404 to them. A calendar
feed is read with its secret token alone (the URL is the credential; only its hash is
stored): its owner or a coordinator makes one and revokes them."""

from __future__ import annotations

import hashlib
from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query, Request, status
from fastapi.responses import Response
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from rsched.api.deps import ActorDep, FilterId, Key, Limit, Offset, ProgramId, SessionDep
from rsched.api.errors import problem_responses
from rsched.domain import NotFound, ScheduleStatus
from rsched.services import feeds as feeds_svc
from rsched.services import schedules as svc
from rsched.services.schemas import AssignmentPublic, Grid, Page, VersionPublic

router = APIRouter(tags=["schedules"], responses=problem_responses(401, 403, 404, 422))
feeds = APIRouter(tags=["calendar feeds"], responses=problem_responses(404, 422))

VERSIONS = "/programs/{program_id}/schedules"
VERSION = VERSIONS + "/{version_id}"
FEED_TOKENS = "/programs/{program_id}/people/{person_id}/feed-tokens"
Day = Annotated[date | None, Query(description="local day (inclusive)")]
FeedSecret = Annotated[str, Path(min_length=1, max_length=128)]
CSV = "text/csv; charset=utf-8"
ICS = "text/calendar; charset=utf-8"


class FeedToken(BaseModel):
    token: str
    """Shown once: only its hash is stored."""
    path: str
    url: str


class Revoked(BaseModel):
    revoked: int


def _attachment(name: str) -> dict[str, str]:
    return {"Content-Disposition": f'attachment; filename="{name}"'}


@router.get(VERSIONS)
def list_versions(
    program_id: ProgramId,
    session: SessionDep,
    actor: ActorDep,
    limit: Limit = 100,
    offset: Offset = 0,
    status: ScheduleStatus | None = None,
) -> Page[VersionPublic]:
    """Newest first."""
    return svc.list_versions(
        session, actor=actor, program_id=program_id, limit=limit, offset=offset, status=status
    )


@router.get(VERSIONS + "/active")
def get_active_version(
    program_id: ProgramId, session: SessionDep, actor: ActorDep, start: Day = None, end: Day = None
) -> VersionPublic:
    """The newest active version overlapping start..end (any dates when omitted)."""
    found = svc.active_version(
        session,
        actor=actor,
        program_id=program_id,
        start=start or date.min,
        end=end or date.max,
    )
    if found is None:
        raise NotFound(f"program {program_id!r} has no active schedule for those days")
    return found


@router.get(VERSION)
def get_version(
    program_id: ProgramId, version_id: Key, session: SessionDep, actor: ActorDep
) -> VersionPublic:
    return svc.get_version(session, actor=actor, program_id=program_id, version_id=version_id)


@router.get(VERSION + "/grid")
def get_grid(
    program_id: ProgramId,
    version_id: Key,
    session: SessionDep,
    actor: ActorDep,
    start: Day = None,
    end: Day = None,
) -> Grid:
    """People × local days (the version's own days when omitted; at most 366)."""
    return svc.grid(
        session, actor=actor, program_id=program_id, version_id=version_id, start=start, end=end
    )


@router.get(VERSION + "/assignments")
def list_assignments(
    program_id: ProgramId,
    version_id: Key,
    session: SessionDep,
    actor: ActorDep,
    limit: Limit = 100,
    offset: Offset = 0,
    person_id: FilterId = None,
    start: Day = None,
    end: Day = None,
) -> Page[AssignmentPublic]:
    return svc.assignments_list(
        session,
        actor=actor,
        program_id=program_id,
        version_id=version_id,
        limit=limit,
        offset=offset,
        person_id=person_id,
        start=start,
        end=end,
    )


@router.get(VERSION + "/export.json")
def export_json(
    program_id: ProgramId, version_id: Key, session: SessionDep, actor: ActorDep
) -> dict[str, Any]:
    """The version as an ``rsched.schedule/1`` interchange document."""
    return svc.export_json(session, actor=actor, program_id=program_id, version_id=version_id)


@router.get(
    VERSION + "/export.csv",
    response_class=Response,
    responses={200: {"content": {CSV: {"schema": {"type": "string"}}}}},
)
def export_csv(
    program_id: ProgramId, version_id: Key, session: SessionDep, actor: ActorDep
) -> Response:
    """One row per assignment, on the program's local clock."""
    body = svc.export_csv(session, actor=actor, program_id=program_id, version_id=version_id)
    return Response(body, media_type=CSV, headers=_attachment(f"{version_id}.csv"))


@router.post(FEED_TOKENS, status_code=status.HTTP_201_CREATED)
def create_feed_token(
    program_id: ProgramId, person_id: Key, request: Request, session: SessionDep, actor: ActorDep
) -> FeedToken:
    """A new secret calendar URL for the person (their own, or anyone's for a
    coordinator). Keep it secret: anyone with it reads the person's published shifts."""
    token = feeds_svc.create_feed_token(
        session, actor=actor, program_id=program_id, person_id=person_id
    )
    url = str(request.url_for("calendar_feed", token=token))
    return FeedToken(token=token, path=f"/feeds/{token}.ics", url=url)


@router.delete(FEED_TOKENS)
def revoke_feed_tokens(
    program_id: ProgramId, person_id: Key, session: SessionDep, actor: ActorDep
) -> Revoked:
    """Revoke every live feed token of the person; their URLs answer 404 from now on."""
    count = feeds_svc.revoke_feed_token(
        session, actor=actor, program_id=program_id, person_id=person_id
    )
    return Revoked(revoked=count)


@feeds.get(
    "/feeds/{token}.ics",
    response_class=Response,
    responses={
        200: {"content": {ICS: {"schema": {"type": "string"}}}},
        304: {"description": "unchanged since the ETag given in If-None-Match"},
    },
)
async def calendar_feed(
    token: FeedSecret,
    request: Request,
    if_none_match: Annotated[str | None, Header(max_length=1024)] = None,
) -> Response:
    """The person's shifts in the active schedule (RFC 5545). No login: the token is the
    credential; unknown and revoked tokens answer 404. The text only changes when the
    schedule does: send the ETag back in ``If-None-Match`` to get 304 until then."""
    # one trip to a worker thread for the whole read (session, queries, rendering): this
    # is the path every calendar client polls
    body = await run_in_threadpool(feeds_svc.read_calendar, request.app.state.sessionmaker, token)
    tag = '"' + hashlib.sha256(body.encode("utf-8")).hexdigest()[:32] + '"'
    headers = {"ETag": tag, "Cache-Control": "private, no-cache"}
    if if_none_match is not None and _none_match(if_none_match, tag):
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers=headers)
    return Response(body, media_type=ICS, headers=headers)


def _none_match(header: str, tag: str) -> bool:
    """Whether an If-None-Match header names ``tag`` (RFC 9110 weak comparison, which
    If-None-Match asks for: ``W/`` is ignored) or is ``*``."""
    tags = {t.strip().removeprefix("W/") for t in header.split(",")}
    return "*" in tags or tag in tags
