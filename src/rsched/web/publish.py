"""Schedules and publishing: the versions of a program, a draft's diff against the active
schedule (added, removed and changed shifts per person, churn figures, the diff guard's
verdict, the validation gate), publishing through the one-time token flow, and rollback
with a confirmation page.

Publishing is two steps, as in the API: "Publish…" asks for a one-time token bound to
the draft and the user (a POST: it writes the token) and shows a confirmation carrying
it; "Publish now" spends it in :func:`rsched.services.publishing.publish` (gate, diff
guard, backup, staged activation). A second submit of the same confirmation finds its
token spent, sees the draft already active, and reports that instead of acting again.
A rollback names the version it expects to replace; once replaced, a repeat does nothing.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date
from typing import Any

from starlette.responses import Response

from rsched.db.mapping import load_program_data
from rsched.db.models import ProgramRow
from rsched.domain import InvalidInput, NotFound, ProgramData, ScheduleStatus
from rsched.services import publishing, schedules
from rsched.services.access import Forbidden
from rsched.services.backups import BackupFailed, service_for
from rsched.services.publishing import DiffReport, PublishPolicy, PublishRefused
from rsched.services.schemas import VersionPublic
from rsched.web.core import Ctx, route
from rsched.web.pages import program_context
from rsched.web.report import report_view

MAX_REASON = 500


@dataclass(frozen=True, slots=True)
class ShiftText:
    day: date
    text: str


@dataclass(slots=True)
class PersonDiff:
    person_id: str
    name: str
    added: list[ShiftText]
    removed: list[ShiftText]
    changed_days: int
    """Days on which the person both loses and gains a shift (a changed shift)."""
    before: int
    fraction: float | None
    verdict: str


def _shift(data: ProgramData, slot_id: str) -> ShiftText:
    slot = data.slot_by_id.get(slot_id)
    if slot is None:
        return ShiftText(date.min, slot_id)
    local = slot.start.astimezone(data.tz)
    return ShiftText(local.date(), f"{local:%a %m-%d} {slot.shift} {local:%H:%M}")


def people_diff(report: DiffReport, data: ProgramData) -> list[PersonDiff]:
    names = {p.id: p.name for p in data.people}
    out = []
    for p in report.people:
        added = sorted((_shift(data, s) for s in p.added), key=lambda x: (x.day, x.text))
        removed = sorted((_shift(data, s) for s in p.removed), key=lambda x: (x.day, x.text))
        days: dict[date, set[str]] = defaultdict(set)
        for item in added:
            days[item.day].add("+")
        for item in removed:
            days[item.day].add("-")
        out.append(
            PersonDiff(
                person_id=p.person,
                name=names.get(p.person, p.person),
                added=added,
                removed=removed,
                changed_days=sum(1 for marks in days.values() if len(marks) == 2),
                before=p.before,
                fraction=p.fraction,
                verdict=p.verdict,
            )
        )
    return out


def _policy(ctx: Ctx, program_id: str) -> PublishPolicy:
    row = ctx.session.get(ProgramRow, program_id)
    return PublishPolicy.of(row.settings if row is not None else None)


def _manager(ctx: Ctx, pid: str) -> dict[str, Any]:
    base = program_context(ctx, pid)
    if not base["manages"]:
        raise NotFound("schedules and publishing are for the program's coordinators")
    return base


def _active(ctx: Ctx, pid: str) -> VersionPublic | None:
    return schedules.active_version(
        ctx.session, actor=ctx.actor, program_id=pid, start=date.min, end=date.max
    )


def schedules_page(ctx: Ctx) -> Response:
    pid = ctx.path("program_id")
    base = _manager(ctx, pid)
    versions = schedules.list_versions(ctx.session, actor=ctx.actor, program_id=pid, limit=100)
    return ctx.render(
        "schedules.html",
        **base,
        versions=versions.items,
        total=versions.total,
        active=_active(ctx, pid),
        reports={v.id: report_view(v.report) for v in versions.items},
    )


def _version_page(
    ctx: Ctx,
    pid: str,
    vid: str,
    *,
    refused: str | None = None,
    refused_reasons: list[str] | None = None,
    status: int = 200,
) -> Response:
    base = _manager(ctx, pid)
    version = schedules.get_version(ctx.session, actor=ctx.actor, program_id=pid, version_id=vid)
    diff = changes = gate = None
    policy = _policy(ctx, pid)
    if version.status == ScheduleStatus.DRAFT:
        diff = publishing.diff(ctx.session, actor=ctx.actor, program_id=pid, version_id=vid)
        data = load_program_data(ctx.session, pid)
        changes = people_diff(diff, data)
        gate = publishing.gate(ctx.session, pid, vid, policy)
    if status >= 400:
        ctx.rollback = True
    return ctx.render(
        "version.html",
        status=status,
        **base,
        version=version,
        report=report_view(version.report),
        diff=diff,
        changes=changes,
        gate=gate,
        policy=policy,
        active=_active(ctx, pid),
        refused=refused,
        refused_reasons=refused_reasons or [],
    )


def version_page(ctx: Ctx) -> Response:
    return _version_page(ctx, ctx.path("program_id"), ctx.path("version_id"))


def ask_publish(ctx: Ctx) -> Response:
    """Step 1: a one-time publish token for this draft and user, and the confirmation."""
    pid, vid = ctx.path("program_id"), ctx.path("version_id")
    base = _manager(ctx, pid)
    version = schedules.get_version(ctx.session, actor=ctx.actor, program_id=pid, version_id=vid)
    if version.status != ScheduleStatus.DRAFT:
        return ctx.redirect(f"/app/p/{pid}/schedules/{vid}", msg="already_published")
    token, expires = publishing.create_publish_token(
        ctx.session, actor=ctx.actor, program_id=pid, version_id=vid
    )
    diff = publishing.diff(ctx.session, actor=ctx.actor, program_id=pid, version_id=vid)
    return ctx.render(
        "publish_confirm.html",
        **base,
        version=version,
        token=token,
        expires=expires,
        diff=diff,
        active=_active(ctx, pid),
    )


def do_publish(ctx: Ctx) -> Response:
    """Step 2: spend the token. Refusals come back on the draft's page with the reasons."""
    pid, vid = ctx.path("program_id"), ctx.path("version_id")
    _manager(ctx, pid)
    token = ctx.field("token")
    version = schedules.get_version(ctx.session, actor=ctx.actor, program_id=pid, version_id=vid)
    if version.status != ScheduleStatus.DRAFT:
        return ctx.redirect(f"/app/p/{pid}/schedules/{vid}", msg="already_published")
    if not token:
        return _version_page(ctx, pid, vid, refused="The confirmation was incomplete.", status=422)
    ctx.commit_now()  # publishing runs its own transactions
    try:
        with service_for(ctx.settings) as backups:
            publishing.publish(
                ctx.factory,
                actor=ctx.actor,
                program_id=pid,
                version_id=vid,
                token=token,
                backups=backups,
            )
    except Forbidden:
        ctx.session.expire_all()
        again = schedules.get_version(ctx.session, actor=ctx.actor, program_id=pid, version_id=vid)
        if again.status == ScheduleStatus.ACTIVE:  # a repeat of a publish that went through
            return ctx.redirect(f"/app/p/{pid}/schedules/{vid}", msg="already_published")
        return _version_page(
            ctx,
            pid,
            vid,
            refused="The publish token was refused (expired, used, or not yours): "
            "start again with “Publish…”.",
            status=409,
        )
    except PublishRefused as exc:
        ctx.session.expire_all()
        return _version_page(
            ctx, pid, vid, refused=str(exc), refused_reasons=_reasons(exc), status=409
        )
    except BackupFailed:
        ctx.session.expire_all()
        return _version_page(
            ctx,
            pid,
            vid,
            refused="No backup could be made, so nothing was published. Tell the operator.",
            status=503,
        )
    except InvalidInput as exc:
        ctx.session.expire_all()
        return _version_page(
            ctx, pid, vid, refused="; ".join(e.message for e in exc.errors), status=409
        )
    return ctx.redirect(f"/app/p/{pid}/schedules/{vid}", msg="published")


