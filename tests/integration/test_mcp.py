"""The MCP server with a real client session, on SQLite and PostgreSQL.

- Scoped API tokens: only the hash is stored; scopes narrow the user's roles; revoked,
  expired tokens and inactive users are refused alike; bad requests name the field.
- Every tool called with good and bad arguments, through the in-process client session
  and over streamable HTTP (the API app served by uvicorn on loopback): bad arguments
  come back as tool error results naming each field, and change nothing; a resident's
  token gets ``forbidden`` from coordinator tools; another program's run cannot be
  aborted (``not-found``, the run untouched).
- The agent's whole flow on a program whose schedule lies ahead: generate_schedule with
  a worker solving it (progress notifications while it runs, the progress resource
  after), validate, publish with a publish token, swap candidates and a swap, and two
  rollbacks (the swap, then the first publish).
- The HTTP endpoint refuses requests without a valid API token (an access JWT is not
  one): 401 problem details before MCP sees them.
- ``rsched token create`` and ``rsched mcp`` over stdio as a subprocess.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import socket
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import anyio
import httpx
import httpx2
import pytest
import uvicorn
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import CallToolResult
from sqlalchemy import func, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from rsched.api.app import create_app
from rsched.cli.main import main as cli_main
from rsched.config import Settings, get_settings
from rsched.crypto.fields import KEYRING, install_keys, new_key
from rsched.db.base import make_engine, make_sessionmaker, transaction
from rsched.db.models import (
    ApiTokenRow,
    AuditRow,
    BackupRow,
    RunRow,
    ScheduleVersionRow,
    UserRow,
)
from rsched.domain import InvalidInput, NotFound, ScheduleStatus
from rsched.mcp.server import McpDeps, token_actor
from rsched.mcp.transport import make_server
from rsched.services import ops, publishing
from rsched.services import programs as P
from rsched.services import runs as q
from rsched.services import schedules as S
from rsched.services.access import Actor, Role, Unauthenticated
from rsched.services.api_tokens import (
    actor_from_api_token,
    create_api_token,
    revoke_api_token,
    token_id,
)
from rsched.services.control import SqlControlStore
from rsched.services.users import add_membership, set_active
from rsched.worker.loop import work
from rsched.worker.runner import WorkerConfig
from tests.integration.api_support import (
    SETUP,
    World,
    api_settings,
    build_world,
    program_file,
    table_checksums,
)
from tests.integration.conftest import empty_all_tables

T = TypeVar("T")
PROGRAM_C = "prog-c"
"""A third program, its days ahead of today, for the publish and swap flow."""
TOOLS = {
    "generate_schedule",
    "validate_schedule",
    "detect_conflicts",
    "analyze_swap_candidates",
    "execute_swap",
    "health_check",
    "abort_solver",
    "get_solver_progress",
    "list_active_solvers",
    "get_constraint_metrics",
    "sitrep",
    "create_backup",
    "list_backups",
    "publish_draft",
    "rollback",
}
CALL_SECONDS = 60.0


# ------------------------------------------------------------------------ the world

_DATE = re.compile(r"^(\d{4}-\d{2}-\d{2})")


def _shifted(node: Any, days: int) -> Any:
    """Every ISO date in a program file moved by ``days``."""
    if isinstance(node, dict):
        return {k: _shifted(v, days) for k, v in node.items()}
    if isinstance(node, list):
        return [_shifted(v, days) for v in node]
    if isinstance(node, str) and (m := _DATE.match(node)):
        moved = date.fromisoformat(m.group(1)) + timedelta(days=days)
        return moved.isoformat() + node[10:]
    return node


def future_program(program_id: str, seed: int) -> dict[str, Any]:
    """A synthetic program moved by whole 52-week years (same weekdays) so that its
    horizon starts at least a week from today: its shifts can still be swapped."""
    mapping = program_file(program_id, seed)
    start = date.fromisoformat(mapping["horizon"]["start"])
    years = 0
    while start + timedelta(days=364 * years) <= date.today() + timedelta(days=7):
        years += 1
    return dict(_shifted(mapping, 364 * years))


@dataclass
class Env:
    name: str
    world: World
    settings: Settings
    engine: Engine
    factory: sessionmaker[Session]
    store: SqlControlStore
    tokens: dict[str, str] = field(default_factory=dict)
    base_url: str | None = None

    def program(self, key: str) -> str:
        return PROGRAM_C if key == "C" else self.world.programs[key].id

    def run_count(self) -> int:
        with self.factory() as s:
            return int(s.scalar(select(func.count()).select_from(RunRow)) or 0)


def _token(s: Session, user_id: str, programs: list[str] | None = None) -> str:
    return create_api_token(s, actor=SETUP, user_id=user_id, programs=programs, expires_days=30)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def env(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    url: str = request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url")
    engine = make_engine(url)
    saved = (KEYRING.multi, KEYRING.newest)
    try:
        empty_all_tables(engine)
        keys = [new_key()]
        install_keys(keys)
        settings = api_settings(url, tmp_path_factory.mktemp(f"mcp-{request.param}"), keys)
        factory = make_sessionmaker(engine)
        world = build_world(settings, factory)
        with transaction(factory) as s:
            P.import_program(s, actor=SETUP, mapping=future_program(PROGRAM_C, 3))
        users = {n: p.user_id for n, p in world.principals.items() if p.user_id is not None}
        with transaction(factory) as s:
            add_membership(
                s, user_id=users["coordinator_a"], program_id=PROGRAM_C, role=Role.COORDINATOR
            )
            tokens = {name: _token(s, uid) for name, uid in users.items()}
            tokens["admin_scoped_b"] = _token(s, users["admin"], [world.programs["B"].id])
        yield Env(
            name=request.param,
            world=world,
            settings=settings,
            engine=engine,
            factory=factory,
            store=SqlControlStore(factory),
            tokens=tokens,
        )
    finally:
        KEYRING.multi, KEYRING.newest = saved
        engine.dispose()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def http_env(env: Env) -> Iterator[Env]:
    """The API app (with /mcp) served by uvicorn in a thread on a free loopback port."""
    app = create_app(env.settings, engine=env.engine)
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, name="uvicorn-mcp", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    env.base_url = f"http://127.0.0.1:{port}"
    try:
        yield env
    finally:
        server.should_exit = True
        thread.join(timeout=20)
        env.base_url = None


# ---------------------------------------------------------------------- MCP clients


def _deps(env: Env, token: str) -> McpDeps:
    return McpDeps(
        settings=env.settings,
        factory=env.factory,
        store=env.store,
        actor_of=token_actor(token),
        poll_seconds=0.2,
    )


@asynccontextmanager
async def session(env: Env, who: str, transport: str, mode: str = "auto") -> AsyncIterator[Client]:
    """A client session as ``who`` (a principal's API token, or a raw token). In process,
    ``auto`` dispatches directly (the 2026 protocol) and ``legacy`` runs JSON-RPC over
    memory streams after the initialize handshake."""
    token = env.tokens.get(who, who)
    if transport == "inproc":
        async with Client(make_server(_deps(env, token)), cache=None, mode=mode) as client:
            yield client
        return
    assert env.base_url is not None
    http = httpx2.AsyncClient(
        headers={"Authorization": f"Bearer {token}"}, timeout=httpx2.Timeout(CALL_SECONDS)
    )
    async with http:
        transport_cm = streamable_http_client(f"{env.base_url}/mcp", http_client=http)
        async with Client(transport_cm, cache=None) as client:
            yield client


def run(fn: Callable[[], Awaitable[T]]) -> T:
    return anyio.run(fn)


def ok(result: CallToolResult) -> dict[str, Any]:
    assert not result.is_error, result.content
    assert result.structured_content is not None
    return dict(result.structured_content)


def failed(result: CallToolResult, kind: str, *paths: str) -> dict[str, Any]:
    """The error of a tool error result: its kind, each named field, no traceback."""
    assert result.is_error, result.structured_content
    assert result.structured_content is not None
    error = dict(result.structured_content["error"])
    assert error["kind"] == kind, error
    named = {e["path"] for e in error["errors"]}
    for path in paths:
        assert path in named, (path, error)
    text = " ".join(getattr(c, "text", "") for c in result.content)
    assert "Traceback" not in text and 'File "' not in text, text
    assert error["message"] in text
    return error


def _versions(env: Env, key: str) -> tuple[str, str]:
    p = env.world.programs[key]
    return p.active_version, p.draft_version


def _past_assignment(env: Env) -> tuple[str, str]:
    """A (person, slot) of program A's active version (its shifts lie in the past)."""
    with env.factory() as s:
        items = S.assignments_list(
            s,
            actor=SETUP,
            program_id=env.program("A"),
            version_id=env.world.programs["A"].active_version,
            limit=1,
        ).items
    return items[0].person_id, items[0].slot_id


def _state(env: Env, run_id: str) -> str:
    with env.factory() as s:
        row = s.get(RunRow, run_id)
        assert row is not None
        return row.state


def _drain(env: Env) -> None:
    """Abort whatever is still queued or running (so a later worker has nothing old)."""
    with transaction(env.factory) as s:
        for view in q.list_active(s, actor=SETUP):
            q.request_abort(s, actor=SETUP, run_id=view.id, reason="test clean-up")


def _unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(6)}"


