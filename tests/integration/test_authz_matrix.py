"""Authorization matrix: every route of the app × six principals × {their own program,
the other program}, with the expected status derived from a small policy table keyed
by route name. The cases are generated from ``app.routes``: a route missing from the
table (or a stale entry in it) fails, so a new route cannot escape the matrix.

Objects a call changes or deletes are made fresh for that call (in the target program),
so every answer is about who asks, never about what an earlier case did; a 404 for
another program's object is for an object that exists. Where the shared world cannot
give an allowed caller success (its shifts have all started, its drafts fail the
publishing gate), the call says which refusal of the service an allowed caller gets
instead (``Call.expect``): still a different answer from any caller who is not allowed.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from enum import Enum
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from rsched.api.app import create_app
from rsched.api.errors import PROBLEM_JSON
from rsched.config import Settings
from rsched.db.base import transaction
from rsched.db.models import StagingBackupRow, StagingRow
from rsched.domain import PersonKind, ShiftKind
from rsched.services import approvals
from rsched.services import publishing as PB
from rsched.services import runs as R
from rsched.services import schedules as S
from rsched.services.absences import create_absence
from rsched.services.access import Actor
from rsched.services.auth import login as service_login
from rsched.services.people import create_person
from rsched.services.requests import create_request
from rsched.services.rotations import create_rotation
from rsched.services.schemas import (
    AbsenceCreate,
    PersonCreate,
    RequestCreate,
    RotationCreate,
    ShiftTypeCreate,
    SlotPatternCreate,
)
from rsched.services.shift_types import create_shift_type
from rsched.services.slot_patterns import create_slot_pattern
from tests.integration.api_support import (
    HOME,
    PASSWORD,
    PRINCIPALS,
    SETUP,
    RouteInfo,
    World,
    api_routes,
    fill,
    make_swap,
    populated,
    program_file,
    unique,
)


class Policy(Enum):
    PUBLIC = "no credentials needed (or credentials in the body)"
    SIGNED_IN = "any valid access token"
    ADMIN = "admins only"
    READ = "members of the program"
    OWN = "coordinators and the person the object is about; others 404"
    SUBMIT = "coordinators, and members for themselves; for someone else 403"
    MANAGE = "coordinators of the program and admins; other members 403"
    COORDINATING = "coordinators of any program and admins; other members 403"


POLICY: dict[str, Policy] = {
    "health": Policy.PUBLIC,
    "login": Policy.PUBLIC,
    "refresh": Policy.PUBLIC,
    "logout": Policy.PUBLIC,
    "calendar_feed": Policy.PUBLIC,
    "list_programs": Policy.SIGNED_IN,
    "import_program": Policy.ADMIN,
    "get_program": Policy.READ,
    "list_people": Policy.READ,
    "get_person": Policy.OWN,
    "create_person": Policy.MANAGE,
    "update_person": Policy.MANAGE,
    "delete_person": Policy.MANAGE,
    "list_shift_types": Policy.READ,
    "get_shift_type": Policy.READ,
    "create_shift_type": Policy.MANAGE,
    "update_shift_type": Policy.MANAGE,
    "delete_shift_type": Policy.MANAGE,
    "list_rotations": Policy.MANAGE,
    "get_rotation": Policy.MANAGE,
    "create_rotation": Policy.MANAGE,
    "update_rotation": Policy.MANAGE,
    "delete_rotation": Policy.MANAGE,
    "list_slot_patterns": Policy.MANAGE,
    "get_slot_pattern": Policy.MANAGE,
    "create_slot_pattern": Policy.MANAGE,
    "update_slot_pattern": Policy.MANAGE,
    "delete_slot_pattern": Policy.MANAGE,
    "list_absences": Policy.READ,
    "get_absence": Policy.OWN,
    "create_absence": Policy.MANAGE,
    "update_absence": Policy.MANAGE,
    "delete_absence": Policy.MANAGE,
    "list_requests": Policy.READ,
    "get_request": Policy.OWN,
    "create_request": Policy.SUBMIT,
    "update_request": Policy.MANAGE,
    "delete_request": Policy.MANAGE,
    "list_versions": Policy.READ,
    "get_active_version": Policy.READ,
    "get_version": Policy.READ,
    "get_grid": Policy.READ,
    "list_assignments": Policy.READ,
    "export_json": Policy.READ,
    "export_csv": Policy.READ,
    "create_feed_token": Policy.OWN,
    "revoke_feed_tokens": Policy.OWN,
    "get_diff": Policy.MANAGE,
    "create_publish_token": Policy.MANAGE,
    "publish_version": Policy.MANAGE,
    "rollback_schedule": Policy.MANAGE,
    "repair_program": Policy.MANAGE,
    "swap_candidates": Policy.OWN,
    "list_swaps": Policy.READ,
    "request_swap": Policy.SUBMIT,
    "get_swap": Policy.OWN,
    "decide_swap": Policy.MANAGE,
    "execute_swap": Policy.OWN,
    "undo_swap": Policy.MANAGE,
    "list_backups": Policy.ADMIN,
    "create_backup": Policy.ADMIN,
    "backup_retention": Policy.ADMIN,
    "get_backup": Policy.ADMIN,
    "verify_backup": Policy.ADMIN,
    "restore_backup": Policy.ADMIN,
    "create_run": Policy.MANAGE,
    "list_active_runs": Policy.SIGNED_IN,
    "get_run": Policy.READ,
    "get_run_progress": Policy.READ,
    "run_events": Policy.READ,
    "abort_run": Policy.MANAGE,
    "ops_sitrep": Policy.COORDINATING,
    "fix_it": Policy.MANAGE,
    "request_approval": Policy.MANAGE,
    "decide_approval": Policy.MANAGE,
}


def role_in(principal: str, program: str) -> str | None:
    if principal == "admin":
        return "admin"
    if HOME.get(principal) != program:
        return None
    return "coordinator" if principal.startswith("coordinator") else principal


def expected(policy: Policy, principal: str, program: str, success: int) -> int:
    """The status a principal gets on a route of ``policy`` aimed at ``program``. The
    object of OWN and SUBMIT routes is the resident principal's own (in program A)."""
    if policy is Policy.PUBLIC:
        return success
    if principal == "anonymous":
        return 401
    if policy is Policy.SIGNED_IN:
        return success
    if policy is Policy.ADMIN:
        return success if principal == "admin" else 403
    if policy is Policy.COORDINATING:
        return success if principal == "admin" or principal.startswith("coordinator") else 403
    role = role_in(principal, program)
    if role is None:
        return 404
    if policy is Policy.READ or role in ("admin", "coordinator"):
        return success
    if policy is Policy.MANAGE:
        return 403
    if role == "resident":
        return success
    return 404 if policy is Policy.OWN else 403


