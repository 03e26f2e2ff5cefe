"""Publishing, swaps, repair and backups through the HTTP API, on SQLite and PostgreSQL.

The program is the generated small one moved ahead of today by whole weeks (so its
shifts can still be swapped) and solved once; each test starts from an empty database:
the diff's shape, token → publish → active, refused tokens (replayed, expired, someone
else's, another draft's) answering 403 and audited, the gate's 409 with its report, the
diff guard's override needing an approval, rollback, the SLO counters, backups for
admins only (create, list, verify, retention dry run, restore only into an empty
target), swap candidates that never break a hard rule while a forced swap is refused
with 409 naming it, a swap requested, approved, executed by its counterpart and undone,
a repair after a week's absence, and pending publishes recovered at start-up and by the
maintenance leader.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, select, text, update
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import Session, sessionmaker

from rsched.api.errors import PROBLEM_JSON
from rsched.config import Settings
from rsched.db.base import transaction
from rsched.db.models import (
    AuditRow,
    BackupRow,
    ProgramRow,
    PublishTokenRow,
    ScheduleVersionRow,
    StagingRow,
)
from rsched.domain import Assignment, InvalidInput, ProgramData
from rsched.metrics import REGISTRY
from rsched.programfile.generator import generate_program
from rsched.programfile.loader import parse_program
from rsched.rules.report import validate
from rsched.services import approvals, publishing
from rsched.services import schedules as S
from rsched.services import swaps as W
from rsched.services.access import Actor, Role
from rsched.services.auth import issue_access_token
from rsched.services.control import SqlControlStore
from rsched.services.leader import LeaderLease
from rsched.services.people import create_person
from rsched.services.programs import import_program
from rsched.services.schemas import PersonCreate
from rsched.services.users import add_membership, create_user
from rsched.solver.api import SolveParams, solve
from rsched.solver.swaps import SwapChange, check_swap
from rsched.worker.maintenance import maintenance_tick
from tests.integration.api_support import SETUP, api_client, api_settings

PROGRAM = "future"
SEED = 4
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
GUARDED = {"CONTINUOUS_24_4", "CALL_Q3"}


# ------------------------------------------------------------------- the program


def _weeks_ahead() -> timedelta:
    """Whole weeks (weekdays stay) moving the generated horizon to next week or later."""
    start = date.fromisoformat(generate_program("small", SEED)["horizon"]["start"])
    days = (date.today() + timedelta(days=7) - start).days
    return timedelta(weeks=max(0, -(-days // 7)))


def _moved(value: Any, delta: timedelta) -> Any:
    if isinstance(value, dict):
        return {k: _moved(v, delta) for k, v in value.items()}
    if isinstance(value, list):
        return [_moved(v, delta) for v in value]
    if isinstance(value, str) and _DAY.match(value):
        return (date.fromisoformat(value) + delta).isoformat()
    return value


def future_program(program_id: str = PROGRAM) -> dict[str, Any]:
    mapping = _moved(generate_program("small", SEED), _weeks_ahead())
    mapping["program"]["id"] = program_id
    return dict(mapping)


@lru_cache(maxsize=2)
def _solved(delta: timedelta) -> tuple[ProgramData, tuple[Assignment, ...]]:
    data = parse_program(future_program())
    result = solve(data, SolveParams(time_limit=20, deterministic=True))
    assert result.report is not None and result.report.ok and result.report.coverage == 1.0
    return data, result.assignments


def solved() -> tuple[ProgramData, list[Assignment]]:
    data, assignments = _solved(_weeks_ahead())
    return data, list(assignments)


def one_removed(data: ProgramData, pairs: list[Assignment]) -> list[Assignment]:
    """The schedule less one assignment whose removal keeps it legal and covered."""
    for i in range(len(pairs)):
        candidate = pairs[:i] + pairs[i + 1 :]
        report = validate(data, candidate)
        if report.ok and report.coverage == 1.0:
            return candidate
    raise AssertionError("no single removal keeps the schedule legal")


def counter(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# ----------------------------------------------------------------------- the API


class Answer(Protocol):
    """What the tests read of a response (the test client's httpx or httpx2 class)."""

    @property
    def status_code(self) -> int: ...
    @property
    def headers(self) -> Mapping[str, str]: ...
    @property
    def text(self) -> str: ...
    def json(self, **kwargs: Any) -> Any: ...


@dataclass
class Env:
    client: TestClient
    factory: sessionmaker[Session]
    settings: Settings
    url: str
    tmp: Path
    data: ProgramData
    solved: list[Assignment]
    tokens: dict[str, str] = field(default_factory=dict)
    users: dict[str, str] = field(default_factory=dict)
    errors: list[Answer] = field(default_factory=list)

    def user(
        self,
        name: str,
        *,
        role: Role | None = None,
        person: str | None = None,
        program: str = PROGRAM,
        is_admin: bool = False,
    ) -> str:
        with transaction(self.factory) as s:
            user_id = create_user(
                s,
                email=f"{name}@example.org",
                password=secrets.token_urlsafe(16) + "aA1",
                is_admin=is_admin,
            )
            if role is not None:
                add_membership(s, user_id=user_id, program_id=program, role=role, person_id=person)
        self.users[name] = user_id
        self.tokens[name] = issue_access_token(self.settings, user_id)
        return user_id

    def call(self, method: str, path: str, who: str | None = None, **kw: Any) -> Answer:
        headers = {"Authorization": f"Bearer {self.tokens[who]}"} if who else {}
        response: Answer = self.client.request(method, path, headers=headers, **kw)
        if response.status_code >= 400:
            self.errors.append(response)
        return response

    def ok(self, method: str, path: str, who: str, status: int = 200, **kw: Any) -> Any:
        response = self.call(method, path, who, **kw)
        assert response.status_code == status, response.text[:800]
        return response.json()

    def draft(self, assignments: list[Assignment]) -> str:
        with transaction(self.factory) as s:
            return S.save_draft(
                s, actor=SETUP, program_id=PROGRAM, assignments=assignments, report_summary={}
            )

    def token(self, version: str, who: str = "coord") -> str:
        body = self.ok(
            "POST", f"/programs/{PROGRAM}/schedules/{version}/publish-token", who, status=201
        )
        return str(body["token"])

    def publish(self, version: str, who: str = "coord", **extra: Any) -> Answer:
        token = self.token(version, who)
        return self.call(
            "POST",
            f"/programs/{PROGRAM}/schedules/{version}/publish",
            who,
            json={"token": token, **extra},
        )

    def active(self) -> str:
        return str(self.ok("GET", f"/programs/{PROGRAM}/schedules/active", "coord")["id"])

    def status_of(self, version: str) -> str:
        with self.factory() as s:
            row = s.get(ScheduleVersionRow, version)
            assert row is not None
            return row.status

    def audit(self, action: str, outcome: str | None = None) -> list[AuditRow]:
        with self.factory() as s:
            stmt = select(AuditRow).where(AuditRow.action == action).order_by(AuditRow.id)
            if outcome is not None:
                stmt = stmt.where(AuditRow.outcome == outcome)
            return list(s.scalars(stmt))


@pytest.fixture
def env(
    db_url: str, session_factory: sessionmaker[Session], fernet_keys: list[str], tmp_path: Path
) -> Iterator[Env]:
    data, assignments = solved()
    with transaction(session_factory) as s:
        import_program(s, actor=SETUP, mapping=future_program())
    settings = api_settings(db_url, tmp_path, fernet_keys)
    engine: Engine = session_factory.kw["bind"]
    with api_client(settings, engine) as client:
        env = Env(client, session_factory, settings, db_url, tmp_path, data, assignments)
        env.user("admin", is_admin=True)
        env.user("coord", role=Role.COORDINATOR)
        env.user("coord2", role=Role.COORDINATOR)
        yield env
    for response in env.errors:
        assert response.headers["content-type"] == PROBLEM_JSON, response.text
        assert "Traceback" not in response.text and 'File "' not in response.text


def problem_of(response: Answer, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text[:800]
    assert response.headers["content-type"] == PROBLEM_JSON
    body: dict[str, Any] = response.json()
    assert body["status"] == status and body["request_id"] == response.headers["x-request-id"]
    return body


# ------------------------------------------------------------------- publishing


def test_diff_token_publish_and_every_refused_token_is_audited(env: Env) -> None:
    v1 = env.draft(env.solved)
    diff = env.ok("GET", f"/programs/{PROGRAM}/schedules/{v1}/diff", "coord")
    assert diff["version_id"] == v1 and diff["against"] == [] and diff["verdict"] == "ok"
    assert (diff["added"], diff["removed"], diff["churn"]) == (len(env.solved), 0, 0.0)
    assert {"person", "added", "removed", "before", "fraction", "verdict"} == set(diff["people"][0])
    assert sum(len(p["added"]) for p in diff["people"]) == len(env.solved)
    problem_of(env.call("GET", f"/programs/{PROGRAM}/schedules/{v1}/diff"), 401)

    made = env.ok("POST", f"/programs/{PROGRAM}/schedules/{v1}/publish-token", "coord", 201)
    token = made["token"]
    expires = datetime.fromisoformat(made["expires_at"].replace("Z", "+00:00"))
    assert timedelta(minutes=5) < expires - datetime.now(UTC) <= timedelta(minutes=10)
    with env.factory() as s:  # stored hashed, never as given
        stored = s.scalars(select(PublishTokenRow.token_hash)).all()
    assert stored == [hashlib.sha256(token.encode()).hexdigest()]

    before = counter("scheduler_valid_publish_total")
    foreign = env.call(  # bound to its user: another coordinator of the program may not use it
        "POST", f"/programs/{PROGRAM}/schedules/{v1}/publish", "coord2", json={"token": token}
    )
    problem_of(foreign, 403)
    published = env.ok(
        "POST", f"/programs/{PROGRAM}/schedules/{v1}/publish", "coord", json={"token": token}
    )
    assert published["version_id"] == v1 and published["superseded"] == []
    assert published["gate"]["ok"] is True and published["diff"]["verdict"] == "ok"
    assert env.active() == v1
    assert counter("scheduler_valid_publish_total") == before + 1

    replay = env.call(
        "POST", f"/programs/{PROGRAM}/schedules/{v1}/publish", "coord", json={"token": token}
    )
    assert "publish token refused" in problem_of(replay, 403)["detail"]

    v2, v3 = env.draft(env.solved), env.draft(env.solved)
    other_draft = env.token(v3)  # bound to v3: refused for v2
    problem_of(
        env.call(
            "POST",
            f"/programs/{PROGRAM}/schedules/{v2}/publish",
            "coord",
            json={"token": other_draft},
        ),
        403,
    )
    expired = env.token(v2)
    with transaction(env.factory) as s:
        s.execute(
            update(PublishTokenRow).values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    problem_of(
        env.call(
            "POST", f"/programs/{PROGRAM}/schedules/{v2}/publish", "coord", json={"token": expired}
        ),
        403,
    )
    refused = env.audit("publish", "refused")
    assert len(refused) == 4 and all(r.detail == {"why": "token"} for r in refused)
    assert {r.actor for r in refused} == {env.users["coord"], env.users["coord2"]}
    assert env.active() == v1 and counter("scheduler_valid_publish_total") == before + 1

    # a token of an active version is refused when asked for (422), not made
    problem_of(env.call("POST", f"/programs/{PROGRAM}/schedules/{v1}/publish-token", "coord"), 422)


def test_gate_and_diff_guard_refuse_with_the_report_and_rollback_restores(env: Env) -> None:
    v1 = env.draft(env.solved)
    assert env.publish(v1).status_code == 200
    half = env.draft(env.solved[: len(env.solved) // 2])
    body = problem_of(env.publish(half), 409)
    assert body["type"] == "urn:rsched:problem:refused" and "validation gate" in body["detail"]
    report = body["report"]
    assert report["gate"]["ok"] is False and any(
        "coverage" in p for p in report["gate"]["problems"]
    )
    assert report["diff"]["version_id"] == half and report["diff"]["removed"] > 0
    assert env.active() == v1 and env.status_of(half) == "draft"

    v2 = env.draft(one_removed(env.data, env.solved))
    published = env.ok(
        "POST",
        f"/programs/{PROGRAM}/schedules/{v2}/publish",
        "coord",
        json={"token": env.token(v2)},
    )
    assert published["superseded"] == [v1] and env.active() == v2

    problem_of(
        env.call("POST", f"/programs/{PROGRAM}/schedules/rollback", "coord", json={"reason": ""}),
        422,
    )
    manual = counter("scheduler_rollback_total", reason="manual")
    rolled = env.ok(
        "POST",
        f"/programs/{PROGRAM}/schedules/rollback",
        "coord",
        json={"reason": "wrong week published"},
    )
    assert rolled == {"program_id": PROGRAM, "restored_version_id": v1}
    assert env.active() == v1 and env.status_of(v2) == "draft"
    assert counter("scheduler_rollback_total", reason="manual") == manual + 1
    (audited,) = env.audit("rollback")
    assert audited.detail["reason"] == "wrong week published" and audited.target == v2
    assert audited.actor == env.users["coord"]


def test_the_diff_guard_refuses_until_an_override_is_approved(env: Env) -> None:
    v1 = env.draft(env.solved)
    assert env.publish(v1).status_code == 200
    draft = env.draft(one_removed(env.data, env.solved))  # legal: the gate passes it
    with transaction(env.factory) as s:  # a guard that refuses any change at all
        s.execute(
            update(ProgramRow)
            .where(ProgramRow.id == PROGRAM)
            .values(settings={"publish": {"churn_limit": 0.0, "person_max_fraction": 0.0}})
        )
    diff = env.ok("GET", f"/programs/{PROGRAM}/schedules/{draft}/diff", "coord")
    assert diff["verdict"] == "refuse" and diff["removed"] == 1 and diff["added"] == 0
    refused = problem_of(env.publish(draft), 409)
    assert "diff guard" in refused["detail"] and refused["report"]["gate"]["ok"] is True
    assert refused["report"]["diff"]["reasons"] == diff["reasons"]
    no_approval = env.publish(draft, override_reason="a shift nobody needs")
    assert "no unused approval" in problem_of(no_approval, 404)["detail"]
    assert env.active() == v1
    coord = Actor(user_id=env.users["coord"], is_admin=True)
    with transaction(env.factory) as s:
        ticket = approvals.request_approval(
            s,
            actor=coord,
            program_id=PROGRAM,
            action="publish_override",
            target=draft,
            reason="a shift nobody needs",
        )
        approvals.decide(s, actor=coord, token=ticket.token, approve=True, program_id=PROGRAM)
    published = env.publish(draft, override_reason="a shift nobody needs")
    assert published.status_code == 200, published.text
    assert env.active() == draft
    (override,) = env.audit("publish.override")
    assert override.detail["reason"] == "a shift nobody needs"


# ---------------------------------------------------------------------- backups


def test_backups_are_for_admins_and_restore_only_into_an_empty_target(
    env: Env, request: pytest.FixtureRequest
) -> None:
    env.user("resident", role=Role.RESIDENT, person="r01")
    for who in ("coord", "resident"):
        for method, path, body in (
            ("GET", "/backups", None),
            ("POST", "/backups", {"reason": "mine"}),
            ("POST", "/backups/retention", {"dry_run": True}),
        ):
            problem_of(env.call(method, path, who, json=body), 403)
    problem_of(env.call("GET", "/backups"), 401)

    first = env.ok("POST", "/backups", "admin", 201, json={"reason": "before-term"})
    assert "before-term" in first["name"] and re.fullmatch(r"[0-9a-f]{64}", first["sha256"])
    assert env.ok("GET", f"/backups/{first['id']}", "admin")["sha256"] == first["sha256"]
    problem_of(env.call("GET", f"/backups/{first['id']}", "coord"), 403)
    problem_of(env.call("GET", "/backups/nope", "admin"), 404)
    assert env.ok("POST", f"/backups/{first['id']}/verify", "admin") == {
        "id": first["id"],
        "ok": True,
    }
    with env.factory() as s:
        file = Path(s.scalars(select(BackupRow.path).where(BackupRow.id == first["id"])).one())
    raw = bytearray(file.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    file.write_bytes(bytes(raw))
    assert env.ok("POST", f"/backups/{first['id']}/verify", "admin")["ok"] is False
    assert env.audit("backup.verify", "failed")

    with transaction(env.factory) as s:  # the corrupt one is old now
        s.execute(
            update(BackupRow)
            .where(BackupRow.id == first["id"])
            .values(created_at=datetime.now(UTC) - timedelta(days=40))
        )
    second = env.ok("POST", "/backups", "admin", 201, json={})
    third = env.ok("POST", "/backups", "admin", 201, json={"reason": "third"})
    plan = env.ok("POST", "/backups/retention", "admin", json={"dry_run": True})
    assert plan["dry_run"] is True
    assert [b["id"] for b in plan["delete"]] == [first["id"]]
    assert {b["id"] for b in plan["keep"]} == {second["id"], third["id"]}
    listed = env.ok("GET", "/backups", "admin")
    assert listed["total"] == 3 and file.exists()  # a dry run deletes nothing

    refused = env.call(
        "POST", f"/backups/{third['id']}/restore", "admin", json={"target_url": env.url}
    )
    assert problem_of(refused, 409)["type"] == "urn:rsched:problem:restore-refused"
    assert env.audit("backup.restore", "refused")

    if make_url(env.url).get_backend_name() == "sqlite":
        target = f"sqlite:///{env.tmp / 'restored.db'}"
        _restore_and_count(env, third["id"], target)
        return
    admin_engine: Engine = request.getfixturevalue("_pg_admin")
    name = f"rsched_restore_{secrets.token_hex(4)}"
    with admin_engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        target = make_url(env.url).set(database=name).render_as_string(hide_password=False)
        _restore_and_count(env, third["id"], target)
    finally:
        with admin_engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _restore_and_count(env: Env, backup_id: str, target: str) -> None:
    restored = env.ok("POST", f"/backups/{backup_id}/restore", "admin", json={"target_url": target})
    assert restored["id"] == backup_id
    engine = create_engine(target)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT id FROM programs")).scalars().all() == [PROGRAM]
    finally:
        engine.dispose()
    again = env.call("POST", f"/backups/{backup_id}/restore", "admin", json={"target_url": target})
    problem_of(again, 409)  # not empty any more


# ------------------------------------------------------------------------ swaps


def _pairs(assignments: list[Assignment]) -> set[tuple[str, str]]:
    return {(a.person_id, a.slot_id) for a in assignments}


def test_swap_candidates_never_break_a_hard_rule_and_a_forced_swap_is_refused(env: Env) -> None:
    v1 = env.draft(env.solved)
    assert env.publish(v1).status_code == 200
    data, pairs = env.data, _pairs(env.solved)
    calls = sorted(
        (s.start, p, s.id)
        for p, s in ((p, data.slot_by_id[sid]) for p, sid in pairs)
        if s.shift == "ICU_CALL"
    )
    _, person, slot = calls[len(calls) // 2]
    found = env.ok(
        "GET",
        f"/programs/{PROGRAM}/swaps/candidates",
        "coord",
        params={"assignment": slot, "person_id": person, "limit": 500},
    )
    assert found["version_id"] == v1 and found["total"] == len(found["items"]) > 0
    costs = [c["fairness_cost"] for c in found["items"]]
    assert costs == sorted(costs)  # ranked by fairness impact
    for c in found["items"][:25]:
        change = SwapChange(
            person_id=person, slot_id=slot, taker_id=c["taker"], taker_slot_id=c["taker_slot"]
        )
        after = (pairs - set(change.removed)) | set(change.added)
        report = validate(data, [Assignment(person_id=p, slot_id=s) for p, s in after])
        assert report.violations == (), (c, [v.rule for v in report.violations])

    forced = None
    for _, giver, call in calls:
        for taker in sorted(p.id for p in data.people if p.id.startswith("r")):
            if taker == giver or (taker, call) in pairs:
                continue
            change = SwapChange(person_id=giver, slot_id=call, taker_id=taker)
            broken = {v.rule for v in check_swap(data, env.solved, change)}
            if broken & GUARDED:
                forced = (change, broken & GUARDED)
                break
        if forced:
            break
    assert forced is not None, "no swap of a call breaks 24+4 or q3 in this schedule"
    change, rules = forced
    offered = env.ok(
        "GET",
        f"/programs/{PROGRAM}/swaps/candidates",
        "coord",
        params={"assignment": change.slot_id, "person_id": change.person_id, "limit": 500},
    )
    assert change.taker_id not in {c["taker"] for c in offered["items"] if c["kind"] == "give"}
    refused = env.call(
        "POST",
        f"/programs/{PROGRAM}/swaps",
        "coord",
        json={
            "person_id": change.person_id,
            "slot_id": change.slot_id,
            "taker_id": change.taker_id,
        },
    )
    body = problem_of(refused, 409)
    assert rules <= set(body["report"]["rules"]) and any(r in body["detail"] for r in rules)
    assert env.audit("swap.request", "refused")  # kept although the request failed
    assert env.ok("GET", f"/programs/{PROGRAM}/swaps", "coord")["total"] == 0

    holder = next(p for p in sorted(data.person_by_id) if (p, slot) not in pairs)
    missing = env.call(
        "GET",
        f"/programs/{PROGRAM}/swaps/candidates",
        "coord",
        params={"assignment": slot, "person_id": holder},
    )
    assert "assignment" in problem_of(missing, 404)["detail"]
    with env.factory() as s, pytest.raises(InvalidInput) as err:  # a shift that started
        W.candidates(
            s,
            actor=SETUP,
            program_id=PROGRAM,
            person_id=person,
            slot_id=slot,
            now=data.slot_by_id[slot].start,
        )
    assert [e.path for e in err.value.errors] == ["assignment"]


def test_a_swap_is_requested_approved_executed_by_its_counterpart_and_undone(env: Env) -> None:
    with transaction(env.factory) as s:
        s.execute(
            update(ProgramRow)
            .where(ProgramRow.id == PROGRAM)
            .values(settings={"swaps": {"require_approval": True}})
        )
    v1 = env.draft(env.solved)
    assert env.publish(v1).status_code == 200
    data, pairs = env.data, _pairs(env.solved)
    giver = next(p for p, _ in sorted(pairs) if p.startswith("r"))
    env.user("giver", role=Role.RESIDENT, person=giver)
    mine = sorted((data.slot_by_id[s].start, s) for p, s in pairs if p == giver)
    offer = None
    for _, slot in mine:
        found = env.ok(  # the caller's own assignment: no person_id needed
            "GET", f"/programs/{PROGRAM}/swaps/candidates", "giver", params={"assignment": slot}
        )
        gives = [c for c in found["items"] if c["kind"] == "give"]
        if gives:
            offer = (slot, gives[0]["taker"])
            break
    assert offer is not None
    slot, taker = offer
    env.user("taker", role=Role.RESIDENT, person=taker)
    other = next(p for p, s in sorted(pairs) if p not in (giver, taker) and p.startswith("r"))
    other_slot = next(s for p, s in sorted(pairs) if p == other)

    problem_of(  # a member asks for their own shifts only
        env.call(
            "POST",
            f"/programs/{PROGRAM}/swaps",
            "giver",
            json={"person_id": other, "slot_id": other_slot, "taker_id": giver},
        ),
        403,
    )
    asked = env.ok(
        "POST",
        f"/programs/{PROGRAM}/swaps",
        "giver",
        201,
        json={"person_id": giver, "slot_id": slot, "taker_id": taker, "note": "family day"},
    )
    assert (asked["status"], asked["needs_approval"], asked["kind"]) == ("pending", True, "give")
    swap = asked["id"]
    assert env.ok("GET", f"/programs/{PROGRAM}/swaps/{swap}", "taker")["note"] == "family day"
    assert [s["id"] for s in env.ok("GET", f"/programs/{PROGRAM}/swaps", "giver")["items"]] == [
        swap
    ]

    execute = f"/programs/{PROGRAM}/swaps/{swap}/execute"
    problem_of(env.call("POST", execute, "giver"), 403)  # the counterpart executes
    waiting = problem_of(env.call("POST", execute, "taker"), 409)
    assert "approval" in waiting["detail"]
    problem_of(  # residents do not decide
        env.call(
            "POST", f"/programs/{PROGRAM}/swaps/{swap}/decision", "taker", json={"approve": 1}
        ),
        403,
    )
    approved = env.ok(
        "POST", f"/programs/{PROGRAM}/swaps/{swap}/decision", "coord", json={"approve": True}
    )
    assert approved["status"] == "approved" and approved["decided_by"] == env.users["coord"]

    published = counter("scheduler_valid_publish_total")
    done = env.ok("POST", execute, "taker")
    new = done["version_id"]
    assert done["swap"]["status"] == "executed" and done["superseded"] == [v1]
    assert done["gate"]["ok"] is True and done["diff"]["added"] == done["diff"]["removed"] == 1
    assert env.active() == new and counter("scheduler_valid_publish_total") == published + 1
    given = env.ok(
        "GET",
        f"/programs/{PROGRAM}/schedules/{new}/assignments",
        "coord",
        params={"person_id": taker, "limit": 500},
    )
    assert slot in {a["slot_id"] for a in given["items"]}
    kept = env.ok(
        "GET",
        f"/programs/{PROGRAM}/schedules/{new}/assignments",
        "coord",
        params={"person_id": giver, "limit": 500},
    )
    assert slot not in {a["slot_id"] for a in kept["items"]}
    (executed,) = env.audit("swap.execute", "ok")
    assert executed.actor == env.users["taker"] and executed.target == swap
    assert env.audit("publish")[-1].actor == env.users["taker"]
    problem_of(env.call("POST", execute, "taker"), 409)  # once

    undo = f"/programs/{PROGRAM}/swaps/{swap}/undo"
    problem_of(env.call("POST", undo, "taker", json={"reason": "changed my mind"}), 403)
    undone = env.ok("POST", undo, "coord", json={"reason": "the giver is back"})
    assert undone["status"] == "undone" and env.active() == v1
    assert env.status_of(new) == "draft"
    assert env.audit("swap.undo")[0].detail["reason"] == "the giver is back"
    problem_of(env.call("POST", undo, "coord", json={"reason": "again"}), 409)

    # another program's person is unknown here; another program's coordinator sees nothing
    with transaction(env.factory) as s:
        import_program(s, actor=SETUP, mapping=future_program("elsewhere"))
        create_person(
            s,
            actor=SETUP,
            program_id="elsewhere",
            data=PersonCreate.model_validate(
                {"id": "b-only", "name": "B", "kind": "resident", "pgy": 2}
            ),
        )
    env.user("coord_b", role=Role.COORDINATOR, program="elsewhere")
    across = env.call(
        "POST",
        f"/programs/{PROGRAM}/swaps",
        "giver",
        json={"person_id": giver, "slot_id": slot, "taker_id": "b-only"},
    )
    assert [e["path"] for e in problem_of(across, 422)["errors"]] == ["taker_id"]
    problem_of(env.call("GET", f"/programs/{PROGRAM}/swaps/{swap}", "coord_b"), 404)
    problem_of(env.call("POST", execute, "coord_b"), 404)


# ----------------------------------------------------------------------- repair


def test_repair_after_a_week_of_absence_gives_a_draft_without_violations(env: Env) -> None:
    v1 = env.draft(env.solved)
    assert env.publish(v1).status_code == 200
    data, pairs = env.data, _pairs(env.solved)
    first = min(s.start for s in data.slots)
    week = (first + timedelta(days=7)).astimezone(data.tz).replace(hour=0, minute=0)
    busy = {p for p, s in pairs if week <= data.slot_by_id[s].start < week + timedelta(days=7)}
    resident = sorted(p for p in busy if p.startswith("r"))[0]
    absence = {
        "person_id": resident,
        "start": week.isoformat(),
        "end": (week + timedelta(days=7)).isoformat(),
        "leave_type": "sick",
    }
    env.ok("POST", f"/programs/{PROGRAM}/absences", "coord", 201, json=absence)

    repaired = env.ok("POST", f"/programs/{PROGRAM}/repair", "coord", 201, json={})
    assert repaired["from_version_id"] == v1 and repaired["status"] == "repaired"
    assert repaired["violations"] == 0 and repaired["coverage"] == 1.0
    assert repaired["breaches"] > 0 and repaired["changed"] > 0
    assert 0 < repaired["churn"] < 0.2 and repaired["wall_seconds"] < 5
    draft = repaired["version_id"]
    assert env.ok("GET", f"/programs/{PROGRAM}/schedules/{draft}", "coord")["status"] == "draft"
    assert env.active() == v1
    theirs = env.ok(
        "GET",
        f"/programs/{PROGRAM}/schedules/{draft}/assignments",
        "coord",
        params={"person_id": resident, "limit": 500},
    )
    assert all(
        not week <= data.slot_by_id[a["slot_id"]].start < week + timedelta(days=7)
        for a in theirs["items"]
    )
    (audited,) = env.audit("repair")
    assert audited.target == draft and audited.detail["from"] == v1


# ----------------------------------------------------------------------- recovery


def test_pending_publishes_are_recovered_at_start_up_and_by_the_leader(env: Env) -> None:
    coord = Actor(user_id=env.users["coord"], is_admin=True)
    v1 = env.draft(env.solved)
    staged = publishing.stage(
        env.factory, actor=coord, program_id=PROGRAM, version_id=v1, detail={}
    )
    published = counter("scheduler_valid_publish_total")
    with api_client(env.settings, env.factory.kw["bind"]):  # a second process starting
        pass
    assert env.status_of(v1) == "active"
    with env.factory() as s:
        assert s.get(StagingRow, staged).state == "committed"  # type: ignore[union-attr]
    assert counter("scheduler_valid_publish_total") == published + 1

    v2 = env.draft(env.solved)
    stale = publishing.stage(env.factory, actor=coord, program_id=PROGRAM, version_id=v2, detail={})
    with transaction(env.factory) as s:
        s.execute(
            update(StagingRow)
            .where(StagingRow.id == stale)
            .values(created_at=datetime.now(UTC) - timedelta(minutes=5))
        )
    lease = LeaderLease(env.factory, holder="test-leader", ttl=30)
    assert lease.try_acquire() is not None
    report = maintenance_tick(env.factory, SqlControlStore(env.factory), lease)
    assert report.recovered_publishes == [(stale, "committed")] and not report.failed
    assert env.status_of(v2) == "active" and env.status_of(v1) == "superseded"

    v3 = env.draft(env.solved)
    fresh = publishing.stage(env.factory, actor=coord, program_id=PROGRAM, version_id=v3, detail={})
    report = maintenance_tick(env.factory, SqlControlStore(env.factory), lease)
    assert report.recovered_publishes == []  # young: its publish may still be running
    with env.factory() as s:
        assert s.get(StagingRow, fresh).state == "pending"  # type: ignore[union-attr]
    assert publishing.recover(env.factory) == [(fresh, "committed")]