def _checksums(env: Env) -> dict[str, str]:
    """Every table but the audit log (refusals are audited by design)."""
    sums = table_checksums(env.engine)
    sums.pop("audit_log", None)
    return sums


# ----------------------------------------------------------------- scoped API tokens


def test_api_tokens_store_a_hash_narrow_scopes_and_refuse_alike(env: Env) -> None:
    users = {n: p.user_id for n, p in env.world.principals.items() if p.user_id}
    a, b = env.program("A"), env.program("B")
    with env.factory() as s:
        resident = actor_from_api_token(s, env.tokens["resident"])
        scoped = actor_from_api_token(s, env.tokens["admin_scoped_b"])
        rows = list(s.scalars(select(ApiTokenRow)))
    assert resident.user_id == users["resident"] and resident.role_in(a) is Role.RESIDENT
    assert resident.scopes is None
    assert scoped.is_admin and scoped.scopes == frozenset({b})
    assert scoped.role_in(b) is Role.ADMIN and scoped.role_in(a) is None
    assert scoped.visible_programs() == {b}
    for token in env.tokens.values():  # only the SHA-256 is stored, never the secret
        assert all(token not in (r.token_hash, r.id) for r in rows)
        assert token.startswith("rsat_") and token_id(token) in {r.id for r in rows}

    with transaction(env.factory) as s:  # a coordinator's token limited to one program
        limited = _token(s, users["coordinator_a"], [PROGRAM_C])
    with env.factory() as s:
        actor = actor_from_api_token(s, limited)
    assert actor.role_in(PROGRAM_C) is Role.COORDINATOR and actor.role_in(a) is None

    with transaction(env.factory) as s:
        doomed = _token(s, users["faculty"])
        expired = _token(s, users["faculty"])
        revoke_api_token(s, actor=Actor(user_id=users["faculty"]), token_id=str(token_id(doomed)))
        s.execute(
            update(ApiTokenRow)
            .where(ApiTokenRow.id == token_id(expired))
            .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    forged = env.tokens["resident"][:-4] + "AAAA"
    for bad in (doomed, expired, forged, "rsat_nothing", "", "x" * 500):
        with env.factory() as s, pytest.raises(Unauthenticated, match="invalid API token"):
            actor_from_api_token(s, bad)

    with transaction(env.factory) as s:  # an inactive user's tokens stop at once
        inactive = _token(s, users["faculty"])
        set_active(s, actor=SETUP, user_id=users["faculty"], active=False)
    with env.factory() as s, pytest.raises(Unauthenticated):
        actor_from_api_token(s, inactive)
    with transaction(env.factory) as s:
        set_active(s, actor=SETUP, user_id=users["faculty"], active=True)

    with env.factory() as s:
        with pytest.raises(InvalidInput) as err:
            create_api_token(
                s, actor=SETUP, user_id=users["resident"], programs=[b, ""], expires_days=0
            )
        paths = {e.path for e in err.value.errors}
        assert {"programs[0]", "programs[1]", "expires_days"} <= paths
        with pytest.raises(InvalidInput, match="programs"):
            create_api_token(s, actor=SETUP, user_id=users["resident"], programs=[], expires_days=5)
        with pytest.raises(NotFound):  # someone else's token: not even the user is shown
            create_api_token(
                s,
                actor=Actor(user_id=users["resident"]),
                user_id=users["admin"],
                programs=None,
                expires_days=5,
            )
        with pytest.raises(NotFound):
            revoke_api_token(
                s, actor=Actor(user_id=users["resident"]), token_id=str(token_id(limited))
            )


# ---------------------------------------------------------------- the tool matrix


def _matrix(env: Env, transport: str) -> None:
    a, b = env.program("A"), env.program("B")
    active_a, draft_a = _versions(env, "A")
    person, past_slot = _past_assignment(env)

    async def main() -> None:
        async with session(env, "coordinator_a", transport) as coord:
            listed = {t.name for t in (await coord.list_tools()).tools}
            assert listed == TOOLS
            templates = (await coord.list_resource_templates()).resource_templates
            assert [t.uri_template for t in templates] == ["solver://runs/{run_id}/progress"]
            for tool in (await coord.list_tools()).tools:
                assert tool.output_schema is not None, tool.name

            # ---------------------------------------------------- good arguments
            health = ok(await coord.call_tool("health_check", {}))
            assert health["status"] == "ok" and health["database"] == "ok"

            key = _unique("mcp-good")
            made = ok(
                await coord.call_tool(
                    "generate_schedule",
                    {
                        "program_id": a,
                        "idempotency_key": key,
                        "algorithm": "greedy",
                        "time_limit": 5,
                    },
                )
            )
            run_id = made["run"]["id"]
            assert made["created"] and made["backup_checked"] and made["run"]["state"] == "queued"
            again = ok(
                await coord.call_tool(
                    "generate_schedule",
                    {"program_id": a, "idempotency_key": key, "algorithm": "greedy"},
                )
            )
            assert again["run"]["id"] == run_id and not again["created"]
            assert not again["backup_checked"]

            progress = ok(await coord.call_tool("get_solver_progress", {"run_id": run_id}))
            assert progress["state"] == "queued" and not progress["finished"]
            active = ok(await coord.call_tool("list_active_solvers", {"program_id": a}))
            assert run_id in {r["run"]["id"] for r in active["runs"]}
            assert ok(await coord.call_tool("list_active_solvers", {}))["total"] >= 1

            valid = ok(
                await coord.call_tool("validate_schedule", {"program_id": a, "version_id": draft_a})
            )
            assert valid["version_id"] == draft_a and valid["status"] == "draft"
            assert valid["assignments"] == 10 and 0 <= valid["coverage"] < 1
            conflicts = ok(
                await coord.call_tool(
                    "detect_conflicts",
                    {"program_id": a, "version_id": active_a, "include_warnings": True, "limit": 3},
                )
            )
            assert len(conflicts["conflicts"]) <= 3
            assert conflicts["truncated"] == (conflicts["total"] > 3)
            assert sum(conflicts["by_rule"].values()) == conflicts["total"]
            metrics = ok(await coord.call_tool("get_constraint_metrics", {"program_id": a}))
            assert metrics["version_id"] == active_a and metrics["status"] == "active"
            assert metrics["rules"] and all(r["seconds"] >= 0 for r in metrics["rules"])

            report = ok(await coord.call_tool("sitrep", {}))
            assert report["scope"] == "coordinated" and a in report["program_ids"]
            assert b not in report["program_ids"]

            # ----------------------------------------------------- bad arguments
            before_runs = env.run_count()
            before = _checksums(env)
            failed(await coord.call_tool("generate_schedule", {}), "invalid-input", "program_id")
            failed(
                await coord.call_tool(
                    "generate_schedule",
                    {"program_id": a, "time_limit": "fast", "workers": 0, "algorithm": "magic"},
                ),
                "invalid-input",
                "time_limit",
                "workers",
                "algorithm",
            )
            failed(
                await coord.call_tool(
                    "generate_schedule", {"program_id": a, "idempotency_key": "x"}
                ),
                "invalid-input",
                "idempotency_key",
            )
            failed(await coord.call_tool("generate_schedule", {"program_id": b}), "not-found")
            failed(
                await coord.call_tool("get_solver_progress", {"run_id": 5}),
                "invalid-input",
                "run_id",
            )
            failed(await coord.call_tool("get_solver_progress", {"run_id": "nope"}), "not-found")
            failed(
                await coord.call_tool("list_active_solvers", {"program_id": 7}),
                "invalid-input",
                "program_id",
            )
            failed(
                await coord.call_tool("abort_solver", {"run_id": run_id}), "invalid-input", "reason"
            )
            failed(
                await coord.call_tool("abort_solver", {"run_id": run_id, "reason": ""}),
                "invalid-input",
                "reason",
            )
            failed(
                await coord.call_tool("validate_schedule", {"program_id": a}),
                "invalid-input",
                "version_id",
            )
            failed(
                await coord.call_tool("validate_schedule", {"program_id": a, "version_id": "nope"}),
                "not-found",
            )
            failed(
                await coord.call_tool(
                    "detect_conflicts", {"program_id": a, "version_id": active_a, "limit": 0}
                ),
                "invalid-input",
                "limit",
            )
            failed(
                await coord.call_tool("get_constraint_metrics", {"program_id": ["A"]}),
                "invalid-input",
                "program_id",
            )
            failed(await coord.call_tool("get_constraint_metrics", {"program_id": b}), "not-found")
            failed(
                await coord.call_tool(
                    "analyze_swap_candidates", {"program_id": a, "person_id": person}
                ),
                "invalid-input",
                "slot_id",
            )
            failed(  # a shift that has started is never swapped
                await coord.call_tool(
                    "analyze_swap_candidates",
                    {"program_id": a, "person_id": person, "slot_id": past_slot},
                ),
                "invalid-input",
                "assignment",
            )
            failed(
                await coord.call_tool(
                    "execute_swap", {"program_id": a, "person_id": person, "slot_id": past_slot}
                ),
                "invalid-input",
                "taker_id",
            )
            failed(
                await coord.call_tool(
                    "execute_swap", {"program_id": a, "swap_id": "s1", "person_id": person}
                ),
                "invalid-input",
                "swap_id",
            )
            failed(
                await coord.call_tool("execute_swap", {"program_id": a, "swap_id": "nope"}),
                "not-found",
            )
            failed(
                await coord.call_tool("sitrep", {"program_id": 3}), "invalid-input", "program_id"
            )
            failed(await coord.call_tool("sitrep", {"program_id": b}), "not-found")
            failed(await coord.call_tool("create_backup", {}), "forbidden")
            failed(await coord.call_tool("list_backups", {}), "forbidden")
            failed(
                await coord.call_tool("publish_draft", {"program_id": a, "version_id": draft_a}),
                "invalid-input",
                "publish_token",
            )
            failed(
                await coord.call_tool(
                    "publish_draft",
                    {"program_id": a, "version_id": draft_a, "publish_token": "not-a-token"},
                ),
                "forbidden",
            )
            failed(await coord.call_tool("rollback", {"program_id": a}), "invalid-input", "reason")
            failed(
                await coord.call_tool("rollback", {"program_id": b, "reason": "why not"}),
                "not-found",
            )
            failed(await coord.call_tool("no_such_tool", {}), "unknown-tool")
            assert env.run_count() == before_runs
            assert _checksums(env) == before, "a refused call changed something"

        # ------------------------------------------------ a resident's token
        async with session(env, "resident", transport) as resident:
            assert ok(await resident.call_tool("health_check", {}))["status"] == "ok"
            mine = ok(
                await resident.call_tool(
                    "validate_schedule", {"program_id": a, "version_id": active_a}
                )
            )
            assert mine["status"] == "active"
            ok(await resident.call_tool("get_constraint_metrics", {"program_id": a}))
            ok(await resident.call_tool("get_solver_progress", {"run_id": run_id}))
            failed(  # drafts are not theirs to see
                await resident.call_tool(
                    "validate_schedule", {"program_id": a, "version_id": draft_a}
                ),
                "not-found",
            )
            before_runs = env.run_count()
            for name, args in (
                ("generate_schedule", {"program_id": a}),
                ("abort_solver", {"run_id": run_id, "reason": "I would rather not"}),
                ("sitrep", {"program_id": a}),
                ("rollback", {"program_id": a, "reason": "undo"}),
                (
                    "publish_draft",
                    {"program_id": a, "version_id": active_a, "publish_token": "t"},
                ),
            ):
                failed(await resident.call_tool(name, args), "forbidden")
            failed(await resident.call_tool("sitrep", {}), "forbidden")
            failed(await resident.call_tool("create_backup", {"reason": "mine"}), "forbidden")
            failed(await resident.call_tool("list_backups", {}), "forbidden")
            assert env.run_count() == before_runs
            assert _state(env, run_id) == "queued"

        # ------------------------------ another program's run cannot be aborted
        async with session(env, "coordinator_b", transport) as other:
            failed(
                await other.call_tool("abort_solver", {"run_id": run_id, "reason": "not mine"}),
                "not-found",
            )
            failed(await other.call_tool("get_solver_progress", {"run_id": run_id}), "not-found")
            seen = ok(await other.call_tool("list_active_solvers", {}))
            assert run_id not in {r["run"]["id"] for r in seen["runs"]}
            with pytest.raises(MCPError):
                await other.read_resource(f"solver://runs/{run_id}/progress")
        assert _state(env, run_id) == "queued"
        with env.factory() as s:
            refused = s.scalars(
                select(AuditRow).where(
                    AuditRow.action == "run.abort",
                    AuditRow.target == run_id,
                    AuditRow.outcome == "refused",
                )
            ).all()
        assert refused, "the refused abort of a foreign run is audited"

        async with session(env, "admin_scoped_b", transport) as scoped:
            failed(
                await scoped.call_tool("abort_solver", {"run_id": run_id, "reason": "scope"}),
                "not-found",
            )
            failed(await scoped.call_tool("generate_schedule", {"program_id": a}), "not-found")
            failed(await scoped.call_tool("list_backups", {}), "forbidden")
        assert _state(env, run_id) == "queued"

        # ------------------------------------------- abort, then the conflict
        async with session(env, "coordinator_a", transport) as coord:
            aborted = ok(
                await coord.call_tool("abort_solver", {"run_id": run_id, "reason": "not needed"})
            )
            assert aborted["run"]["state"] == "aborted"
            assert aborted["run"]["abort_reason"] == "not needed"
            failed(
                await coord.call_tool("abort_solver", {"run_id": run_id, "reason": "again"}),
                "conflict",
            )
            done = json.loads(
                _text((await coord.read_resource(f"solver://runs/{run_id}/progress")).contents)
            )
            assert done["state"] == "aborted" and done["finished"]

        # ------------------------------------------------------------ backups
        async with session(env, "admin", transport) as admin:
            backups_before = env_backups(env)
            made_backup = ok(await admin.call_tool("create_backup", {"reason": "mcp-test"}))
            assert made_backup["sha256"] and made_backup["reason"] == "mcp-test"
            listed_backups = ok(await admin.call_tool("list_backups", {"limit": 50}))
            assert made_backup["id"] in {x["id"] for x in listed_backups["backups"]}
            assert listed_backups["total"] == backups_before + 1
            failed(
                await admin.call_tool("create_backup", {"reason": "x" * 65}),
                "invalid-input",
                "reason",
            )
            failed(await admin.call_tool("list_backups", {"limit": 0}), "invalid-input", "limit")
            assert env_backups(env) == backups_before + 1
            everything = ok(await admin.call_tool("sitrep", {"program_id": b}))
            assert everything["program_ids"] == [b]

    run(main)


def env_backups(env: Env) -> int:
    with env.factory() as s:
        return int(
            s.scalar(
                select(func.count()).select_from(BackupRow).where(BackupRow.deleted_at.is_(None))
            )
            or 0
        )


def _text(contents: Any) -> str:
    return "".join(getattr(c, "text", "") for c in contents)


def test_every_tool_in_process(env: Env) -> None:
    _matrix(env, "inproc")


def test_every_tool_over_streamable_http(http_env: Env) -> None:
    _matrix(http_env, "http")


def test_a_revoked_token_stops_the_next_call(env: Env) -> None:
    users = {n: p.user_id for n, p in env.world.principals.items() if p.user_id}
    with transaction(env.factory) as s:
        token = _token(s, users["coordinator_a"])

    async def main() -> None:
        async with session(env, token, "inproc") as client:
            ok(await client.call_tool("health_check", {}))
            with transaction(env.factory) as s:
                revoke_api_token(s, actor=SETUP, token_id=str(token_id(token)))
            failed(await client.call_tool("health_check", {}), "unauthenticated")
            failed(
                await client.call_tool("generate_schedule", {"program_id": "x"}), "unauthenticated"
            )
            failed(  # arguments are checked first: still nothing done
                await client.call_tool("generate_schedule", {}), "invalid-input", "program_id"
            )
            with pytest.raises(MCPError):
                await client.read_resource("solver://runs/whatever/progress")

    run(main)


def test_a_fault_of_ours_is_an_internal_error_without_traceback(
    env: Env, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise ZeroDivisionError("secret detail of the fault")

    monkeypatch.setattr(ops, "sitrep", broken)

    async def main() -> CallToolResult:
        async with session(env, "coordinator_a", "inproc") as client:
            return await client.call_tool("sitrep", {})

    with caplog.at_level(logging.ERROR, logger="rsched.mcp"):
        result = run(main)
    error = failed(result, "internal")
    error_id = re.search(r"error id ([0-9a-f]{12})", error["message"])
    assert error_id is not None
    assert "secret detail" not in str(result.content) + str(result.structured_content)
    logged = [r for r in caplog.records if getattr(r, "error_id", None) == error_id.group(1)]
    assert logged and logged[0].exc_info is not None  # the traceback is in the log only


# ------------------------------------------------------------------- HTTP gate


def test_http_endpoint_needs_an_api_token(http_env: Env) -> None:
    assert http_env.base_url is not None
    url = f"{http_env.base_url}/mcp"
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "probe", "version": "0"},
        },
    }
    headers = {"Accept": "application/json, text/event-stream"}
    access_jwt = http_env.world.principals["admin"].token
    with httpx.Client(timeout=10) as http:
        for auth in (None, "Bearer nope", f"Bearer {access_jwt}", "Basic YTpi", "Bearer"):
            sent = dict(headers) | ({"Authorization": auth} if auth else {})
            answer = http.post(url, json=body, headers=sent)
            assert answer.status_code == 401, (auth, answer.text)
            assert answer.headers["content-type"].startswith("application/problem+json")
            assert answer.headers["www-authenticate"].startswith("Bearer")
            problem = answer.json()
            assert problem["type"] == "urn:rsched:problem:unauthenticated"
            assert "Traceback" not in answer.text
        good = dict(headers) | {"Authorization": f"Bearer {http_env.tokens['resident']}"}
        answer = http.post(url, json=body, headers=good)
        assert answer.status_code == 200, answer.text
        assert answer.headers.get("x-request-id")


