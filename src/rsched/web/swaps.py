"""Swaps of published shifts: a resident (or faculty member) picks one of their shifts,
sees the give-aways and trades the rules allow (best for fairness first,
:func:`rsched.services.swaps.candidates`) and requests one; a coordinator approves or
denies it; the counterpart (or a coordinator) makes it, which publishes the changed
schedule through the usual gate, diff guard and backup.

Each form acts once: a request identical to one still open is not made again, and a
decision or an execution the service finds already done is reported as such.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.responses import Response

from rsched.db.mapping import load_program_data
from rsched.domain import InvalidInput, NotFound, ProgramData
from rsched.services import swaps as svc
from rsched.services.backups import BackupFailed, service_for
from rsched.services.publishing import PublishRefused
from rsched.services.swaps import SwapPublic
from rsched.web.core import Ctx, field_errors, route
from rsched.web.pages import program_context

MAX_SHOWN = 50
OPEN = ("pending", "approved")


@dataclass(frozen=True, slots=True)
class Option:
    value: str
    text: str
    fairness: str
    kind: str


@dataclass(frozen=True, slots=True)
class Row:
    swap: SwapPublic
    giver: str
    shift: str
    taker: str
    back: str | None
    mine: bool
    taking: bool


def describe_slot(data: ProgramData, slot_id: str | None) -> str:
    if slot_id is None:
        return ""
    slot = data.slot_by_id.get(slot_id)
    if slot is None:
        return slot_id
    start, end = slot.start.astimezone(data.tz), slot.end.astimezone(data.tz)
    return f"{start:%a %Y-%m-%d} {slot.shift} {start:%H:%M}–{end:%H:%M}"


def describe_person(data: ProgramData, person_id: str) -> str:
    person = data.person_by_id.get(person_id)
    if person is None:
        return person_id
    who = f"PGY-{person.pgy}" if person.pgy is not None else "faculty"
    return f"{person.name} ({who})"


def _fairness(cost: int) -> str:
    if cost < 0:
        return "evens out duties"
    if cost > 0:
        return "makes duties less even"
    return "no change to fairness"


def _subject(ctx: Ctx, pid: str, wanted: str) -> str:
    """Whose shift: one's own; a coordinator may name anyone."""
    me = ctx.actor.person_in(pid)
    if wanted and ctx.manages(pid):
        return wanted
    if me is None:
        raise NotFound("you are not linked to a person of this program")
    return me


def _new_page(
    ctx: Ctx,
    pid: str,
    person_id: str,
    slot_id: str,
    *,
    errors: dict[str, str] | None = None,
    chosen: str = "",
    note: str = "",
) -> Response:
    base = program_context(ctx, pid)
    found = svc.candidates(
        ctx.session,
        actor=ctx.actor,
        program_id=pid,
        person_id=person_id,
        slot_id=slot_id,
        limit=MAX_SHOWN,
    )
    data = load_program_data(ctx.session, pid)
    options = []
    for c in found.items:
        value = f"{c.taker}|{c.taker_slot or ''}"
        if c.kind == "give":
            text = f"Give it to {describe_person(data, c.taker)}"
        else:
            text = (
                f"Trade with {describe_person(data, c.taker)}: you take their "
                f"{describe_slot(data, c.taker_slot)}"
            )
        options.append(Option(value, text, _fairness(c.fairness_cost), c.kind))
    if errors:
        ctx.rollback = True
    return ctx.render(
        "swap_new.html",
        status=422 if errors else 200,
        **base,
        person=describe_person(data, person_id),
        person_id=person_id,
        slot_id=slot_id,
        shift=describe_slot(data, slot_id),
        options=options,
        total=found.total,
        errors=errors or {},
        chosen=chosen,
        note=note,
    )


def new_swap_page(ctx: Ctx) -> Response:
    pid = ctx.path("program_id")
    slot = ctx.param("slot")
    if not slot:
        return ctx.redirect(f"/app/p/{pid}/me")
    try:
        return _new_page(ctx, pid, _subject(ctx, pid, ctx.param("person")), slot)
    except InvalidInput as exc:  # e.g. the shift has started
        ctx.rollback = True
        base = program_context(ctx, pid)
        detail = "; ".join(e.message for e in exc.errors)
        return ctx.render(
            "error.html", status=422, **base, title="This shift cannot be swapped", detail=detail
        )