# ------------------------------------------------------------------- building calls


@dataclass
class Call:
    path: dict[str, str] = field(default_factory=dict)
    json: Any = None
    query: dict[str, str] = field(default_factory=dict)
    expect: int | None = None
    """What an allowed caller gets when the service refuses the world's object (else the
    route's success status)."""
    headers: dict[str, str] = field(default_factory=dict)


Builder = Callable[[World, str], Call]


def ids_only(_world: World, _program: str) -> Call:
    return Call()


def fresh(world: World, program: str, make: Callable[[Any, str], Any]) -> Any:
    """Run ``make(session, program_id)`` as the set-up admin in its own transaction."""
    with transaction(world.factory) as s:
        return make(s, world.programs[program].id)


def _person(s: Any, pid: str) -> str:
    data = PersonCreate(id=unique("p"), name="Temp", kind=PersonKind.RESIDENT, pgy=1)
    return create_person(s, actor=SETUP, program_id=pid, data=data).id


def _shift(s: Any, pid: str) -> str:
    data = ShiftTypeCreate(
        code=unique("S"), name="Temp", start=time(8), duration_minutes=60, kind=ShiftKind.EDUCATION
    )
    return create_shift_type(s, actor=SETUP, program_id=pid, data=data).code


def _rotation(world: World, program: str) -> Callable[[Any, str], str]:
    def make(s: Any, pid: str) -> str:
        data = RotationCreate(
            id=unique("rot"),
            name="Temp",
            eligible_pgy=[1],
            max_residents=1,
            shift_types=[world.programs[program].shift],
        )
        return create_rotation(s, actor=SETUP, program_id=pid, data=data).id

    return make