# --------------------------------------------------- the whole flow, with a worker


@dataclass
class Worker:
    stop: threading.Event
    thread: threading.Thread


def _start_worker(env: Env) -> Worker:
    stop = threading.Event()
    cfg = WorkerConfig(lease_seconds=30, heartbeat_seconds=1, poll_seconds=0.2)
    thread = threading.Thread(
        target=work,
        args=(env.factory, env.store, cfg, stop),
        kwargs={"owner": f"test-mcp-{env.name}"},
        name="mcp-test-worker",
        daemon=True,
    )
    thread.start()
    return Worker(stop=stop, thread=thread)


def _flow(env: Env, transport: str, mode: str = "auto") -> None:
    c = env.program("C")
    _drain(env)
    worker = _start_worker(env)
    notes: list[tuple[float, float | None, str | None]] = []

    async def note(progress: float, total: float | None, message: str | None) -> None:
        notes.append((progress, total, message))

    async def main() -> None:
        async with session(env, "coordinator_a", transport, mode) as coord:
            generated = ok(
                await coord.call_tool(
                    "generate_schedule",
                    {
                        "program_id": c,
                        "idempotency_key": _unique("flow"),
                        "time_limit": 5,
                        "wait_seconds": 90,
                    },
                    progress_callback=note,
                )
            )
            run_id = generated["run"]["id"]
            assert generated["run"]["state"] == "succeeded", generated
            draft = generated["run"]["result_version_id"]
            assert draft and generated["progress"]["finished"]

            # progress notifications while it ran: increasing, against the time limit
            assert len(notes) >= 2, notes
            values = [n[0] for n in notes]
            assert values == sorted(values) and len(set(values)) == len(values), notes
            assert all(n[1] == 5 for n in notes) and values[-1] == 5
            assert any(run_id in (n[2] or "") for n in notes)
            assert any("succeeded" in (n[2] or "") for n in notes)

            resource = json.loads(
                _text((await coord.read_resource(f"solver://runs/{run_id}/progress")).contents)
            )
            assert resource["run_id"] == run_id and resource["state"] == "succeeded"
            assert resource["result_version_id"] == draft
            assert resource["progress"] and "elapsed" in resource["progress"], resource

            valid = ok(
                await coord.call_tool("validate_schedule", {"program_id": c, "version_id": draft})
            )
            assert valid["ok"] and valid["coverage"] == 1.0, valid

            with transaction(env.factory) as s:  # the coordinator's one-time token (API)
                actor = actor_from_api_token(s, env.tokens["coordinator_a"])
                token, _ = publishing.create_publish_token(
                    s, actor=actor, program_id=c, version_id=draft
                )
            published = ok(
                await coord.call_tool(
                    "publish_draft", {"program_id": c, "version_id": draft, "publish_token": token}
                )
            )
            assert published["version_id"] == draft and published["superseded"] == []
            failed(  # the token is used up
                await coord.call_tool(
                    "publish_draft", {"program_id": c, "version_id": draft, "publish_token": token}
                ),
                "forbidden",
            )

            person, slot, give = await _a_give_away(coord, env, c, draft)
            swapped = ok(
                await coord.call_tool(
                    "execute_swap",
                    {
                        "program_id": c,
                        "person_id": person,
                        "slot_id": slot,
                        "taker_id": give["taker"],
                        "note": "via MCP",
                    },
                )
            )
            swap_version = swapped["version_id"]
            assert swapped["swap"]["status"] == "executed" and swapped["superseded"] == [draft]
            after = ok(
                await coord.call_tool(
                    "validate_schedule", {"program_id": c, "version_id": swap_version}
                )
            )
            assert after["ok"] and after["status"] == "active"

            undone = ok(
                await coord.call_tool("rollback", {"program_id": c, "reason": "undo the swap"})
            )
            assert undone["restored_version_id"] == draft
            emptied = ok(
                await coord.call_tool("rollback", {"program_id": c, "reason": "undo the publish"})
            )
            assert emptied["restored_version_id"] is None
            failed(  # nothing left to roll back
                await coord.call_tool("rollback", {"program_id": c, "reason": "once more"}),
                "not-found",
            )

    try:
        run(main)
    finally:
        worker.stop.set()
        worker.thread.join(timeout=60)
    with env.factory() as s:
        statuses = set(
            s.scalars(select(ScheduleVersionRow.status).where(ScheduleVersionRow.program_id == c))
        )
    assert ScheduleStatus.ACTIVE.value not in statuses


