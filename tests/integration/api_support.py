"""A populated database and an API client for the HTTP tests.

``build_world`` imports two synthetic programs (A and B), makes six principals
(anonymous, a resident and a faculty member of A, a coordinator of A, a coordinator of
B, an admin), a draft and an active schedule version in each program, and a "subject"
in each program (a resident with an absence and a request of their own: in A, the
resident principal), a pending swap request of the subject's in each program, and one
backup. Everything is made through the services, as a user would.
"""

from __future__ import annotations

import hashlib
import itertools
import re
import secrets
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

try:
    from fastapi.routing import iter_route_contexts
except ImportError:  # FastAPI < 0.137.2: app.routes is flat
    iter_route_contexts = None  # type: ignore[assignment]
from sqlalchemy import select, text, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from rsched.api.app import create_app
from rsched.config import Settings
from rsched.crypto.fields import KEYRING, install_keys, new_key
from rsched.db.base import Base, make_engine, make_sessionmaker, transaction
from rsched.db.models import AssignmentRow, RunRow, ScheduleVersionRow, SlotRow
from rsched.domain import Assignment, PersonKind, RunState, ScheduleStatus
from rsched.programfile.generator import generate_program
from rsched.services import feeds as F
from rsched.services import runs as R
from rsched.services import schedules as S
from rsched.services import swaps as W
from rsched.services.absences import create_absence
from rsched.services.access import Actor, Role
from rsched.services.auth import issue_access_token
from rsched.services.backups import service_for
from rsched.services.people import list_people
from rsched.services.programs import import_program
from rsched.services.requests import create_request
from rsched.services.rotations import list_rotations
from rsched.services.schemas import AbsenceCreate, RequestCreate
from rsched.services.shift_types import list_shift_types
from rsched.services.slot_patterns import list_slot_patterns
from rsched.services.users import add_membership, create_user
from tests.integration.conftest import empty_all_tables

PASSWORD = "Correct-Horse-42"
SETUP = Actor(user_id="setup", is_admin=True)
PRINCIPALS = ("anonymous", "resident", "faculty", "coordinator_a", "coordinator_b", "admin")
HOME = {"resident": "A", "faculty": "A", "coordinator_a": "A", "coordinator_b": "B"}
"""The program each principal belongs to (admin and anonymous: none; A is used as theirs)."""
BEFORE_HORIZON = datetime(2026, 6, 1, tzinfo=UTC)
"""A clock before the generated programs' horizon (2026-07): their shifts have all
started by now, so swap requests of the world are made as if on this day."""
_serial = itertools.count(1)


def unique(prefix: str) -> str:
    return f"{prefix}-{next(_serial):05d}"


def program_file(program_id: str, seed: int = 1) -> dict[str, Any]:
    """A small synthetic program as JSON-ready data (mapping keys as text)."""
    mapping = generate_program("small", seed)
    mapping["program"]["id"] = program_id
    for pattern in mapping["slot_patterns"]:
        for key in ("pgy_min", "supervision"):
            if key in pattern:
                pattern[key] = {str(k): v for k, v in pattern[key].items()}
    return mapping


def api_settings(url: str, data_dir: Path, keys: list[str], **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "env": "test",
        "data_dir": data_dir,
        "database_url": url,
        "redis_url": None,
        "jwt_secret": secrets.token_urlsafe(48),
        "encryption_keys": ",".join(keys),
    }
    values.update(overrides)
    return Settings(**values)


@contextmanager
def api_client(settings: Settings, engine: Engine) -> Iterator[TestClient]:
    """A client of a fresh app on ``engine``; server errors come back as responses (a
    500 is a finding, not an exception in the test). The keyring is restored after."""
    saved = (KEYRING.multi, KEYRING.newest)
    try:
        with TestClient(create_app(settings, engine=engine), raise_server_exceptions=False) as c:
            yield c
    finally:
        KEYRING.multi, KEYRING.newest = saved


@dataclass(frozen=True)
class RouteInfo:
    name: str
    method: str
    path: str
    """With the include prefix, e.g. /programs/{program_id}/people/{person_id}."""
    success: int


def api_routes(app: FastAPI) -> list[RouteInfo]:
    """Every endpoint of the app (FastAPI ≥ 0.137 keeps included routers as a tree:
    ``iter_route_contexts`` flattens it; older versions have a flat ``app.routes``)."""
    contexts: Iterable[Any] = (
        iter_route_contexts(app.routes) if iter_route_contexts is not None else app.routes
    )
    found = []
    for ctx in contexts:
        route = getattr(ctx, "original_route", ctx)
        if isinstance(route, APIRoute):
            for method in sorted(route.methods or ()):
                found.append(
                    RouteInfo(route.name, method, ctx.path_format, route.status_code or 200)
                )
    return found


def fill(path: str, values: dict[str, str]) -> str:
    """``path`` with each ``{name}`` replaced by ``values[name]`` (KeyError when the tests
    know no value for a new path parameter: add one to ``World.path_values``)."""
    return re.sub(r"{(\w+)}", lambda m: values[m.group(1)], path)