def _pattern(world: World, program: str) -> Callable[[Any, str], str]:
    def make(s: Any, pid: str) -> str:
        data = SlotPatternCreate(
            shift=world.programs[program].shift, days="daily", min_staff=0, max_staff=1
        )
        return create_slot_pattern(s, actor=SETUP, program_id=pid, data=data).id

    return make


def absence_body(world: World, program: str) -> dict[str, Any]:
    """An absence of another resident, on a day no other absence uses."""
    start = date(2028, 1, 1) + timedelta(days=int(unique("d").split("-")[1]))
    return {
        "person_id": world.programs[program].other_person,
        "start": f"{start}T08:00:00-05:00",
        "end": f"{start}T12:00:00-05:00",
    }


def _absence(world: World, program: str) -> Callable[[Any, str], str]:
    def make(s: Any, pid: str) -> str:
        data = AbsenceCreate.model_validate(absence_body(world, program))
        return create_absence(s, actor=SETUP, program_id=pid, data=data).id

    return make


def _request(world: World, program: str) -> Callable[[Any, str], str]:
    def make(s: Any, pid: str) -> str:
        data = RequestCreate(
            person_id=world.programs[program].other_person, day=date(2026, 7, 12), wants=True
        )
        return create_request(s, actor=SETUP, program_id=pid, data=data).id

    return make


def _refresh_token(world: World) -> str:
    admin = world.principals["admin"]
    assert admin.email is not None
    with transaction(world.factory) as s:
        return service_login(s, world.settings, email=admin.email, password=PASSWORD).refresh_token


def _queued_run(_world: World, _program: str) -> Callable[[Any, str], str]:
    def make(s: Any, pid: str) -> str:
        run, _ = R.create_run(s, actor=SETUP, program_id=pid, idempotency_key=unique("matrix"))
        return run.id

    return make


def _approval_token(world: World, program: str) -> str:
    with transaction(world.factory) as s:
        return approvals.request_approval(
            s,
            actor=SETUP,
            program_id=world.programs[program].id,
            action="fix_it",
            target="matrix",
            reason="authorization matrix",
        ).token


def _empty_draft(s: Any, pid: str) -> str:
    return S.save_draft(s, actor=SETUP, program_id=pid, assignments=[], report_summary={})


def _publish(world: World, program: str, principal: str) -> Call:
    """A fresh draft and a publish token of the caller's own (made for their user id), so
    an allowed caller gets past the token to the gate, which refuses an empty draft."""
    draft = fresh(world, program, _empty_draft)
    user = world.principals[principal].user_id or "anonymous"
    with transaction(world.factory) as s:
        token, _ = PB.create_publish_token(
            s,
            actor=Actor(user_id=user, is_admin=True),
            program_id=world.programs[program].id,
            version_id=draft,
        )
    return Call(path={"version_id": draft}, json={"token": token}, expect=409)


def _published(world: World, program: str) -> Call:
    """A committed publish of the world's active version that changed nothing (its
    backup says the version was active before): rolling it back leaves every version as
    it is, so each case finds the same world."""
    p = world.programs[program]
    now = datetime.now(UTC)
    with transaction(world.factory) as s:
        staging = uuid.uuid4().hex
        s.add(
            StagingRow(
                id=staging,
                program_id=p.id,
                version_id=p.active_version,
                previous_active=[],
                checksum="",
                state="committed",
                kind="publish",
                actor=SETUP.user_id,
                detail={},
                created_at=now,
                resolved_at=now,
            )
        )
        s.flush()
        s.add(
            StagingBackupRow(
                staging_id=staging,
                table_name="schedule_versions",
                row_key=p.active_version,
                before={"status": "active"},
            )
        )
    return Call(json={"reason": "authorization matrix"})


def _swap(world: World, program: str, *, taker_is_subject: bool = False) -> str:
    """A fresh pending swap request: the subject's shift to someone else, or (in the
    resident principal's program) someone's shift to the subject, who may execute it."""
    p = world.programs[program]
    if taker_is_subject and program == HOME["resident"]:
        return make_swap(world.factory, p.id, taker=p.subject)[0]
    return make_swap(world.factory, p.id, person=p.subject)[0]