def request_swap(ctx: Ctx) -> Response:
    pid = ctx.path("program_id")
    slot = ctx.field("slot")
    person = _subject(ctx, pid, ctx.field("person"))
    chosen, note = ctx.field("candidate"), ctx.field("note")
    errors: dict[str, str] = {}
    taker, _, back = chosen.partition("|")
    if not taker:
        errors["candidate"] = "Choose who takes the shift."
    if len(note) > svc.NOTE_MAX:
        errors["note"] = f"At most {svc.NOTE_MAX} characters."
    if errors:
        return _new_page(ctx, pid, person, slot, errors=errors, chosen=chosen, note=note)
    open_ones = svc.list_swaps(ctx.session, actor=ctx.actor, program_id=pid, limit=500).items
    for s in open_ones:
        same = (s.person_id, s.slot_id, s.taker_id, s.taker_slot_id or "")
        if s.status in OPEN and same == (person, slot, taker, back):
            return ctx.redirect(f"/app/p/{pid}/swaps", msg="swap_already")  # acts once
    try:
        svc.request_swap(
            ctx.session,
            actor=ctx.actor,
            program_id=pid,
            person_id=person,
            slot_id=slot,
            taker_id=taker,
            taker_slot_id=back or None,
            note=note,
        )
    except svc.SwapRefused as exc:
        ctx.commit_now()  # keep the refusal's audit row
        return _new_page(ctx, pid, person, slot, errors={"form": str(exc)}, chosen=chosen)
    except InvalidInput as exc:
        names = {"taker_id": "candidate", "taker_slot_id": "candidate", "note": "note"}
        return _new_page(
            ctx, pid, person, slot, errors=field_errors(exc, names), chosen=chosen, note=note
        )
    return ctx.redirect(f"/app/p/{pid}/swaps", msg="swap_requested")


def swaps_page(ctx: Ctx) -> Response:
    pid = ctx.path("program_id")
    base = program_context(ctx, pid)
    found = svc.list_swaps(ctx.session, actor=ctx.actor, program_id=pid, limit=200)
    data = load_program_data(ctx.session, pid)
    me = ctx.actor.person_in(pid)
    rows = [
        Row(
            swap=s,
            giver=describe_person(data, s.person_id),
            shift=describe_slot(data, s.slot_id),
            taker=describe_person(data, s.taker_id),
            back=describe_slot(data, s.taker_slot_id) if s.taker_slot_id else None,
            mine=s.person_id == me,
            taking=s.taker_id == me,
        )
        for s in found.items
    ]
    return ctx.render("swaps.html", **base, rows=rows, total=found.total, me=me)


def decide(ctx: Ctx) -> Response:
    pid, sid = ctx.path("program_id"), ctx.path("swap_id")
    decision = ctx.field("decision")
    if decision not in ("approve", "deny"):
        return ctx.redirect(f"/app/p/{pid}/swaps")
    try:
        svc.decide_swap(
            ctx.session, actor=ctx.actor, program_id=pid, swap_id=sid, approve=decision == "approve"
        )
    except svc.SwapRefused:
        return ctx.redirect(f"/app/p/{pid}/swaps", msg="swap_already")  # decided once
    return ctx.redirect(f"/app/p/{pid}/swaps", msg="swap_decided")


def execute(ctx: Ctx) -> Response:
    pid, sid = ctx.path("program_id"), ctx.path("swap_id")
    svc.get_swap(ctx.session, actor=ctx.actor, program_id=pid, swap_id=sid)
    ctx.commit_now()  # the swap publishes in transactions of its own
    try:
        with service_for(ctx.settings) as backups:
            svc.execute_swap(
                ctx.factory, actor=ctx.actor, program_id=pid, swap_id=sid, backups=backups
            )
    except svc.SwapRefused as exc:
        status = (exc.report or {}).get("status")
        if status in ("executed", "undone", "denied"):
            return ctx.redirect(f"/app/p/{pid}/swaps", msg="swap_already")
        return _refused(ctx, pid, str(exc))
    except PublishRefused as exc:
        return _refused(ctx, pid, str(exc))
    except BackupFailed:
        return _refused(ctx, pid, "no backup could be made, so nothing was changed")
    return ctx.redirect(f"/app/p/{pid}/swaps", msg="swap_done")


def _refused(ctx: Ctx, pid: str, why: str) -> Response:
    base = program_context(ctx, pid)
    ctx.rollback = True
    return ctx.render("error.html", status=409, **base, title="The swap was not made", detail=why)


ROUTES = [
    route("/app/p/{program_id}/swaps", swaps_page),
    route("/app/p/{program_id}/swaps/new", new_swap_page),
    route("/app/p/{program_id}/swaps/new", request_swap, methods=("POST",)),
    route("/app/p/{program_id}/swaps/{swap_id}/decide", decide, methods=("POST",)),
    route("/app/p/{program_id}/swaps/{swap_id}/execute", execute, methods=("POST",)),
]