@dataclass
class ProgramWorld:
    id: str
    subject: str
    """A resident whose own records (absence, request) the tests read."""
    other_person: str
    shift: str
    rotation: str
    pattern: str
    absence: str
    request: str
    active_version: str
    draft_version: str
    swap: str
    """A pending swap request: the subject gives ``swap_slot`` (expired by now)."""
    swap_slot: str
    run: str
    """A finished (succeeded) solver run; its event stream ends at once."""


@dataclass
class Principal:
    name: str
    email: str | None = None
    user_id: str | None = None
    token: str | None = None

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}


@dataclass
class World:
    settings: Settings
    factory: sessionmaker[Session]
    programs: dict[str, ProgramWorld]
    principals: dict[str, Principal] = field(default_factory=dict)
    backup: str = ""
    """A backup of the whole database (made when the world was built)."""

    def path_values(self, key: str) -> dict[str, str]:
        """A real id for every path parameter of the API, in program ``key``."""
        p = self.programs[key]
        return {
            "program_id": p.id,
            "person_id": p.subject,
            "code": p.shift,
            "rotation_id": p.rotation,
            "pattern_id": p.pattern,
            "absence_id": p.absence,
            "request_id": p.request,
            "version_id": p.active_version,
            "swap_id": p.swap,
            "backup_id": self.backup,
            "run_id": p.run,
        }

    def swap_query(self, key: str) -> dict[str, str]:
        """Query parameters naming an assignment of the active schedule (the subject's)."""
        p = self.programs[key]
        return {"assignment": p.swap_slot, "person_id": p.subject}

    def feed_token(self, key: str) -> str:
        p = self.programs[key]
        with transaction(self.factory) as s:
            return F.create_feed_token(s, actor=SETUP, program_id=p.id, person_id=p.subject)


def some_assignments(s: Session, program_id: str, people: list[str]) -> list[Assignment]:
    slots = s.scalars(
        select(SlotRow.id)
        .where(SlotRow.program_id == program_id)
        .order_by(SlotRow.start, SlotRow.id)
        .limit(30)
    ).all()
    return [
        Assignment(person_id=people[i % len(people)], slot_id=sid) for i, sid in enumerate(slots)
    ]


def make_swap(
    factory: sessionmaker[Session],
    program_id: str,
    *,
    person: str | None = None,
    taker: str | None = None,
) -> tuple[str, str]:
    """A pending swap request in the program's active schedule (its id and the slot
    given), as of ``BEFORE_HORIZON``: a give-away that breaks no hard rule, of
    ``person``'s shift (anyone's when None) to ``taker`` (anyone when None)."""
    with transaction(factory) as s:
        pairs = s.execute(
            select(AssignmentRow.person_id, AssignmentRow.slot_id)
            .join(ScheduleVersionRow, ScheduleVersionRow.id == AssignmentRow.version_id)
            .where(
                AssignmentRow.program_id == program_id,
                ScheduleVersionRow.status == ScheduleStatus.ACTIVE.value,
            )
            .order_by(AssignmentRow.slot_id, AssignmentRow.person_id)
        ).all()
        for who, slot in pairs:
            if (person is not None and who != person) or who == taker:
                continue
            found = W.candidates(
                s,
                actor=SETUP,
                program_id=program_id,
                person_id=who,
                slot_id=slot,
                now=BEFORE_HORIZON,
                limit=500,
            )
            for c in found.items:
                if c.kind == "give" and (taker is None or c.taker == taker):
                    swap = W.request_swap(
                        s,
                        actor=SETUP,
                        program_id=program_id,
                        person_id=who,
                        slot_id=slot,
                        taker_id=c.taker,
                        note="test world",
                        now=BEFORE_HORIZON,
                    )
                    return swap.id, slot
    raise AssertionError(f"no swap of {person or 'anyone'} to {taker or 'anyone'} in {program_id}")