async def _a_give_away(
    coord: Client, env: Env, program_id: str, version_id: str
) -> tuple[str, str, dict[str, Any]]:
    """A shift of the active version and a give-away of it offered by
    analyze_swap_candidates, between two people with at least three shifts each (so the
    publish's per-person diff guard, at most half of one's shifts changed, lets it by)."""
    with env.factory() as s:
        items = S.assignments_list(
            s, actor=SETUP, program_id=program_id, version_id=version_id, limit=500
        ).items
    held: dict[str, int] = {}
    for a in items:
        held[a.person_id] = held.get(a.person_id, 0) + 1
    tried = 0
    for a in sorted(items, key=lambda a: (-held[a.person_id], a.slot_id)):
        if tried == 40:
            break
        tried += 1
        found = ok(
            await coord.call_tool(
                "analyze_swap_candidates",
                {"program_id": program_id, "person_id": a.person_id, "slot_id": a.slot_id},
            )
        )
        assert found["version_id"] == version_id and found["total"] >= len(found["items"])
        for c in found["items"]:
            if c["kind"] == "give" and held.get(c["taker"], 0) >= 3:
                return a.person_id, a.slot_id, c
    raise AssertionError("no give-away between two busy people was offered")


@pytest.mark.slow
def test_agent_flow_in_process(env: Env) -> None:
    _flow(env, "inproc", "legacy")  # progress as notifications/progress messages


