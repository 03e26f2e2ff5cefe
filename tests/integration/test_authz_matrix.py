"""Authorization matrix: every route of the app × six principals × {their own program,
the other program}, with the expected status derived from a small policy table keyed
by route name. The cases are generated from ``app.routes``: a route missing from the
table (or a stale entry in it) fails, so a new route cannot escape the matrix.

Objects a call changes or deletes are made fresh for that call (in the target program),
so every answer is about who asks, never about what an earlier case did; a 404 for
another program's object is for an object that exists.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, time, timedelta
from enum import Enum
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from rsched.api.app import create_app
from rsched.api.errors import PROBLEM_JSON
from rsched.config import Settings
from rsched.db.base import transaction
from rsched.domain import PersonKind, ShiftKind
from rsched.services import approvals
from rsched.services import programs as P
from rsched.services import runs as R
from rsched.services.auth import login as service_login
from rsched.services.schemas import (
    AbsenceCreate,
    PersonCreate,
    RequestCreate,
    RotationCreate,
    ShiftTypeCreate,
    SlotPatternCreate,
)
from tests.integration.api_support import (
    HOME,
    PASSWORD,
    PRINCIPALS,
    SETUP,
    RouteInfo,
    World,
    api_routes,
    fill,
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
    return P.create_person(s, actor=SETUP, program_id=pid, data=data).id


def _shift(s: Any, pid: str) -> str:
    data = ShiftTypeCreate(
        code=unique("S"), name="Temp", start=time(8), duration_minutes=60, kind=ShiftKind.EDUCATION
    )
    return P.create_shift_type(s, actor=SETUP, program_id=pid, data=data).code


def _rotation(world: World, program: str) -> Callable[[Any, str], str]:
    def make(s: Any, pid: str) -> str:
        data = RotationCreate(
            id=unique("rot"),
            name="Temp",
            eligible_pgy=[1],
            max_residents=1,
            shift_types=[world.programs[program].shift],
        )
        return P.create_rotation(s, actor=SETUP, program_id=pid, data=data).id

    return make


def _pattern(world: World, program: str) -> Callable[[Any, str], str]:
    def make(s: Any, pid: str) -> str:
        data = SlotPatternCreate(
            shift=world.programs[program].shift, days="daily", min_staff=0, max_staff=1
        )
        return P.create_slot_pattern(s, actor=SETUP, program_id=pid, data=data).id

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
        return P.create_absence(s, actor=SETUP, program_id=pid, data=data).id

    return make


def _request(world: World, program: str) -> Callable[[Any, str], str]:
    def make(s: Any, pid: str) -> str:
        data = RequestCreate(
            person_id=world.programs[program].other_person, day=date(2026, 7, 12), wants=True
        )
        return P.create_request(s, actor=SETUP, program_id=pid, data=data).id

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
}
"""Routes that need a body or a fresh object; every other route needs only real ids."""


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


@pytest.mark.parametrize(("route", "principal", "side"), list(cases()))
def test_route_answers_by_role_and_program(
    served: tuple[World, TestClient], route: RouteInfo, principal: str, side: str
) -> None:
    world, client = served
    assert route.name in POLICY, f"{route.name} ({route.path}) has no entry in POLICY"
    program = PROGRAMS[side](principal)
    call = BUILDERS.get(route.name, ids_only)(world, program)
    path = fill(route.path, {**world.path_values(program), **call.path})
    want = expected(POLICY[route.name], principal, program, route.success)

    response = client.request(
        route.method,
        path,
        json=call.json,
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