def _program(factory: sessionmaker[Session], program_id: str, seed: int) -> ProgramWorld:
    with transaction(factory) as s:
        import_program(s, actor=SETUP, mapping=program_file(program_id, seed))
    with transaction(factory) as s:
        residents = [p.id for p in list_people(s, actor=SETUP, program_id=program_id).items]
        residents = [r for r in residents if r.startswith("r")]
        subject = residents[0]
        absence = create_absence(
            s,
            actor=SETUP,
            program_id=program_id,
            data=AbsenceCreate.model_validate(
                {
                    "id": "abs-subject",
                    "person_id": subject,
                    "start": "2027-01-04T08:00:00-05:00",
                    "end": "2027-01-05T08:00:00-05:00",
                    "leave_type": "sick",
                }
            ),
        )
        request = create_request(
            s,
            actor=SETUP,
            program_id=program_id,
            data=RequestCreate(
                id="req-subject", person_id=subject, day=date(2026, 7, 10), wants=False, weight=3
            ),
        )
        shift = list_shift_types(s, actor=SETUP, program_id=program_id).items[0].code
        rotation = list_rotations(s, actor=SETUP, program_id=program_id).items[0].id
        pattern = list_slot_patterns(s, actor=SETUP, program_id=program_id).items[0].id
        chosen = some_assignments(s, program_id, residents)
        active = S.save_draft(
            s, actor=SETUP, program_id=program_id, assignments=chosen, report_summary={"n": 1}
        )
        draft = S.save_draft(
            s, actor=SETUP, program_id=program_id, assignments=chosen[:10], report_summary={}
        )
        s.execute(  # publishing is its own service; the tests set the status directly
            update(ScheduleVersionRow)
            .where(ScheduleVersionRow.id == active)
            .values(status=ScheduleStatus.ACTIVE.value)
        )
        run, _ = R.create_run(
            s, actor=SETUP, program_id=program_id, idempotency_key=f"world-run-{program_id}"
        )
        s.execute(  # solved by no worker: the tests set the outcome directly
            update(RunRow)
            .where(RunRow.id == run.id)
            .values(
                state=RunState.SUCCEEDED.value,
                attempt=1,
                finished_at=run.created_at,
                stop_reason="completed",
                result_version_id=draft,
                progress={"elapsed": 1.0, "solutions": 1, "objective": 0.0},
            )
        )
    swap, swap_slot = make_swap(factory, program_id, person=subject)
    return ProgramWorld(
        id=program_id,
        subject=subject,
        other_person=residents[1],
        shift=shift,
        rotation=rotation,
        pattern=pattern,
        absence=absence.id,
        request=request.id,
        active_version=active,
        draft_version=draft,
        swap=swap,
        swap_slot=swap_slot,
        run=run.id,
    )


def _user(
    s: Session,
    name: str,
    *,
    admin: bool = False,
    program_id: str | None = None,
    role: Role | None = None,
    person_id: str | None = None,
) -> Principal:
    email = f"{name.replace('_', '.')}@example.org"
    user_id = create_user(s, email=email, password=PASSWORD, is_admin=admin)
    if program_id is not None and role is not None:
        add_membership(s, user_id=user_id, program_id=program_id, role=role, person_id=person_id)
    return Principal(name=name, email=email, user_id=user_id)


def build_world(settings: Settings, factory: sessionmaker[Session]) -> World:
    """Two programs, six principals, their access tokens (the database must be empty)."""
    programs = {"A": _program(factory, "prog-a", 1), "B": _program(factory, "prog-b", 2)}
    a, b = programs["A"].id, programs["B"].id
    with transaction(factory) as s:
        faculty = next(
            p.id for p in list_people(s, actor=SETUP, program_id=a, kind=PersonKind.FACULTY).items
        )
        principals = {
            "anonymous": Principal(name="anonymous"),
            "resident": _user(
                s, "resident", program_id=a, role=Role.RESIDENT, person_id=programs["A"].subject
            ),
            "faculty": _user(s, "faculty", program_id=a, role=Role.FACULTY, person_id=faculty),
            "coordinator_a": _user(s, "coordinator_a", program_id=a, role=Role.COORDINATOR),
            "coordinator_b": _user(s, "coordinator_b", program_id=b, role=Role.COORDINATOR),
            "admin": _user(s, "admin", admin=True),
        }
    for p in principals.values():
        if p.user_id is not None:
            p.token = issue_access_token(settings, p.user_id)
    with service_for(settings) as backups:
        backup = backups.create(reason="test-world").id
    return World(
        settings=settings,
        factory=factory,
        programs=programs,
        principals=principals,
        backup=backup,
    )


def table_checksums(engine: Engine) -> dict[str, str]:
    """SHA-256 of every table's raw rows (as stored: ciphertext, not decrypted values)."""
    sums: dict[str, str] = {}
    with engine.connect() as conn:
        for table in Base.metadata.sorted_tables:
            rows = conn.execute(text(f'SELECT * FROM "{table.name}"')).all()
            canonical = "\n".join(sorted(repr(tuple(r)) for r in rows))
            sums[table.name] = hashlib.sha256(canonical.encode()).hexdigest()
    return sums


@contextmanager
def populated(url: str, data_dir: Path) -> Iterator[tuple[World, TestClient]]:
    """Empty the database at ``url``, build the world, and serve it; for module-scoped
    fixtures (building takes seconds, each request milliseconds)."""
    engine = make_engine(url)
    saved = (KEYRING.multi, KEYRING.newest)
    try:
        empty_all_tables(engine)
        keys = [new_key()]
        install_keys(keys)
        settings = api_settings(url, data_dir, keys)
        world = build_world(settings, make_sessionmaker(engine))
        with api_client(settings, engine) as client:
            yield world, client
    finally:
        KEYRING.multi, KEYRING.newest = saved
        engine.dispose()
