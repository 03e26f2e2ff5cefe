"""The service layer on real databases: SQLite and PostgreSQL, each test on an empty
migrated database. Import and load back, all-or-nothing import, CRUD with pagination
and filters, tenancy, per-role visibility, constant query counts, calendar feed tokens."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, func, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from rsched.db import mapping
from rsched.db.base import Base, transaction
from rsched.db.mapping import load_program_data
from rsched.db.models import FeedTokenRow, ScheduleVersionRow, SlotRow
from rsched.domain import Assignment, InvalidInput, NotFound, PersonKind, ScheduleStatus
from rsched.programfile.generator import generate_program
from rsched.programfile.loader import parse_program
from rsched.services import feeds as F
from rsched.services import schedules as S
from rsched.services.absences import (
    create_absence,
    delete_absence,
    get_absence,
    list_absences,
    update_absence,
)
from rsched.services.access import Actor, Forbidden, Membership, Role
from rsched.services.people import (
    create_person,
    delete_person,
    get_person,
    list_people,
    update_person,
)
from rsched.services.programs import import_program
from rsched.services.requests import create_request, delete_request, list_requests
from rsched.services.rotations import create_rotation, delete_rotation, list_rotations
from rsched.services.schemas import (
    AbsenceCreate,
    AbsenceUpdate,
    PersonCreate,
    PersonUpdate,
    RequestCreate,
    RotationCreate,
    ShiftTypeCreate,
    ShiftTypeUpdate,
    SlotPatternCreate,
    SlotPatternUpdate,
)
from rsched.services.shift_types import (
    create_shift_type,
    delete_shift_type,
    get_shift_type,
    list_shift_types,
    update_shift_type,
)
from rsched.services.slot_patterns import (
    create_slot_pattern,
    delete_slot_pattern,
    list_slot_patterns,
    update_slot_pattern,
)

ADMIN = Actor(user_id="admin", is_admin=True)
SMALL = "synthetic-small"

# ------------------------------------------------------------------------ fixtures
# db_url (SQLite and PostgreSQL, emptied before each test), session_factory and
# fernet_keys come from conftest.py.


@pytest.fixture(autouse=True)
def _keys(fernet_keys: list[str]) -> list[str]:
    return fernet_keys


@pytest.fixture
def factory(session_factory: sessionmaker[Session]) -> sessionmaker[Session]:
    return session_factory


def coordinator(program_id: str) -> Actor:
    return Actor(
        user_id=f"c-{program_id}", memberships={program_id: Membership(role=Role.COORDINATOR)}
    )


def member(program_id: str, person_id: str, role: Role = Role.RESIDENT) -> Actor:
    return Actor(
        user_id=f"u-{person_id}",
        memberships={program_id: Membership(role=role, person_id=person_id)},
    )


def small_mapping(program_id: str = SMALL) -> dict[str, Any]:
    mapping_ = generate_program("small", 1)
    mapping_["program"]["id"] = program_id
    mapping_["people"][0]["military_status"] = "reserve"
    mapping_["people"][0]["accommodation_notes"] = "no nights after 22:00"
    return mapping_


def import_small(factory: sessionmaker[Session], program_id: str = SMALL) -> str:
    with transaction(factory) as s:
        return import_program(s, actor=ADMIN, mapping=small_mapping(program_id))


def row_counts(factory: sessionmaker[Session]) -> dict[str, int]:
    with factory() as s:
        return {
            t.name: s.scalar(select(func.count()).select_from(t)) or 0
            for t in Base.metadata.sorted_tables
        }


def by_id(items: Any, key: str = "id") -> list[Any]:
    return sorted(items, key=lambda x: getattr(x, key))


def some_assignments(factory: sessionmaker[Session], program_id: str) -> list[Assignment]:
    """Residents r01..r12 round robin over the first 40 slots (rules do not matter here)."""
    with factory() as s:
        slots = s.scalars(
            select(SlotRow.id)
            .where(SlotRow.program_id == program_id)
            .order_by(SlotRow.start, SlotRow.id)
            .limit(40)
        ).all()
    return [Assignment(person_id=f"r{i % 12 + 1:02d}", slot_id=sid) for i, sid in enumerate(slots)]


def activate(factory: sessionmaker[Session], version_id: str) -> None:
    """Publishing is a later service; tests set the status directly."""
    with transaction(factory) as s:
        s.execute(
            update(ScheduleVersionRow)
            .where(ScheduleVersionRow.id == version_id)
            .values(status=ScheduleStatus.ACTIVE.value)
        )


@contextmanager
def statements(factory: sessionmaker[Session]) -> Iterator[list[str]]:
    seen: list[str] = []
    engine = factory.kw["bind"]

    def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        seen.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", count)


def counted(factory: sessionmaker[Session], call: Callable[[Session], Any]) -> int:
    """Statements one call issues in a fresh session (nothing cached from before)."""
    with factory() as s, statements(factory) as seen:
        call(s)
    return len(seen)


# -------------------------------------------------------------------------- import


def test_import_then_load_gives_back_the_program(factory: sessionmaker[Session]) -> None:
    pid = import_small(factory)
    expected = parse_program(small_mapping())
    with factory() as s:
        loaded = load_program_data(s, pid)
    assert loaded.program == expected.program
    assert (loaded.start, loaded.end) == (expected.start, expected.end)
    assert loaded.periods == expected.periods and loaded.blocks == expected.blocks
    assert by_id(loaded.slots) == by_id(expected.slots)
    assert by_id(loaded.people) == by_id(expected.people)
    assert by_id(loaded.absences) == by_id(expected.absences)
    assert by_id(loaded.requests) == by_id(expected.requests)
    assert by_id(loaded.rotations) == by_id(expected.rotations)
    assert by_id(loaded.shift_types, "code") == by_id(expected.shift_types, "code")
    assert sorted(loaded.rotation_assignments, key=lambda a: (a.person_id, a.block)) == sorted(
        expected.rotation_assignments, key=lambda a: (a.person_id, a.block)
    )
    assert {a.leave_type for a in loaded.absences} == {"vacation"}
    assert loaded.person_by_id["r01"].military_status == "reserve"
    with factory() as s:  # sensitive text is not stored in the clear
        raw = [bytes(v) for v in s.scalars(text("SELECT leave_type FROM absences"))]
        raw += [
            bytes(v)
            for v in s.scalars(
                text("SELECT military_status FROM people WHERE military_status IS NOT NULL")
            )
        ]
    assert raw and not any(b"vacation" in v or b"reserve" in v for v in raw)
    with factory() as s:
        patterns = list_slot_patterns(s, actor=ADMIN, program_id=pid, limit=50)
    assert patterns.total == len(small_mapping()["slot_patterns"])


def test_bad_program_imports_nothing_and_reports_every_error(
    factory: sessionmaker[Session],
) -> None:
    bad = small_mapping()
    bad["people"][1]["pgy"] = 9
    bad["slot_patterns"][0]["shift"] = "NOPE"
    bad["absences"][0]["person"] = "ghost"
    with pytest.raises(InvalidInput) as cli:
        parse_program(bad)
    before = row_counts(factory)
    with pytest.raises(InvalidInput) as caught, transaction(factory) as s:
        import_program(s, actor=ADMIN, mapping=bad)
    assert caught.value.errors == cli.value.errors
    paths = {e.path for e in caught.value.errors}
    assert {"people[1].pgy", "slot_patterns[0].shift", "absences[0].person"} <= paths
    assert row_counts(factory) == before


def test_import_is_all_or_nothing_and_refuses_an_existing_id(
    factory: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    real = mapping.program_rows

    def broken(data: Any) -> list[list[Any]]:  # the last stage repeats a slot: DB refuses
        stages = real(data)
        slot = next(r for r in stages[-1] if isinstance(r, SlotRow))
        twin = SlotRow(**{c.key: getattr(slot, c.key) for c in SlotRow.__table__.columns})
        return [*stages[:-1], [*stages[-1], twin]]

    before = row_counts(factory)
    monkeypatch.setattr(mapping, "program_rows", broken)
    with pytest.raises(IntegrityError), transaction(factory) as s:
        import_program(s, actor=ADMIN, mapping=small_mapping())
    assert row_counts(factory) == before
    monkeypatch.setattr(mapping, "program_rows", real)

    import_small(factory)
    after_first = row_counts(factory)
    with pytest.raises(InvalidInput) as caught, transaction(factory) as s:
        import_program(s, actor=ADMIN, mapping=small_mapping())
    assert [e.path for e in caught.value.errors] == ["program.id"]
    assert row_counts(factory) == after_first
    with pytest.raises(Forbidden), transaction(factory) as s:
        import_program(s, actor=coordinator("other"), mapping=small_mapping("other"))


# ---------------------------------------------------------------------------- CRUD


def test_people_pages_filters_and_partial_updates(factory: sessionmaker[Session]) -> None:
    pid = import_small(factory)
    coord = coordinator(pid)
    with transaction(factory) as s:
        pages = [
            list_people(s, actor=coord, program_id=pid, limit=5, offset=o) for o in (0, 5, 10, 15)
        ]
        assert [p.total for p in pages] == [16] * 4
        assert [len(p.items) for p in pages] == [5, 5, 5, 1]
        ids = [x.id for p in pages for x in p.items]
        assert ids == sorted(set(ids)) and len(ids) == 16
        assert list_people(s, actor=coord, program_id=pid, kind=PersonKind.FACULTY).total == 4
        assert {x.id for x in list_people(s, actor=coord, program_id=pid, pgy=2).items} == {
            "r05",
            "r06",
            "r07",
            "r08",
        }
        with pytest.raises(InvalidInput) as bad_window:
            list_people(s, actor=coord, program_id=pid, limit=0, offset=-1)
        assert {e.path for e in bad_window.value.errors} == {"limit", "offset"}

        made = create_person(
            s,
            actor=coord,
            program_id=pid,
            data=PersonCreate(
                id="r99", name="New Resident", kind=PersonKind.RESIDENT, pgy=1, tags=["bls"]
            ),
        )
        assert made.pgy == 1 and made.tags == ["bls"]
        with pytest.raises(InvalidInput) as dup:
            create_person(
                s,
                actor=coord,
                program_id=pid,
                data=PersonCreate(id="r99", name="Twin", kind=PersonKind.RESIDENT, pgy=1),
            )
        assert dup.value.errors[0].path == "id"
        with pytest.raises(InvalidInput) as no_pgy:  # the domain record's own check
            create_person(
                s,
                actor=coord,
                program_id=pid,
                data=PersonCreate(id="r98", name="No level", kind=PersonKind.RESIDENT),
            )
        assert no_pgy.value.errors[0].path.endswith(".pgy")

        renamed = update_person(
            s,
            actor=coord,
            program_id=pid,
            person_id="r99",
            data=PersonUpdate(name="Renamed", active=False),
        )
        assert (renamed.name, renamed.pgy, renamed.active, renamed.tags) == (
            "Renamed",
            1,
            False,
            ["bls"],
        )
        with pytest.raises(InvalidInput):
            update_person(
                s, actor=coord, program_id=pid, person_id="r99", data=PersonUpdate(pgy=None)
            )
        with pytest.raises(InvalidInput) as null_name:
            update_person(
                s, actor=coord, program_id=pid, person_id="r99", data=PersonUpdate(name=None)
            )
        assert null_name.value.errors[0].path == "name"
        assert [
            x.id for x in list_people(s, actor=coord, program_id=pid, active=False).items
        ] == ["r99"]
        delete_person(s, actor=coord, program_id=pid, person_id="r99")
        with pytest.raises(NotFound):
            get_person(s, actor=coord, program_id=pid, person_id="r99")


def test_shift_types_rotations_and_slot_patterns(factory: sessionmaker[Session]) -> None:
    pid = import_small(factory)
    coord = coordinator(pid)
    with transaction(factory) as s:
        edu = create_shift_type(
            s,
            actor=coord,
            program_id=pid,
            data=ShiftTypeCreate(
                code="EDU", name="Didactics", start="12:00", duration_minutes=60, kind="education"
            ),
        )
        assert edu.eligible_pgy == list(range(1, 8))
        assert (
            update_shift_type(
                s, actor=coord, program_id=pid, code="EDU", data=ShiftTypeUpdate(start="13:00")
            ).start.hour
            == 13
        )
        with pytest.raises(InvalidInput) as moved:  # its slots already carry the times
            update_shift_type(
                s,
                actor=coord,
                program_id=pid,
                code="WARD_DAY",
                data=ShiftTypeUpdate(duration_minutes=600),
            )
        assert moved.value.errors[0].path == "duration_minutes"
        with pytest.raises(InvalidInput):
            delete_shift_type(s, actor=coord, program_id=pid, code="WARD_DAY")

        with pytest.raises(InvalidInput) as unknown:
            create_rotation(
                s,
                actor=coord,
                program_id=pid,
                data=RotationCreate(
                    id="teach",
                    name="Teaching",
                    eligible_pgy=[3],
                    max_residents=2,
                    shift_types=["EDU", "NOPE"],
                ),
            )
        assert [e.path for e in unknown.value.errors] == ["shift_types[1]"]
        create_rotation(
            s,
            actor=coord,
            program_id=pid,
            data=RotationCreate(
                id="teach", name="Teaching", eligible_pgy=[3], max_residents=2, shift_types=["EDU"]
            ),
        )
        assert "teach" in {r.id for r in list_rotations(s, actor=coord, program_id=pid).items}
        with pytest.raises(InvalidInput):  # a rotation now uses it
            delete_shift_type(s, actor=coord, program_id=pid, code="EDU")

        with pytest.raises(InvalidInput) as bad_pattern:
            create_slot_pattern(
                s,
                actor=coord,
                program_id=pid,
                data=SlotPatternCreate(shift="NOPE", days="weekdays", min_staff=1, max_staff=2),
            )
        assert [e.path for e in bad_pattern.value.errors] == ["shift"]
        pattern = create_slot_pattern(
            s,
            actor=coord,
            program_id=pid,
            data=SlotPatternCreate(
                id="edu-weekly",
                shift="EDU",
                days=["wed"],
                first_day=date(2026, 7, 1),
                min_staff=0,
                max_staff=12,
            ),
        )
        assert (pattern.days, pattern.first_day, pattern.last_day) == (
            ["wed"],
            date(2026, 7, 1),
            None,
        )
        with pytest.raises(InvalidInput) as min_max:
            update_slot_pattern(
                s,
                actor=coord,
                program_id=pid,
                pattern_id="edu-weekly",
                data=SlotPatternUpdate(min_staff=13),
            )
        assert [e.path for e in min_max.value.errors] == ["max_staff"]
        changed = update_slot_pattern(
            s,
            actor=coord,
            program_id=pid,
            pattern_id="edu-weekly",
            data=SlotPatternUpdate(days="weekdays", last_day=None),
        )
        assert changed.days == "weekdays" and changed.max_staff == 12
        delete_slot_pattern(s, actor=coord, program_id=pid, pattern_id="edu-weekly")
        delete_rotation(s, actor=coord, program_id=pid, rotation_id="teach")
        delete_shift_type(s, actor=coord, program_id=pid, code="EDU")
        with pytest.raises(NotFound):
            get_shift_type(s, actor=coord, program_id=pid, code="EDU")


def test_absences_and_requests(factory: sessionmaker[Session]) -> None:
    pid = import_small(factory)
    coord = coordinator(pid)
    tz_start = datetime.fromisoformat("2026-07-20T00:00-04:00")
    with transaction(factory) as s:
        create_absence(
            s,
            actor=coord,
            program_id=pid,
            data=AbsenceCreate(
                id="conf",
                person_id="r05",
                start=tz_start,
                end=tz_start + timedelta(days=2),
                leave_type="conference",
            ),
        )
        assert (
            get_absence(s, actor=coord, program_id=pid, absence_id="conf").leave_type
            == "conference"
        )
        with pytest.raises(InvalidInput) as ghost:
            create_absence(
                s,
                actor=coord,
                program_id=pid,
                data=AbsenceCreate(
                    person_id="ghost", start=tz_start, end=tz_start + timedelta(hours=1)
                ),
            )
        assert ghost.value.errors[0].path == "person_id"
        with pytest.raises(InvalidInput) as overlap:
            create_absence(
                s,
                actor=coord,
                program_id=pid,
                data=AbsenceCreate(
                    person_id="r05",
                    start=tz_start + timedelta(days=1),
                    end=tz_start + timedelta(days=3),
                ),
            )
        assert overlap.value.errors[0].path == "start"
        total = list_absences(s, actor=coord, program_id=pid).total
        assert total == 3
        assert [
            a.id for a in list_absences(s, actor=coord, program_id=pid, person_id="r05").items
        ] == ["conf"]
        july_20 = list_absences(
            s, actor=coord, program_id=pid, start=date(2026, 7, 20), end=date(2026, 7, 20)
        ).items
        assert [a.id for a in july_20] == ["conf"]
        later = [
            list_absences(s, actor=coord, program_id=pid, start=date(2026, 7, day)).total
            for day in (21, 22)
        ]
        assert later == [1, 0]  # it ends at local midnight starting the 22nd
        moved = update_absence(
            s,
            actor=coord,
            program_id=pid,
            absence_id="conf",
            data=AbsenceUpdate(end=tz_start + timedelta(days=1)),
        )
        assert moved.end == tz_start + timedelta(days=1) and moved.leave_type == "conference"
        delete_absence(s, actor=coord, program_id=pid, absence_id="conf")

        with pytest.raises(InvalidInput) as bad_request:
            create_request(
                s,
                actor=coord,
                program_id=pid,
                data=RequestCreate(
                    person_id="r02", day=date(2026, 9, 1), wants=False, shift="NOPE"
                ),
            )
        assert {e.path for e in bad_request.value.errors} == {"day", "shift"}
        made = create_request(
            s,
            actor=coord,
            program_id=pid,
            data=RequestCreate(
                person_id="r02", day=date(2026, 7, 9), wants=True, shift="NIGHT", weight=3
            ),
        )
        assert made.id.startswith("request-")
        assert [
            r.id for r in list_requests(s, actor=coord, program_id=pid, person_id="r02").items
        ] == [made.id]
        assert list_requests(s, actor=coord, program_id=pid).total == 3
        delete_request(s, actor=coord, program_id=pid, request_id=made.id)
        assert list_requests(s, actor=coord, program_id=pid).total == 2


# ---------------------------------------------------------------- tenancy and roles


def test_a_coordinator_of_another_program_finds_nothing(factory: sessionmaker[Session]) -> None:
    a, b = import_small(factory, "prog-a"), import_small(factory, "prog-b")
    with transaction(factory) as s:
        create_person(
            s,
            actor=coordinator(a),
            program_id=a,
            data=PersonCreate(id="only-a", name="Only in A", kind=PersonKind.FACULTY),
        )
    version = save_version(factory, a)
    outsider = coordinator(b)
    with factory() as s:
        for call in (
            lambda: list_people(s, actor=outsider, program_id=a),
            lambda: get_person(s, actor=outsider, program_id=a, person_id="r01"),
            lambda: get_absence(s, actor=outsider, program_id=a, absence_id="a0001"),
            lambda: get_shift_type(s, actor=outsider, program_id=a, code="WARD_DAY"),
            lambda: update_person(
                s, actor=outsider, program_id=a, person_id="r01", data=PersonUpdate(name="x")
            ),
            lambda: delete_request(s, actor=outsider, program_id=a, request_id="q0001"),
            lambda: S.get_version(s, actor=outsider, program_id=a, version_id=version),
            lambda: F.create_feed_token(s, actor=outsider, program_id=a, person_id="r01"),
            # through their own program: A's objects are not there
            lambda: get_person(s, actor=outsider, program_id=b, person_id="only-a"),
            lambda: S.get_version(s, actor=outsider, program_id=b, version_id=version),
            lambda: S.grid(
                s,
                actor=outsider,
                program_id=b,
                version_id=version,
                start=date(2026, 7, 1),
                end=date(2026, 7, 7),
            ),
        ):
            with pytest.raises(NotFound):
                call()
        assert get_person(s, actor=outsider, program_id=b, person_id="r01").id == "r01"


def test_a_resident_sees_their_own_record_and_the_active_version(
    factory: sessionmaker[Session],
) -> None:
    pid = import_small(factory)
    me, faculty = member(pid, "r01"), member(pid, "f01", Role.FACULTY)
    version = save_version(factory, pid)
    with transaction(factory) as s:
        mine = list_people(s, actor=me, program_id=pid)
        assert [p.id for p in mine.items] == ["r01"] and mine.total == 1
        assert mine.items[0].military_status == "reserve"  # their own details
        with pytest.raises(NotFound):
            get_person(s, actor=me, program_id=pid, person_id="r02")
        with pytest.raises(NotFound):
            get_person(s, actor=faculty, program_id=pid, person_id="r01")
        assert list_people(s, actor=member(pid, "nobody"), program_id=pid).total == 0
        assert (
            get_person(
                s, actor=coordinator(pid), program_id=pid, person_id="r01"
            ).accommodation_notes
            == "no nights after 22:00"
        )
        assert list_absences(s, actor=me, program_id=pid).total == 0
        theirs = list_absences(s, actor=member(pid, "r03"), program_id=pid).items
        assert [(a.person_id, a.leave_type) for a in theirs] == [("r03", "vacation")]
        with pytest.raises(NotFound):
            get_absence(s, actor=me, program_id=pid, absence_id="a0001")
        with pytest.raises(Forbidden):
            create_person(
                s,
                actor=me,
                program_id=pid,
                data=PersonCreate(id="x", name="X", kind=PersonKind.FACULTY),
            )
        with pytest.raises(Forbidden):
            list_rotations(s, actor=me, program_id=pid)
        with pytest.raises(Forbidden):
            create_request(
                s,
                actor=me,
                program_id=pid,
                data=RequestCreate(person_id="r02", day=date(2026, 7, 10), wants=False),
            )
        own = create_request(
            s,
            actor=me,
            program_id=pid,
            data=RequestCreate(person_id="r01", day=date(2026, 7, 10), wants=False),
        )
        assert [r.id for r in list_requests(s, actor=me, program_id=pid).items] == [own.id]
        assert list_shift_types(s, actor=me, program_id=pid).total == 7

        for call in (
            lambda: S.get_version(s, actor=me, program_id=pid, version_id=version),
            lambda: S.grid(
                s,
                actor=me,
                program_id=pid,
                version_id=version,
                start=date(2026, 7, 1),
                end=date(2026, 7, 7),
            ),
            lambda: S.export_csv(s, actor=me, program_id=pid, version_id=version),
        ):
            with pytest.raises(NotFound):  # a draft is not theirs to read
                call()
        assert S.list_versions(s, actor=me, program_id=pid).total == 0
        assert (
            S.active_version(
                s, actor=me, program_id=pid, start=date(2026, 7, 1), end=date(2026, 7, 28)
            )
            is None
        )
    activate(factory, version)
    with factory() as s:
        assert S.get_version(s, actor=me, program_id=pid, version_id=version).status == "active"
        found = S.active_version(
            s, actor=me, program_id=pid, start=date(2026, 7, 27), end=date(2026, 8, 30)
        )
        assert found is not None and found.id == version
        assert (
            S.active_version(
                s, actor=me, program_id=pid, start=date(2026, 8, 1), end=date(2026, 8, 30)
            )
            is None
        )
        week = S.grid(
            s,
            actor=me,
            program_id=pid,
            version_id=version,
            start=date(2026, 7, 1),
            end=date(2026, 7, 7),
        )
        assert len(week.days) == 7 and len(week.rows) == 16
        assert sum(len(c) for r in week.rows for c in r.cells) > 0


def test_the_grid_puts_each_shift_on_its_day_in_start_order(
    factory: sessionmaker[Session],
) -> None:
    pid = import_small(factory)
    chosen = some_assignments(factory, pid)
    version = save_version(factory, pid)
    admin = Actor(user_id="root", is_admin=True)
    with factory() as s:
        slots = {r.id: r for r in s.scalars(select(SlotRow).where(SlotRow.program_id == pid))}
        full = S.grid(s, actor=admin, program_id=pid, version_id=version)
    expected: dict[tuple[str, date], list[str]] = {}
    for a in sorted(chosen, key=lambda a: (slots[a.slot_id].start, a.slot_id)):
        expected.setdefault((a.person_id, slots[a.slot_id].day), []).append(
            slots[a.slot_id].shift
        )
    found = {
        (row.person_id, day): cell
        for row in full.rows
        for day, cell in zip(full.days, row.cells, strict=True)
        if cell
    }
    assert found == expected and len(found) > 0
    # a slot that moved to another day after the version was written stays where the
    # version put it (the assignment's day), and is not lost
    moved = chosen[0]
    with transaction(factory) as s:
        s.execute(
            update(SlotRow)
            .where(SlotRow.program_id == pid, SlotRow.id == moved.slot_id)
            .values(day=date(2030, 1, 1))
        )
    with factory() as s:
        again = S.grid(s, actor=admin, program_id=pid, version_id=version)
    assert again.rows == full.rows


# ------------------------------------------------------------------------ versions


def save_version(factory: sessionmaker[Session], program_id: str) -> str:
    with transaction(factory) as s:
        return S.save_draft(
            s,
            actor=coordinator(program_id),
            program_id=program_id,
            assignments=some_assignments(factory, program_id),
            report_summary={"algorithm": "test", "status": "feasible"},
        )


def test_drafts_are_hashed_listed_and_exported(factory: sessionmaker[Session]) -> None:
    pid = import_small(factory)
    coord = coordinator(pid)
    chosen = some_assignments(factory, pid)
    with transaction(factory) as s:
        first = S.save_draft(
            s, actor=coord, program_id=pid, assignments=chosen, report_summary={"algorithm": "test"}
        )
        second = S.save_draft(
            s,
            actor=coord,
            program_id=pid,
            assignments=reversed(chosen * 2),
            report_summary={},
            run_id="run-1",
        )
        with pytest.raises(InvalidInput) as unknown:
            S.save_draft(
                s,
                actor=coord,
                program_id=pid,
                report_summary={},
                assignments=[Assignment(person_id="ghost", slot_id="NOPE")],
            )
        assert {e.path for e in unknown.value.errors} == {
            "assignments[0].person",
            "assignments[0].slot",
        }
    with factory() as s:
        v1 = S.get_version(s, actor=coord, program_id=pid, version_id=first)
        v2 = S.get_version(s, actor=coord, program_id=pid, version_id=second)
        canonical = ",".join(
            f'["{a.person_id}","{a.slot_id}"]'
            for a in sorted(chosen, key=lambda a: (a.person_id, a.slot_id))
        )
        assert (
            v1.content_hash
            == v2.content_hash
            == hashlib.sha256(f"[{canonical}]".encode()).hexdigest()
        )
        assert (v1.status, v2.run_id, v1.created_by) == ("draft", "run-1", coord.user_id)
        assert S.list_versions(s, actor=coord, program_id=pid, limit=1).total == 2
        listed = S.assignments_list(s, actor=coord, program_id=pid, version_id=first, limit=500)
        assert listed.total == len(chosen)
        r01 = S.assignments_list(
            s,
            actor=coord,
            program_id=pid,
            version_id=first,
            person_id="r01",
            start=date(2026, 7, 2),
            end=date(2026, 7, 3),
        )
        assert r01.items and all(
            a.person_id == "r01" and date(2026, 7, 2) <= a.day <= date(2026, 7, 3)
            for a in r01.items
        )
        document = S.export_json(s, actor=coord, program_id=pid, version_id=first)
        assert document["format"] == "rsched.schedule/1"
        assert len(document["assignments"]) == len(chosen)
        assert document["summary"]["algorithm"] == "test"
        csv_text = S.export_csv(s, actor=coord, program_id=pid, version_id=first)
        assert len(csv_text.strip().splitlines()) == len(chosen) + 1


# ------------------------------------------------------------------- query counts


def test_reads_take_a_fixed_number_of_queries_whatever_the_size(
    factory: sessionmaker[Session],
) -> None:
    small = import_small(factory)
    with transaction(factory) as s:
        big = import_program(s, actor=ADMIN, mapping=generate_program("medium", 2))
    versions = {}
    for pid in (small, big):
        with transaction(factory) as s:
            data = load_program_data(s, pid)
            everyone = [
                Assignment(person_id=p.id, slot_id=slot.id)
                for slot in data.slots
                for p in data.residents()
            ]
            versions[pid] = S.save_draft(
                s, actor=ADMIN, program_id=pid, assignments=everyone, report_summary={}
            )
    with factory() as s:
        sizes = {
            pid: S.assignments_list(s, actor=ADMIN, program_id=pid, version_id=versions[pid]).total
            for pid in (small, big)
        }
        people = {pid: list_people(s, actor=ADMIN, program_id=pid).total for pid in (small, big)}
    assert sizes[big] > 3 * sizes[small] and people[big] == 3 * people[small]

    def per_program(call: Callable[[Session, str], Any]) -> set[int]:
        return {counted(factory, lambda s, pid=pid: call(s, pid)) for pid in (small, big)}

    assert per_program(lambda s, pid: load_program_data(s, pid)) == {8}
    for call in (
        lambda s, pid: list_people(s, actor=ADMIN, program_id=pid, limit=500),
        lambda s, pid: list_shift_types(s, actor=ADMIN, program_id=pid),
        lambda s, pid: list_rotations(s, actor=ADMIN, program_id=pid),
        lambda s, pid: list_slot_patterns(s, actor=ADMIN, program_id=pid, limit=500),
        lambda s, pid: list_absences(s, actor=ADMIN, program_id=pid, limit=500),
        lambda s, pid: list_requests(s, actor=ADMIN, program_id=pid, limit=500),
        lambda s, pid: S.list_versions(s, actor=ADMIN, program_id=pid),
        lambda s, pid: S.assignments_list(
            s, actor=ADMIN, program_id=pid, version_id=versions[pid], limit=500
        ),
        lambda s, pid: S.grid(
            s,
            actor=ADMIN,
            program_id=pid,
            version_id=versions[pid],
            start=date(2026, 7, 1),
            end=date(2026, 7, 28),
        ),
    ):
        assert len(per_program(call)) == 1


# --------------------------------------------------------------------- feed tokens


def test_feed_tokens_store_only_a_hash_and_revocation_holds(
    factory: sessionmaker[Session],
) -> None:
    pid = import_small(factory)
    me = member(pid, "r01")
    version = save_version(factory, pid)
    with transaction(factory) as s:
        token = F.create_feed_token(s, actor=me, program_id=pid, person_id="r01")
        with pytest.raises(NotFound):
            F.create_feed_token(s, actor=me, program_id=pid, person_id="r02")
        other = F.create_feed_token(s, actor=coordinator(pid), program_id=pid, person_id="r02")
    with factory() as s:
        stored = s.scalars(select(FeedTokenRow)).all()
        assert {r.token_hash for r in stored} == {
            hashlib.sha256(t.encode()).hexdigest() for t in (token, other)
        }
        assert not any(
            token in str(getattr(r, c.key)) for r in stored for c in FeedTokenRow.__table__.columns
        )
        assert "BEGIN:VEVENT" not in F.calendar_by_feed_token(s, token)  # nothing active yet
    activate(factory, version)
    expected = sum(1 for a in some_assignments(factory, pid) if a.person_id == "r01")
    with factory() as s:
        feed = F.calendar_by_feed_token(s, token)
    assert feed.startswith("BEGIN:VCALENDAR") and feed.count("BEGIN:VEVENT") == expected > 0
    with transaction(factory) as s:
        assert F.revoke_feed_token(s, actor=me, program_id=pid, person_id="r01") == 1
    with factory() as s:
        with pytest.raises(NotFound):
            F.calendar_by_feed_token(s, token)
        with pytest.raises(NotFound):
            F.calendar_by_feed_token(s, "not-a-token")
        assert "BEGIN:VEVENT" in F.calendar_by_feed_token(s, other)
