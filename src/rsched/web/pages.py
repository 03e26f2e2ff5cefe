"""Sign-in, the programs, the schedule grid and "my schedule" with its calendar feed."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from starlette.responses import Response

from rsched.domain import NotFound, ScheduleStatus
from rsched.services import auth as auth_svc
from rsched.services import catalog, feeds, people, schedules
from rsched.services import rotations as rotations_svc
from rsched.services.access import Unauthenticated
from rsched.services.auth import RateLimited
from rsched.services.catalog import ProgramPublic
from rsched.services.schemas import VersionPublic
from rsched.web import grid as G
from rsched.web.core import COOKIE_REFRESH, Auth, Ctx, local_next, route

MAX_EMAIL = 254
MAX_PASSWORD = 1024


# ----------------------------------------------------------------------- signing in


def root(ctx: Ctx) -> Response:
    return ctx.redirect("/app" if ctx.signed_in else "/login")


def login_form(ctx: Ctx) -> Response:
    target = local_next(ctx.param("next"))
    if ctx.signed_in:
        return ctx.redirect(target)
    return ctx.render("login.html", errors={}, email="", next=target)


def login(ctx: Ctx) -> Response:
    email, password = ctx.field("email"), ctx.form.get("password", "")
    target = local_next(ctx.form.get("next"))
    errors: dict[str, str] = {}
    if not email:
        errors["email"] = "Enter your email address."
    elif len(email) > MAX_EMAIL or "@" not in email:
        errors["email"] = "Enter an email address like name@example.org."
    if not password:
        errors["password"] = "Enter your password."
    elif len(password) > MAX_PASSWORD:
        errors["password"] = "That password is too long."
    if errors:
        return ctx.invalid("login.html", errors, email=email, next=target)
    try:
        pair = auth_svc.login(ctx.session, ctx.settings, email=email, password=password)
    except Unauthenticated:
        ctx.rollback = True
        return ctx.render(
            "login.html",
            status=401,
            errors={"form": "Wrong email or password."},
            email=email,
            next=target,
        )
    except RateLimited as exc:
        ctx.rollback = True
        return ctx.render(
            "login.html",
            status=429,
            errors={"form": f"Too many failed attempts: try again in {exc.retry_after} s."},
            email=email,
            next=target,
        )
    actor = auth_svc.actor_from_access_token(ctx.session, ctx.settings, pair.access_token)
    ctx.auth = Auth(actor=actor, pair=pair)
    return ctx.redirect(target)


def logout(ctx: Ctx) -> Response:
    token = ctx.request.cookies.get(COOKIE_REFRESH)
    if token:
        auth_svc.logout(ctx.session, token)
    ctx.auth = Auth(clear=True)
    return ctx.redirect("/login", msg="signed_out")


# ----------------------------------------------------------------------- programs


def home(ctx: Ctx) -> Response:
    programs = catalog.list_programs(ctx.session, actor=ctx.actor, limit=500).items
    if len(programs) == 1 and not ctx.param("msg"):
        return ctx.redirect(f"/app/p/{programs[0].id}")
    return ctx.render("home.html", programs=programs, program=None, role=None)


def program_context(ctx: Ctx, program_id: str) -> dict[str, Any]:
    """What the layout needs to show a program's navigation for the caller's role."""
    program = catalog.get_program(ctx.session, actor=ctx.actor, program_id=program_id)
    return {"program": program, "role": program.role, "manages": ctx.manages(program_id)}


def hub(ctx: Ctx) -> Response:
    pid = ctx.path("program_id")
    base = program_context(ctx, pid)
    active = schedules.active_version(
        ctx.session, actor=ctx.actor, program_id=pid, start=date.min, end=date.max
    )
    return ctx.render("program.html", **base, active=active, person_id=ctx.actor.person_in(pid))


# ----------------------------------------------------------------------- the grid


def _parse_day(value: str, field: str, errors: dict[str, str]) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        errors[field] = "Enter a date as YYYY-MM-DD."
        return None


def _check_range(
    start: date, end: date, errors: dict[str, str], limit: int = G.MAX_PAGE_DAYS
) -> None:
    if end < start:
        errors["end"] = "The last day must not be before the first day."
    elif (end - start).days + 1 > limit:
        errors["end"] = f"Show at most {limit} days at once."


def _visible_versions(ctx: Ctx, pid: str) -> list[VersionPublic]:
    return schedules.list_versions(ctx.session, actor=ctx.actor, program_id=pid, limit=50).items


def _pick_version(versions: list[VersionPublic], wanted: str) -> VersionPublic | None:
    if wanted:
        for v in versions:
            if v.id == wanted:
                return v
        raise NotFound(f"schedule version {wanted!r} not found")
    active = [v for v in versions if v.status == ScheduleStatus.ACTIVE]
    return active[0] if active else (versions[0] if versions else None)


def grid_page(ctx: Ctx) -> Response:
    pid = ctx.path("program_id")
    base = program_context(ctx, pid)
    versions = _visible_versions(ctx, pid)
    version = _pick_version(versions, ctx.param("version"))
    errors: dict[str, str] = {}
    filters = {
        "start": ctx.param("start"),
        "end": ctx.param("end"),
        "pgy": ctx.param("pgy"),
        "rotation": ctx.param("rotation") if base["manages"] else "",
        "version": version.id if version else "",
    }
    if (
        filters["pgy"]
        and filters["pgy"] != "faculty"
        and not (filters["pgy"].isdigit() and 1 <= int(filters["pgy"]) <= 7)
    ):
        errors["pgy"] = "Choose a PGY level 1–7, faculty, or everyone."
    view = None
    if version is not None:
        first, last = G.default_range(version.start, version.end)
        start = _parse_day(filters["start"], "start", errors) or first
        end = _parse_day(filters["end"], "end", errors)
        if end is None:
            end = min(start + timedelta(days=(last - first).days), version.end)
            end = max(end, start)
        _check_range(start, end, errors)
        for name, day in (("start", start), ("end", end)):
            if name not in errors:
                filters[name] = day.isoformat()
        if not errors:
            view = G.build(
                ctx.session,
                actor=ctx.actor,
                program_id=pid,
                version_id=version.id,
                start=start,
                end=end,
                pgy="" if errors.get("pgy") else filters["pgy"],
                rotation=filters["rotation"],
            )
    rotations = (
        rotations_svc.list_rotations(ctx.session, actor=ctx.actor, program_id=pid, limit=500).items
        if base["manages"]
        else []
    )
    status = 422 if errors else 200
    return ctx.render(
        "grid.html",
        status=status,
        **base,
        versions=versions,
        version=version,
        view=view,
        filters=filters,
        errors=errors,
        rotations=rotations,
    )


# ----------------------------------------------------------------------- my schedule


def _me(ctx: Ctx, pid: str) -> tuple[dict[str, Any], str]:
    base = program_context(ctx, pid)
    person_id = ctx.actor.person_in(pid)
    if person_id is None:
        raise NotFound(
            "you are not linked to a person of this program (coordinators: see the grid)"
        )
    return base, person_id


def my_schedule(ctx: Ctx, *, feed_url: str | None = None, status: int = 200) -> Response:
    pid = ctx.path("program_id")
    base, person_id = _me(ctx, pid)
    person = people.get_person(ctx.session, actor=ctx.actor, program_id=pid, person_id=person_id)
    program: ProgramPublic = base["program"]
    errors: dict[str, str] = {}
    start = _parse_day(ctx.param("start"), "start", errors) or program.horizon_start
    end = _parse_day(ctx.param("end"), "end", errors) or program.horizon_end
    _check_range(start, end, errors, limit=366)
    active = None
    shifts: list[dict[str, object]] = []
    view = None
    if not errors:
        active = schedules.active_version(
            ctx.session, actor=ctx.actor, program_id=pid, start=start, end=end
        )
    if active is not None:
        lo, hi = max(start, active.start), min(end, active.end)
        if lo <= hi:
            view = G.build(
                ctx.session,
                actor=ctx.actor,
                program_id=pid,
                version_id=active.id,
                start=lo,
                end=hi,
                only_person=person_id,
            )
            for day, cell in zip(view.days, view.rows[0].cells if view.rows else [], strict=False):
                for s in cell.shifts:
                    shifts.append({"day": day, "shift": s, "marks": cell.marks})
    return ctx.render(
        "me.html",
        status=status,
        **base,
        person=person,
        active=active,
        view=view,
        shifts=shifts,
        errors=errors,
        filters={"start": start.isoformat(), "end": end.isoformat()},
        feed_url=feed_url,
    )


def my_schedule_page(ctx: Ctx) -> Response:
    return my_schedule(ctx)


def create_feed(ctx: Ctx) -> Response:
    pid = ctx.path("program_id")
    _, person_id = _me(ctx, pid)
    token = feeds.create_feed_token(
        ctx.session, actor=ctx.actor, program_id=pid, person_id=person_id
    )
    url = str(ctx.request.url_for("calendar_feed", token=token))
    return my_schedule(ctx, feed_url=url)


def revoke_feed(ctx: Ctx) -> Response:
    pid = ctx.path("program_id")
    _, person_id = _me(ctx, pid)
    feeds.revoke_feed_token(ctx.session, actor=ctx.actor, program_id=pid, person_id=person_id)
    return ctx.redirect(f"/app/p/{pid}/me", msg="feed_revoked")


ROUTES = [
    route("/", root, public=True),
    route("/login", login_form, public=True),
    route("/login", login, methods=("POST",), public=True),
    route("/logout", logout, methods=("POST",), public=True),
    route("/app", home),
    route("/app/p/{program_id}", hub),
    route("/app/p/{program_id}/grid", grid_page),
    route("/app/p/{program_id}/me", my_schedule_page),
    route("/app/p/{program_id}/me/feed", create_feed, methods=("POST",)),
    route("/app/p/{program_id}/me/feed/revoke", revoke_feed, methods=("POST",)),
]
