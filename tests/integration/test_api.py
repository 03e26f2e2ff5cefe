"""The HTTP API on SQLite and PostgreSQL (each test on an empty migrated database):
sign-in flow, importing a generated program, CRUD with pagination and filters, a bad
import (every error path, nothing written), problem details, schedules, exports and
calendar feeds, health, and no traceback in any error body."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from rsched.api.app import JsonFormatter
from rsched.api.errors import PROBLEM_JSON
from rsched.config import Settings
from rsched.db.base import transaction
from rsched.db.models import FeedTokenRow, ScheduleVersionRow
from rsched.domain import InvalidInput
from rsched.programfile.loader import parse_program
from rsched.services import catalog, scope
from rsched.services import feeds as F
from rsched.services import schedules as S
from rsched.services.access import Role
from rsched.services.users import add_membership, create_user
from tests.integration.api_support import (
    PASSWORD,
    SETUP,
    api_client,
    api_settings,
    program_file,
    some_assignments,
    table_checksums,
)


@dataclass
class Api:
    client: TestClient
    factory: sessionmaker[Session]
    settings: Settings
    tokens: dict[str, str] = field(default_factory=dict)
    errors: list[httpx.Response] = field(default_factory=list)
    """Every error response of the test, checked for tracebacks when it ends."""

    def call(self, method: str, path: str, who: str | None = None, **kw: Any) -> httpx.Response:
        headers = kw.pop("headers", {})
        if who is not None:
            headers["Authorization"] = f"Bearer {self.token(who)}"
        response: httpx.Response = self.client.request(method, path, headers=headers, **kw)
        if response.status_code >= 400:
            self.errors.append(response)
        return response

    def token(self, email: str) -> str:
        """An access token for ``email`` (one login per user and test)."""
        if email not in self.tokens:
            response = self.client.post("/auth/login", json={"email": email, "password": PASSWORD})
            assert response.status_code == 200, response.text
            self.tokens[email] = response.json()["access_token"]
        return self.tokens[email]

    def user(
        self, email: str, *, admin: bool = False, program: str | None = None, **membership: Any
    ) -> str:
        with transaction(self.factory) as s:
            user_id = create_user(s, email=email, password=PASSWORD, is_admin=admin)
            if program is not None:
                add_membership(s, user_id=user_id, program_id=program, **membership)
        return email

    def imported(self, program_id: str = "prog-a", seed: int = 1) -> str:
        admin = "root@example.org"
        with self.factory() as s:
            known = catalog.list_programs(s, actor=SETUP).total
        if not known:
            self.user(admin, admin=True)
        response = self.call("POST", "/programs/import", admin, json=program_file(program_id, seed))
        assert response.status_code == 201, response.text[:500]
        return admin


@pytest.fixture
def api(
    db_url: str,
    session_factory: sessionmaker[Session],
    fernet_keys: list[str],
    tmp_path: Path,
) -> Iterator[Api]:
    settings = api_settings(db_url, tmp_path, fernet_keys, login_attempts_per_window=3)
    with api_client(settings, session_factory.kw["bind"]) as client:
        api = Api(client, session_factory, settings)
        yield api
    for response in api.errors:
        assert response.headers["content-type"] == PROBLEM_JSON, response.text
        assert "Traceback" not in response.text and 'File "' not in response.text


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text[:500]
    assert response.headers["content-type"] == PROBLEM_JSON
    body: dict[str, Any] = response.json()
    assert {"type", "title", "status", "detail", "instance", "request_id", "errors"} <= set(body)
    assert body["status"] == status
    assert body["request_id"] == response.headers["x-request-id"]
    assert body["instance"] == response.request.url.path
    return body


def same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Equal records, datetimes compared as instants (a write echoes the caller's offset,
    a read gives UTC)."""

    def norm(v: Any) -> Any:
        if isinstance(v, str) and len(v) > 19 and v[10] == "T":
            return datetime.fromisoformat(v.replace("Z", "+00:00"))
        return v

    return {k: norm(v) for k, v in a.items()} == {k: norm(v) for k, v in b.items()}


def paths_of(body: dict[str, Any]) -> list[str]:
    return [e["path"] for e in body["errors"]]


# ------------------------------------------------------------------------ sign in


