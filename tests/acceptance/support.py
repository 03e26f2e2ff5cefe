"""A populated database for the page tests: one generated program, its users, and a
solved draft, all made through the services as a user would.

``PASSWORD`` signs in every user: ``coordinator@example.org`` (coordinator),
``resident@example.org`` (a PGY-1 resident, person ``r01``), ``faculty@example.org``
(the first faculty member) and ``admin@example.org`` (admin). ``outsider@example.org``
coordinates another program.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from rsched.config import Settings
from rsched.db.base import transaction
from rsched.db.mapping import load_program_data
from rsched.domain import PersonKind
from rsched.programfile.generator import generate_program
from rsched.services import schedules as S
from rsched.services.access import Actor, Role
from rsched.services.people import list_people
from rsched.services.programs import import_program
from rsched.services.users import add_membership, create_user
from rsched.solver.api import SolveParams, solve

PASSWORD = "Correct-Horse-42"
SETUP = Actor(user_id="setup", is_admin=True)


@dataclass
class Site:
    program_id: str
    other_program_id: str
    resident: str
    faculty: str
    draft: str | None = None
    broken: str | None = None
    """A draft that breaks rules on purpose (see ``save_broken_draft``)."""


ISO_DAY = re.compile(r"^\d{4}-\d\d-\d\d$")


def shifted(value: Any, days: int) -> Any:
    """``value`` with every ISO date moved by ``days`` (a multiple of 7 keeps weekdays)."""
    if isinstance(value, str) and ISO_DAY.match(value):
        return (date.fromisoformat(value) + timedelta(days=days)).isoformat()
    if isinstance(value, dict):
        return {k: shifted(v, days) for k, v in value.items()}
    if isinstance(value, list):
        return [shifted(v, days) for v in value]
    return value


def program_file(
    size: str, program_id: str, seed: int = 1, *, future: bool = True
) -> dict[str, Any]:
    """A generated program; with ``future`` its dates move by whole weeks so that it
    starts next week (shifts that have started can no longer be swapped)."""
    mapping = generate_program(size, seed)
    mapping["program"]["id"] = program_id
    if future:
        first = date.fromisoformat(mapping["horizon"]["start"])
        target = date.today() + timedelta(days=7)
        weeks = max(0, -(-(target - first).days // 7))
        mapping = shifted(mapping, 7 * weeks)
    return dict(mapping)


def settings_for(url: str, data_dir: Path, keys: list[str], **overrides: Any) -> Settings:
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


def populate(
    factory: sessionmaker[Session], *, size: str = "small", solve_draft: bool = True
) -> Site:
    """Import the program (and a second one for tenancy checks), make the users, and
    (``solve_draft``) store a CP-SAT schedule as a draft."""
    pid, other = f"web-{size}", "web-other"
    with transaction(factory) as s:
        import_program(s, actor=SETUP, mapping=program_file(size, pid))
        import_program(s, actor=SETUP, mapping=program_file("small", other, seed=2))
    with transaction(factory) as s:
        people = list_people(s, actor=SETUP, program_id=pid, limit=500).items
        resident = next(p.id for p in people if p.kind == PersonKind.RESIDENT)
        faculty = next(p.id for p in people if p.kind == PersonKind.FACULTY)
        users = {
            "coordinator": (Role.COORDINATOR, pid, None),
            "resident": (Role.RESIDENT, pid, resident),
            "faculty": (Role.FACULTY, pid, faculty),
            "outsider": (Role.COORDINATOR, other, None),
        }
        for name, (role, program, person) in users.items():
            uid = create_user(s, email=f"{name}@example.org", password=PASSWORD)
            add_membership(s, user_id=uid, program_id=program, role=role, person_id=person)
        create_user(s, email="admin@example.org", password=PASSWORD, is_admin=True)
    site = Site(program_id=pid, other_program_id=other, resident=resident, faculty=faculty)
    if solve_draft:
        site.draft = solve_and_save(factory, pid)
    return site


def solve_and_save(
    factory: sessionmaker[Session], program_id: str, algorithm: str = "cp_sat"
) -> str:
    with factory() as s:
        data = load_program_data(s, program_id)
    result = solve(data, SolveParams(algorithm=algorithm, time_limit=30, workers=2))
    with transaction(factory) as s:
        return S.save_draft(
            s,
            actor=SETUP,
            program_id=program_id,
            assignments=result.assignments,
            report_summary=result.summary(),
        )


class NoBackup:
    """A backup guard for setting up test data (the publish under test uses the real one)."""

    def ensure_recent(self, *, program_id: str, reason: str) -> str:
        return "test-setup"


def publish(factory: sessionmaker[Session], program_id: str, version_id: str) -> None:
    """Publish a draft through the real protocol (token, gate, diff guard, staging)."""
    from rsched.services import publishing

    with transaction(factory) as s:
        token, _ = publishing.create_publish_token(
            s, actor=SETUP, program_id=program_id, version_id=version_id
        )
    publishing.publish(
        factory,
        actor=SETUP,
        program_id=program_id,
        version_id=version_id,
        token=token,
        backups=NoBackup(),
    )


def save_broken_draft(factory: sessionmaker[Session], program_id: str, person_id: str) -> str:
    """A draft that breaks rules on purpose: a solved schedule plus ``person_id`` on every
    slot of the first two days (overlaps, long duty, coverage above the maximum)."""
    from rsched.domain import Assignment

    with factory() as s:
        data = load_program_data(s, program_id)
    result = solve(data, SolveParams(algorithm="greedy", time_limit=30, workers=1))
    tz = data.tz
    first_days = {data.start, data.start + timedelta(days=1)}
    extra = [
        Assignment(person_id=person_id, slot_id=slot.id)
        for slot in data.slots
        if slot.start.astimezone(tz).date() in first_days
    ]
    with transaction(factory) as s:
        return S.save_draft(
            s,
            actor=SETUP,
            program_id=program_id,
            assignments=[*result.assignments, *extra],
            report_summary={"algorithm": "hand-made", "note": "breaks rules on purpose"},
        )