def _reasons(exc: PublishRefused) -> list[str]:
    report = exc.report or {}
    found: list[str] = []
    gate = report.get("gate")
    if isinstance(gate, dict):
        found += [str(p) for p in gate.get("problems", [])]
    diff = report.get("diff")
    if isinstance(diff, dict):
        found += [str(r) for r in diff.get("reasons", [])]
    return found


# ----------------------------------------------------------------------- rollback


def _rollback_page(ctx: Ctx, pid: str, errors: dict[str, str], reason: str) -> Response:
    base = _manager(ctx, pid)
    if errors:
        ctx.rollback = True
    return ctx.render(
        "rollback.html",
        status=422 if errors else 200,
        **base,
        active=_active(ctx, pid),
        errors=errors,
        reason=reason,
    )


def rollback_page(ctx: Ctx) -> Response:
    return _rollback_page(ctx, ctx.path("program_id"), {}, "")


def do_rollback(ctx: Ctx) -> Response:
    pid = ctx.path("program_id")
    _manager(ctx, pid)
    reason = ctx.field("reason")
    expected = ctx.field("expected")
    active = _active(ctx, pid)
    if active is None or active.id != expected:  # already rolled back (or changed since)
        return ctx.redirect(f"/app/p/{pid}/schedules", msg="rollback_already")
    if not reason:
        return _rollback_page(ctx, pid, {"reason": "Say why the publish is rolled back."}, reason)
    if len(reason) > MAX_REASON:
        return _rollback_page(ctx, pid, {"reason": f"At most {MAX_REASON} characters."}, reason)
    ctx.commit_now()
    try:
        with service_for(ctx.settings) as backups:
            publishing.rollback(
                ctx.factory, actor=ctx.actor, program_id=pid, reason=reason, backups=backups
            )
    except (PublishRefused, NotFound) as exc:
        return _rollback_page(ctx, pid, {"form": f"Nothing was rolled back: {exc}"}, reason)
    except BackupFailed:
        return _rollback_page(
            ctx, pid, {"form": "No backup could be made, so nothing was rolled back."}, reason
        )
    return ctx.redirect(f"/app/p/{pid}/schedules", msg="rolled_back")


ROUTES = [
    route("/app/p/{program_id}/schedules", schedules_page),
    route("/app/p/{program_id}/schedules/{version_id}", version_page),
    route("/app/p/{program_id}/schedules/{version_id}/publish", ask_publish, methods=("POST",)),
    route(
        "/app/p/{program_id}/schedules/{version_id}/publish/confirm", do_publish, methods=("POST",)
    ),
    route("/app/p/{program_id}/rollback", rollback_page),
    route("/app/p/{program_id}/rollback", do_rollback, methods=("POST",)),
]
