"""Operations for coordinators and admins: the situation report as a page (runs by state,
recent failures with their reasons, active runs with live progress, health of the
database, control store, workers and leader, each program's active schedule with its
coverage and violations, and what to do now) and, for admins, the list of backups.

Every figure is :func:`rsched.services.ops.sitrep`'s (counted from rows or read from the
control store); the backups are :meth:`rsched.services.backups.BackupService.list`'s.
"""

from __future__ import annotations

from starlette.responses import Response

from rsched.services import ops
from rsched.services.access import Forbidden
from rsched.services.backups import service_for
from rsched.web.core import Ctx, route
from rsched.web.runs import store_of


def ops_page(ctx: Ctx) -> Response:
    program = ctx.param("program") or None
    report = ops.sitrep(
        ctx.session,
        actor=ctx.actor,
        store=store_of(ctx.request.app.state, ctx.settings),
        program_id=program,
    )
    return ctx.render("ops.html", sitrep=report, only=program, admin=_admin(ctx))


def _admin(ctx: Ctx) -> bool:
    return ctx.actor.is_admin and ctx.actor.scopes is None


def backups_page(ctx: Ctx) -> Response:
    if not _admin(ctx):
        raise Forbidden("backups hold every program: only an admin may see them")
    with service_for(ctx.settings) as backups:
        records = backups.list()
    return ctx.render("backups.html", backups=records, folder=str(ctx.settings.data_dir))


ROUTES = [
    route("/app/ops", ops_page),
    route("/app/ops/backups", backups_page),
]