def _on(key: str, make: Callable[[World, str], Callable[[Any, str], str]]) -> Builder:
    return lambda w, prog: Call(path={key: fresh(w, prog, make(w, prog))})


BUILDERS: dict[str, Builder] = {
    "login": lambda w, _: Call(json={"email": w.principals["faculty"].email, "password": PASSWORD}),
    "refresh": lambda w, _: Call(json={"refresh_token": _refresh_token(w)}),
    "logout": lambda w, _: Call(json={"refresh_token": _refresh_token(w)}),
    "calendar_feed": lambda w, prog: Call(path={"token": w.feed_token(prog)}),
    "import_program": lambda _w, _p: Call(json=program_file(unique("imported"))),
    "create_person": lambda _w, _p: Call(
        json={"id": unique("p"), "name": "New", "kind": "resident", "pgy": 2}
    ),
    "update_person": lambda _w, _p: Call(json={"name": "Renamed"}),
    "delete_person": lambda w, prog: Call(path={"person_id": fresh(w, prog, _person)}),
    "create_shift_type": lambda _w, _p: Call(
        json={
            "code": unique("S"),
            "name": "New",
            "start": "09:00",
            "duration_minutes": 30,
            "kind": "education",
        }
    ),
    "update_shift_type": lambda _w, _p: Call(json={"name": "Renamed"}),
    "delete_shift_type": lambda w, prog: Call(path={"code": fresh(w, prog, _shift)}),
    "create_rotation": lambda w, prog: Call(
        json={
            "id": unique("rot"),
            "name": "New",
            "eligible_pgy": [2],
            "max_residents": 2,
            "shift_types": [w.programs[prog].shift],
        }
    ),
    "update_rotation": lambda _w, _p: Call(json={"name": "Renamed"}),
    "delete_rotation": _on("rotation_id", _rotation),
    "create_slot_pattern": lambda w, prog: Call(
        json={"shift": w.programs[prog].shift, "days": ["mon"], "min_staff": 0, "max_staff": 1}
    ),
    "update_slot_pattern": lambda w, prog: Call(
        path={"pattern_id": fresh(w, prog, _pattern(w, prog))}, json={"max_staff": 2}
    ),
    "delete_slot_pattern": _on("pattern_id", _pattern),
    "create_absence": lambda w, prog: Call(json=absence_body(w, prog)),
    "update_absence": lambda w, prog: Call(
        path={"absence_id": fresh(w, prog, _absence(w, prog))}, json={"blocking": False}
    ),
    "delete_absence": _on("absence_id", _absence),
    "create_request": lambda w, prog: Call(
        json={"person_id": w.programs[prog].subject, "day": "2026-07-20", "wants": False}
    ),
    "update_request": lambda w, prog: Call(
        path={"request_id": fresh(w, prog, _request(w, prog))}, json={"weight": 2}
    ),
    "delete_request": _on("request_id", _request),
    "create_run": lambda _w, _p: Call(
        json={"algorithm": "greedy", "time_limit": 5},
        headers={"Idempotency-Key": unique("matrix-key")},
    ),
    "abort_run": lambda w, prog: Call(
        path={"run_id": fresh(w, prog, _queued_run(w, prog))}, json={"reason": "matrix"}
    ),
    "fix_it": lambda w, prog: Call(
        json={"program_id": w.programs[prog].id, "mode": "conservative", "dry_run": True}
    ),
    "request_approval": lambda w, prog: Call(
        json={
            "program_id": w.programs[prog].id,
            "action": "fix_it",
            "target": "matrix",
            "reason": "authorization matrix",
        }
    ),
    "decide_approval": lambda w, prog: Call(
        json={"program_id": w.programs[prog].id, "token": _approval_token(w, prog)}
    ),
    "create_publish_token": lambda w, prog: Call(
        path={"version_id": w.programs[prog].draft_version}
    ),
    "rollback_schedule": _published,
    "repair_program": lambda _w, _p: Call(json={"time_limit": 1, "workers": 1}),
    # the world's shifts have all started: an allowed caller gets 422 naming the shift
    "swap_candidates": lambda w, prog: Call(query=w.swap_query(prog), expect=422),
    "request_swap": lambda w, prog: Call(
        json={
            "person_id": w.programs[prog].subject,
            "slot_id": w.programs[prog].swap_slot,
            "taker_id": w.programs[prog].other_person,
        },
        expect=422,
    ),
    "decide_swap": lambda w, prog: Call(
        path={"swap_id": _swap(w, prog)}, json={"approve": True}, expect=409
    ),
    "execute_swap": lambda w, prog: Call(
        path={"swap_id": _swap(w, prog, taker_is_subject=True)}, expect=422
    ),
    "undo_swap": lambda w, prog: Call(
        path={"swap_id": _swap(w, prog)}, json={"reason": "matrix"}, expect=409
    ),
    "create_backup": lambda _w, _p: Call(json={"reason": "matrix"}),
    "backup_retention": lambda _w, _p: Call(json={"dry_run": True}),
    # the world's own database is not empty: a restore into it is refused
    "restore_backup": lambda w, _p: Call(
        json={"target_url": w.settings.resolved_database_url()}, expect=409
    ),
}
"""Routes that need a body or a fresh object; every other route needs only real ids."""
PER_PRINCIPAL: dict[str, Callable[[World, str, str], Call]] = {"publish_version": _publish}
"""Builders that make something of the caller's own (a publish token is bound to its user)."""