def test_login_refresh_logout_and_the_rate_limit(api: Api) -> None:
    email = api.user("ada@example.org", admin=True)
    login = api.call("POST", "/auth/login", json={"email": email, "password": PASSWORD})
    assert login.status_code == 200
    tokens = login.json()
    assert tokens["token_type"] == "bearer" and tokens["expires_in"] == 15 * 60
    bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
    assert api.call("GET", "/programs", headers=bearer).json()["total"] == 0

    renewed = api.call("POST", "/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert renewed.status_code == 200
    reused = api.call("POST", "/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert_problem(reused, 401)
    fresh = api.call("POST", "/auth/login", json={"email": email, "password": PASSWORD}).json()
    out = api.call("POST", "/auth/logout", json={"refresh_token": fresh["refresh_token"]})
    assert out.status_code == 204 and out.content == b""
    after = api.call("POST", "/auth/refresh", json={"refresh_token": fresh["refresh_token"]})
    assert_problem(after, 401)

    for header in ({}, {"Authorization": "Bearer not-a-jwt"}, {"Authorization": "Basic eDp5"}):
        refused = assert_problem(api.call("GET", "/programs", headers=header), 401)
        assert refused["type"] == "urn:rsched:problem:unauthenticated"
    invalid = api.call("GET", "/programs", headers={"Authorization": "Bearer not-a-jwt"})
    assert invalid.headers["www-authenticate"] == 'Bearer realm="rsched", error="invalid_token"'

    for _ in range(3):
        wrong = api.call("POST", "/auth/login", json={"email": email, "password": "Wrong-Pass-1"})
        assert_problem(wrong, 401)
        assert wrong.headers["www-authenticate"].startswith("Bearer")
    limited = api.call("POST", "/auth/login", json={"email": email, "password": PASSWORD})
    assert_problem(limited, 429)
    assert int(limited.headers["retry-after"]) > 0


# ------------------------------------------------------------------------- import


def test_import_a_generated_program_then_page_and_filter_its_people(api: Api) -> None:
    admin = api.imported()
    program = api.call("GET", "/programs/prog-a", admin).json()
    assert program["horizon_start"] == "2026-07-01" and program["role"] == "admin"
    assert api.call("GET", "/programs", admin).json()["items"][0]["id"] == "prog-a"

    seen: list[str] = []
    for offset in range(0, 20, 5):
        page = api.call(
            "GET", "/programs/prog-a/people", admin, params={"limit": 5, "offset": offset}
        )
        body = page.json()
        assert body["total"] == 16 and body["limit"] == 5 and body["offset"] == offset
        seen += [p["id"] for p in body["items"]]
    assert seen == sorted(seen) and len(set(seen)) == 16

    def ids(**params: Any) -> list[str]:
        response = api.call("GET", "/programs/prog-a/people", admin, params=params)
        assert response.status_code == 200, response.text
        return [p["id"] for p in response.json()["items"]]

    assert ids(kind="faculty") == ["f01", "f02", "f03", "f04"]
    assert ids(pgy=2) == ["r05", "r06", "r07", "r08"]
    assert ids(kind="resident", active="false") == []
    for params, path in (
        ({"limit": 0}, "query.limit"),
        ({"limit": 501}, "query.limit"),
        ({"offset": -1}, "query.offset"),
        ({"kind": "nurse"}, "query.kind"),
    ):
        bad = api.call("GET", "/programs/prog-a/people", admin, params=params)
        assert paths_of(assert_problem(bad, 422)) == [path]

    again = api.call("POST", "/programs/import", admin, json=program_file("prog-a"))
    assert paths_of(assert_problem(again, 422)) == ["program.id"]


def test_a_bad_import_lists_every_error_like_the_cli_and_writes_nothing(api: Api) -> None:
    admin = api.imported("prog-a")
    bad = program_file("prog-bad")
    bad["people"][3]["pgy"] = 9
    bad["slot_patterns"][0]["shift"] = "NOPE"
    bad["absences"][0]["person"] = "ghost"
    bad["requests"][1]["weight"] = 0
    with pytest.raises(InvalidInput) as cli:
        parse_program(json.loads(json.dumps(bad)))
    api.token(admin)
    before = table_checksums(api.factory.kw["bind"])

    body = assert_problem(api.call("POST", "/programs/import", admin, json=bad), 422)

    assert body["type"] == "urn:rsched:problem:invalid-input"
    assert body["errors"] == [{"path": e.path, "message": e.message} for e in cli.value.errors]
    assert {"people[3].pgy", "slot_patterns[0].shift", "absences[0].person"} <= set(paths_of(body))
    assert table_checksums(api.factory.kw["bind"]) == before
    assert_problem(api.call("GET", "/programs/prog-bad", admin), 404)
    not_a_file = api.call("POST", "/programs/import", admin, json=[1, 2])
    assert paths_of(assert_problem(not_a_file, 422)) == ["body"]
    coordinator = api.user("c@example.org", program="prog-a", role=Role.COORDINATOR)
    refused = api.call("POST", "/programs/import", coordinator, json=program_file("prog-c"))
    assert_problem(refused, 403)


# --------------------------------------------------------------------------- CRUD

RESOURCES = [
    pytest.param(
        "people",
        "id",
        {"id": "n01", "name": "New Resident", "kind": "resident", "pgy": 2, "tags": ["icu"]},
        {"name": "Renamed", "active": False},
        {"kind": "resident", "active": "false"},
        id="people",
    ),
    pytest.param(
        "shift-types",
        "code",
        {
            "code": "TEACH",
            "name": "Teaching",
            "start": "13:00",
            "duration_minutes": 90,
            "kind": "education",
        },
        {"name": "Teaching (long)", "duration_minutes": 120},
        {"kind": "education"},
        id="shift-types",
    ),
    pytest.param(
        "rotations",
        "id",
        {
            "id": "research",
            "name": "Research",
            "eligible_pgy": [2, 3],
            "max_residents": 2,
            "shift_types": ["CLINIC_AM"],
        },
        {"max_residents": 3},
        {},
        id="rotations",
    ),
    pytest.param(
        "slot-patterns",
        "id",
        {
            "id": "teach",
            "shift": "CLINIC_AM",
            "days": ["tue", "thu"],
            "min_staff": 0,
            "max_staff": 2,
        },
        {"max_staff": 3},
        {},
        id="slot-patterns",
    ),
    pytest.param(
        "absences",
        "id",
        {
            "id": "abs-new",
            "person_id": "r02",
            "start": "2026-07-20T00:00:00-04:00",
            "end": "2026-07-22T00:00:00-04:00",
            "leave_type": "conference",
        },
        {"blocking": False},
        {"person_id": "r02", "start": "2026-07-21", "end": "2026-07-21"},
        id="absences",
    ),
    pytest.param(
        "requests",
        "id",
        {"id": "req-new", "person_id": "r02", "day": "2026-07-15", "wants": True, "weight": 5},
        {"weight": 9},
        {"person_id": "r02"},
        id="requests",
    ),
]


@pytest.mark.parametrize(("resource", "key", "create", "patch", "filters"), RESOURCES)
def test_a_create_losing_a_race_to_the_same_id_is_a_conflict_that_writes_nothing(
    api: Api,
    resource: str,
    key: str,
    create: dict[str, Any],
    patch: dict[str, Any],
    filters: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    api.imported()
    who = api.user("coord@example.org", program="prog-a", role=Role.COORDINATOR)
    base = f"/programs/prog-a/{resource}"
    assert api.call("POST", base, who, json=create).status_code == 201
    total = api.call("GET", base, who, params={"limit": 500}).json()["total"]
    # the second request checked before the first one committed: its insert meets the key
    monkeypatch.setattr(scope, "fresh", lambda *_a, **_k: None)
    second = api.call("POST", base, who, json=create)
    body = assert_problem(second, 409)
    assert body["type"] == "urn:rsched:problem:conflict"
    assert "IntegrityError" not in second.text and "duplicate key" not in second.text
    assert api.call("GET", base, who, params={"limit": 500}).json()["total"] == total


@pytest.mark.parametrize(("resource", "key", "create", "patch", "filters"), RESOURCES)
def test_crud_with_pages_and_filters(
    api: Api,
    resource: str,
    key: str,
    create: dict[str, Any],
    patch: dict[str, Any],
    filters: dict[str, Any],
) -> None:
    api.imported()
    who = api.user("coord@example.org", program="prog-a", role=Role.COORDINATOR)
    base = f"/programs/prog-a/{resource}"
    total = api.call("GET", base, who, params={"limit": 500}).json()["total"]

    created = api.call("POST", base, who, json=create)
    assert created.status_code == 201, created.text
    item = f"{base}/{create[key]}"
    assert same(api.call("GET", item, who).json(), created.json())
    duplicate = api.call("POST", base, who, json=create)
    assert paths_of(assert_problem(duplicate, 422)) == [key]

    changed = api.call("PATCH", item, who, json=patch)
    assert changed.status_code == 200, changed.text
    assert {k: changed.json()[k] for k in patch} == patch
    assert same(api.call("GET", item, who).json(), changed.json())

    listing = api.call("GET", base, who, params={"limit": 500}).json()
    assert listing["total"] == total + 1
    filtered = api.call("GET", base, who, params={**filters, "limit": 500}).json()["items"]
    assert create[key] in [i[key] for i in filtered]
    one = api.call("GET", base, who, params={"limit": 1, "offset": total}).json()
    assert len(one["items"]) == 1 and one["total"] == total + 1

    unknown = api.call("PATCH", item, who, json={"no_such_field": 1})
    assert paths_of(assert_problem(unknown, 422)) == ["body.no_such_field"]
    gone = api.call("DELETE", item, who)
    assert gone.status_code == 204 and gone.content == b""
    assert_problem(api.call("GET", item, who), 404)
    assert_problem(api.call("DELETE", item, who), 404)
    assert api.call("GET", base, who, params={"limit": 500}).json()["total"] == total


def test_validation_errors_name_the_field(api: Api) -> None:
    api.imported()
    who = api.user("coord@example.org", program="prog-a", role=Role.COORDINATOR)
    people = "/programs/prog-a/people"
    body = assert_problem(
        api.call("POST", people, who, json={"id": "x", "name": "", "kind": "cook", "pgy": 12}), 422
    )
    assert sorted(paths_of(body)) == ["body.kind", "body.name", "body.pgy"]
    faculty_pgy = api.call(
        "POST", people, who, json={"id": "x", "name": "X", "kind": "faculty", "pgy": 2}
    )
    assert assert_problem(faculty_pgy, 422)["errors"]
    nul = api.call("POST", people, who, json={"id": "x", "name": "a\x00b", "kind": "faculty"})
    assert paths_of(assert_problem(nul, 422)) == ["body.name"]
    huge = api.call(
        "POST",
        "/programs/prog-a/rotations",
        who,
        json={
            "id": "r",
            "name": "R",
            "eligible_pgy": [1],
            "max_residents": 2**40,
            "shift_types": ["CLINIC_AM"],
        },
    )
    assert paths_of(assert_problem(huge, 422)) == ["body.max_residents"]
    broken = api.call(
        "POST", people, who, content=b"{not json", headers={"content-type": "application/json"}
    )
    assert assert_problem(broken, 422)["errors"][0]["path"].startswith("body")
    with transaction(api.factory) as s:
        S.save_draft(
            s,
            actor=SETUP,
            program_id="prog-a",
            assignments=some_assignments(s, "prog-a", ["r01"])[:1],
            report_summary={},
        )
    in_use = api.call("DELETE", f"{people}/r01", who)
    assert paths_of(assert_problem(in_use, 422)) == ["person_id"]
    request = api.call(
        "POST",
        "/programs/prog-a/requests",
        who,
        json={"person_id": "ghost", "day": "2030-01-01", "wants": True},
    )
    assert sorted(paths_of(assert_problem(request, 422))) == ["person_id"]


# ---------------------------------------------------------------------- schedules


def test_schedules_grid_lists_exports_and_feeds(api: Api) -> None:
    admin = api.imported()
    with transaction(api.factory) as s:
        chosen = some_assignments(s, "prog-a", ["r01", "r02", "r03"])
        active = S.save_draft(
            s, actor=SETUP, program_id="prog-a", assignments=chosen, report_summary={"hard": 0}
        )
        draft = S.save_draft(
            s, actor=SETUP, program_id="prog-a", assignments=chosen[:5], report_summary={}
        )
    resident = api.user("res@example.org", program="prog-a", role=Role.RESIDENT, person_id="r01")
    assert_problem(api.call("GET", "/programs/prog-a/schedules/active", resident), 404)
    _activate(api.factory, active)

    versions = api.call("GET", "/programs/prog-a/schedules", admin).json()
    assert [v["id"] for v in versions["items"]] == [draft, active]
    mine = api.call("GET", "/programs/prog-a/schedules", resident).json()
    assert [v["id"] for v in mine["items"]] == [active]
    assert api.call("GET", "/programs/prog-a/schedules/active", resident).json()["id"] == active
    assert_problem(api.call("GET", f"/programs/prog-a/schedules/{draft}", resident), 404)
    assert api.call("GET", f"/programs/prog-a/schedules/{draft}", admin).json()["status"] == "draft"

    grid = api.call("GET", f"/programs/prog-a/schedules/{active}/grid", resident).json()
    assert len(grid["days"]) == 28 and grid["days"][0] == "2026-07-01"
    assert all(len(row["cells"]) == 28 for row in grid["rows"])
    assert sum(len(c) for row in grid["rows"] for c in row["cells"]) == len(chosen)
    week = api.call(
        "GET",
        f"/programs/prog-a/schedules/{active}/grid",
        admin,
        params={"start": "2026-07-02", "end": "2026-07-08"},
    ).json()
    assert len(week["days"]) == 7
    backwards = api.call(
        "GET",
        f"/programs/prog-a/schedules/{active}/grid",
        admin,
        params={"start": "2026-07-08", "end": "2026-07-02"},
    )
    assert paths_of(assert_problem(backwards, 422)) == ["end"]

    listed: list[dict[str, Any]] = []
    for offset in range(0, len(chosen), 7):
        page = api.call(
            "GET",
            f"/programs/prog-a/schedules/{active}/assignments",
            admin,
            params={"limit": 7, "offset": offset},
        ).json()
        assert page["total"] == len(chosen)
        listed += page["items"]
    assert {(a["person_id"], a["slot_id"]) for a in listed} == {
        (a.person_id, a.slot_id) for a in chosen
    }
    r02 = api.call(
        "GET",
        f"/programs/prog-a/schedules/{active}/assignments",
        admin,
        params={"person_id": "r02"},
    ).json()
    assert r02["items"] and {a["person_id"] for a in r02["items"]} == {"r02"}

    exported = api.call("GET", f"/programs/prog-a/schedules/{active}/export.json", resident)
    assert exported.json()["format"].startswith("rsched.schedule/")
    csv = api.call("GET", f"/programs/prog-a/schedules/{active}/export.csv", admin)
    assert csv.headers["content-type"].startswith("text/csv")
    assert csv.text.splitlines()[0].startswith("person,") and len(csv.text.splitlines()) == 31

    made = api.call("POST", "/programs/prog-a/people/r01/feed-tokens", resident)
    assert made.status_code == 201
    token = made.json()["token"]
    assert made.json()["url"].endswith(f"/feeds/{token}.ics")
    with api.factory() as s:
        stored = s.scalars(select(FeedTokenRow.token_hash)).all()
    assert stored and token not in stored and all(len(h) == 64 for h in stored)
    feed = api.call("GET", f"/feeds/{token}.ics")
    assert feed.status_code == 200 and feed.headers["content-type"].startswith("text/calendar")
    assert feed.text.startswith("BEGIN:VCALENDAR") and "BEGIN:VEVENT" in feed.text
    assert_problem(api.call("POST", "/programs/prog-a/people/r02/feed-tokens", resident), 404)
    revoked = api.call("DELETE", "/programs/prog-a/people/r01/feed-tokens", admin)
    assert revoked.json() == {"revoked": 1}
    assert_problem(api.call("GET", f"/feeds/{token}.ics"), 404)
    assert_problem(api.call("GET", "/feeds/never-issued.ics"), 404)


def test_calendar_feed_is_deterministic_and_revalidates_with_its_etag(api: Api) -> None:
    api.imported()
    with transaction(api.factory) as s:
        chosen = some_assignments(s, "prog-a", ["r01", "r02"])
        first = S.save_draft(
            s, actor=SETUP, program_id="prog-a", assignments=chosen, report_summary={}
        )
        mine = [a for a in chosen if a.person_id == "r01"]
        second = S.save_draft(
            s, actor=SETUP, program_id="prog-a", assignments=mine[1:], report_summary={}
        )
        token = F.create_feed_token(s, actor=SETUP, program_id="prog-a", person_id="r01")
    _activate(api.factory, first)
    path = f"/feeds/{token}.ics"
    one, two = api.call("GET", path), api.call("GET", path)
    assert one.status_code == two.status_code == 200 and one.content == two.content
    tag = one.headers["etag"]
    assert tag.startswith('"') and tag == two.headers["etag"]
    assert "no-cache" in one.headers["cache-control"] and "private" in one.headers["cache-control"]
    assert one.text.count("BEGIN:VEVENT") == len(mine) > 1
    stamps = {line for line in one.text.split("\r\n") if line.startswith("DTSTAMP:")}
    assert len(stamps) == 1  # the version's creation time, not the time of the request

    for header in (tag, f"W/{tag}", f'"other", {tag}', "*"):
        unchanged = api.call("GET", path, headers={"If-None-Match": header})
        assert unchanged.status_code == 304 and unchanged.content == b""
        assert unchanged.headers["etag"] == tag
    assert api.call("GET", path, headers={"If-None-Match": '"other"'}).status_code == 200

    with transaction(api.factory) as s:  # the schedule changes: so do the text and its tag
        s.execute(
            update(ScheduleVersionRow)
            .where(ScheduleVersionRow.id == first)
            .values(status="superseded")
        )
    _activate(api.factory, second)
    changed = api.call("GET", path, headers={"If-None-Match": tag})
    assert changed.status_code == 200 and changed.headers["etag"] != tag
    assert changed.text.count("BEGIN:VEVENT") == len(mine) - 1


def _activate(factory: sessionmaker[Session], version_id: str) -> None:
    from sqlalchemy import update

    from rsched.db.models import ScheduleVersionRow

    with transaction(factory) as s:  # publishing is its own service
        s.execute(
            update(ScheduleVersionRow)
            .where(ScheduleVersionRow.id == version_id)
            .values(status="active")
        )


# ------------------------------------------------------------- problems and health


def test_problem_details_for_every_kind_of_error_and_never_a_traceback(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    admin = api.imported()
    assert_problem(api.call("GET", "/no/such/route"), 404)
    wrong_method = api.call("PUT", "/programs", admin)
    assert_problem(wrong_method, 405)
    assert "GET" in wrong_method.headers["allow"]
    resident = api.user("res@example.org", program="prog-a", role=Role.RESIDENT, person_id="r01")
    forbidden = assert_problem(
        api.call(
            "POST",
            "/programs/prog-a/rotations",
            resident,
            json={
                "id": "x",
                "name": "X",
                "eligible_pgy": [1],
                "max_residents": 1,
                "shift_types": [],
            },
        ),
        403,
    )
    assert forbidden["type"] == "urn:rsched:problem:forbidden"
    assert assert_problem(api.call("GET", "/programs/nope", admin), 404)["detail"]

    def explode(*_: Any, **__: Any) -> None:
        raise RuntimeError("connection string postgresql://secret@db")

    monkeypatch.setattr(catalog, "list_programs", explode)
    crash = api.call("GET", "/programs", admin, headers={"X-Request-ID": "trace-me-42"})
    body = assert_problem(crash, 500)
    assert body["request_id"] == "trace-me-42" and "trace-me-42" in body["detail"]
    assert "secret" not in crash.text and "RuntimeError" not in crash.text
    odd = api.call("GET", "/programs", admin, headers={"X-Request-ID": "bad id\twith spaces"})
    assert odd.headers["x-request-id"] != "bad id\twith spaces"

    assert len(api.errors) >= 6  # each checked for a traceback when the test ends


def test_health_reports_the_database_redis_and_the_version(
    api: Api, session_factory: sessionmaker[Session]
) -> None:
    ok = api.call("GET", "/health")
    assert ok.status_code == 200
    assert ok.json() == {
        "status": "ok",
        "version": ok.json()["version"],
        "database": "ok",
        "redis": "not configured",
    }
    settings = api.settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})
    with api_client(settings, session_factory.kw["bind"]) as client:
        degraded = client.get("/health")
    assert degraded.status_code == 503
    assert degraded.json()["redis"] == "unreachable" and degraded.json()["status"] == "degraded"


def test_logs_are_json_lines_with_the_request_id_and_no_feed_secret(api: Api) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("rsched.api")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        api.call("GET", "/health", headers={"X-Request-ID": "log-check-1"})
        api.call("GET", "/feeds/a-secret-feed-token.ics")
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    health = next(line for line in lines if line.get("path") == "/health")
    assert health["message"] == "request" and health["status"] == 200
    assert health["request_id"] == "log-check-1" and health["level"] == "info"
    assert any(line.get("path") == "/feeds/[token].ics" for line in lines)
    assert "a-secret-feed-token" not in stream.getvalue()



def test_import_is_a_bulk_change_that_backs_up_first(api: Api) -> None:
    """With no backup yet, importing a program makes one before writing (reason import)."""
    from rsched.db.models import BackupRow

    with api.factory() as s:
        assert s.scalars(select(BackupRow.id)).first() is None
    api.imported("prog-a")
    with api.factory() as s:
        reasons = list(s.scalars(select(BackupRow.reason)))
    assert reasons == ["import"]