@pytest.mark.slow
def test_agent_flow_over_streamable_http(http_env: Env) -> None:
    _flow(http_env, "http")


# ------------------------------------------------------------------ the commands


def test_token_command_and_mcp_over_stdio(
    env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    email = env.world.principals["coordinator_a"].email
    assert email is not None
    settings_env = {
        "RSCHED_ENV": "test",
        "RSCHED_DATABASE_URL": env.settings.resolved_database_url(),
        "RSCHED_DATA_DIR": str(tmp_path / "data"),
        "RSCHED_ENCRYPTION_KEYS": str(env.settings.encryption_keys),
        "RSCHED_JWT_SECRET": str(env.settings.jwt_secret),
    }
    for name, value in settings_env.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    try:
        code = cli_main(["token", "create", "--email", email, "--program", PROGRAM_C])
        out = capsys.readouterr()
        assert code == 0, out.err
        token = out.out.strip()
        assert token.startswith("rsat_") and str(token_id(token)) in out.err
        assert cli_main(["token", "create", "--email", email, "--days", "0"]) == 2
        assert "expires_days" in capsys.readouterr().err
        assert cli_main(["token", "create", "--email", "nobody@example.org"]) == 3
        capsys.readouterr()
    finally:
        get_settings.cache_clear()

    async def main() -> None:
        params = StdioServerParameters(
            command=sys.executable,
            args=["-m", "rsched.cli.main", "mcp"],
            env={**os.environ, **settings_env, "RSCHED_API_TOKEN": token},
        )
        async with Client(params, cache=None) as client:
            assert {t.name for t in (await client.list_tools()).tools} == TOOLS
            metrics = await client.call_tool("get_constraint_metrics", {"program_id": PROGRAM_C})
            failed(metrics, "not-found")  # the token is limited to C, which has no active one
            failed(
                await client.call_tool("get_constraint_metrics", {"program_id": env.program("A")}),
                "not-found",
            )
            assert ok(await client.call_tool("health_check", {}))["status"] == "ok"

    run(main)
    get_settings.cache_clear()
    try:
        assert cli_main(["token", "revoke", token]) == 0
        capsys.readouterr()
    finally:
        get_settings.cache_clear()
    with env.factory() as s:
        row = s.get(ApiTokenRow, token_id(token))
        assert row is not None and row.revoked_at is not None
        assert s.get(UserRow, row.user_id) is not None