# ------------------------------------------------------------------------ the cases

ROUTES = api_routes(create_app(Settings(env="test")))
PROGRAMS: dict[str, Callable[[str], str]] = {
    "own": lambda who: HOME.get(who, "A"),
    "other": lambda who: "B" if HOME.get(who, "A") == "A" else "A",
}


def cases() -> Iterator[Any]:
    for route in ROUTES:
        for principal in PRINCIPALS:
            for side in PROGRAMS:
                yield pytest.param(route, principal, side, id=f"{route.name}-{principal}-{side}")


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[World, TestClient]]:
    url: str = request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url")
    data_dir: Path = tmp_path_factory.mktemp("authz")
    with populated(url, data_dir) as pair:
        yield pair


def test_the_policy_table_covers_exactly_the_routes() -> None:
    names = [r.name for r in ROUTES]
    assert len(names) > 40, "the route table looks empty: is every router included?"
    assert len(names) == len(set(names)), "route names must be unique (the table's keys)"
    assert sorted(set(names) - set(POLICY)) == [], "routes without a policy"
    assert sorted(set(POLICY) - set(names)) == [], "policies of routes that do not exist"
    assert sorted(set(BUILDERS) - set(names)) == [], "builders of routes that do not exist"
    assert sorted(set(PER_PRINCIPAL) - set(names)) == [], "builders of routes that do not exist"


@pytest.mark.parametrize(("route", "principal", "side"), list(cases()))
def test_route_answers_by_role_and_program(
    served: tuple[World, TestClient], route: RouteInfo, principal: str, side: str
) -> None:
    world, client = served
    assert route.name in POLICY, f"{route.name} ({route.path}) has no entry in POLICY"
    program = PROGRAMS[side](principal)
    own = PER_PRINCIPAL.get(route.name)
    call = (
        own(world, program, principal)
        if own is not None
        else BUILDERS.get(route.name, ids_only)(world, program)
    )
    path = fill(route.path, {**world.path_values(program), **call.path})
    want = expected(POLICY[route.name], principal, program, route.success)
    if call.expect is not None and want == route.success:
        want = call.expect

    response = client.request(
        route.method,
        path,
        json=call.json,
        params=call.query,
        headers={**world.principals[principal].headers(), **call.headers},
    )

    assert response.status_code == want, (
        f"{route.method} {path} as {principal} ({side} program {program}): "
        f"{response.status_code} {response.text[:300]}"
    )
    if want >= 400:
        assert response.headers["content-type"] == PROBLEM_JSON
        assert response.json()["status"] == want
    if want == 401:
        assert response.headers["www-authenticate"].startswith("Bearer")
