"""Schedule versions: save a draft, read versions, the people × days grid, assignment
lists and exports (calendar feeds: :mod:`rsched.services.feeds`).

A version is immutable once written: its assignments and their content hash (SHA-256 of
the canonical, sorted ``[person, slot]`` pairs) never change. A version becomes
``active`` only through publishing (a service of its own); nothing here changes a status.

Faculty and residents read only active versions; any other version answers NotFound to
them.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from rsched.db import mapping as m
from rsched.db.models import (
    AssignmentRow,
    PersonRow,
    ScheduleVersionRow,
    SlotRow,
)
from rsched.domain import (
    Assignment,
    AssignmentSource,
    FieldError,
    InvalidInput,
    NotFound,
    PersonKind,
    ScheduleStatus,
)
from rsched.interchange.csv_export import schedule_csv
from rsched.interchange.schedule_json import export_schedule
from rsched.services.access import Actor, Need
from rsched.services.schemas import AssignmentPublic, Grid, GridRow, Page, VersionPublic
from rsched.services.scope import Viewer, page, viewer

MAX_GRID_DAYS = 366


def content_hash(pairs: Iterable[tuple[str, str]]) -> str:
    """SHA-256 of the sorted, distinct ``[person, slot]`` pairs as compact JSON."""
    canonical = json.dumps(sorted(set(pairs)), separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _public(row: ScheduleVersionRow) -> VersionPublic:
    return VersionPublic(
        id=row.id,
        program_id=row.program_id,
        start=row.start,
        end=row.end,
        status=ScheduleStatus(row.status),
        run_id=row.run_id,
        content_hash=row.content_hash,
        report=row.report or {},
        created_at=m.as_utc(row.created_at),
        created_by=row.created_by,
    )


def _version(session: Session, view: Viewer, version_id: str) -> ScheduleVersionRow:
    """The version if the viewer may read it: coordinators any, others the active ones."""
    row = session.get(ScheduleVersionRow, version_id)
    if (
        row is None
        or row.program_id != view.program.id
        or (not view.manages and row.status != ScheduleStatus.ACTIVE)
    ):
        raise NotFound(f"schedule version {version_id!r} not found")
    return row


def _assignments(session: Session, program_id: str, version_id: str) -> list[Assignment]:
    rows = session.execute(
        select(AssignmentRow.person_id, AssignmentRow.slot_id, AssignmentRow.source).where(
            AssignmentRow.program_id == program_id, AssignmentRow.version_id == version_id
        )
    )
    return [
        Assignment(person_id=p, slot_id=s, source=AssignmentSource(source)) for p, s, source in rows
    ]


# ------------------------------------------------------------------------ versions


def save_draft(
    session: Session,
    *,
    actor: Actor,
    program_id: str,
    assignments: Iterable[Assignment],
    report_summary: Mapping[str, Any],
    run_id: str | None = None,
) -> str:
    """Store ``assignments`` as a new draft version over the program's horizon; its id."""
    view = viewer(session, actor, program_id, Need.MANAGE)
    chosen = sorted(set(assignments))
    people = set(session.scalars(select(PersonRow.id).where(PersonRow.program_id == program_id)))
    slot_day = {
        sid: day
        for sid, day in session.execute(
            select(SlotRow.id, SlotRow.day).where(SlotRow.program_id == program_id)
        )
    }
    errors = [
        FieldError(f"assignments[{i}].{field}", f"unknown {field} {ref!r}")
        for i, a in enumerate(chosen)
        for field, ref, known in (("person", a.person_id, people), ("slot", a.slot_id, slot_day))
        if ref not in known
    ]
    try:
        report = json.loads(json.dumps(dict(report_summary), allow_nan=False))
    except (TypeError, ValueError) as exc:
        errors.append(FieldError("report_summary", f"must be plain JSON data ({exc})"))
    if errors:
        raise InvalidInput(errors)
    version_id = uuid.uuid4().hex
    program = view.program
    session.add(
        ScheduleVersionRow(
            id=version_id,
            program_id=program_id,
            start=program.horizon_start,
            end=program.horizon_end,
            status=ScheduleStatus.DRAFT.value,
            run_id=run_id,
            content_hash=content_hash((a.person_id, a.slot_id) for a in chosen),
            report=report,
            created_at=datetime.now(UTC),
            created_by=actor.user_id,
        )
    )
    session.flush()
    if chosen:
        session.execute(
            insert(AssignmentRow),
            [
                {
                    "program_id": program_id,
                    "version_id": version_id,
                    "person_id": a.person_id,
                    "slot_id": a.slot_id,
                    "day": slot_day[a.slot_id],
                    "source": a.source.value,
                }
                for a in chosen
            ],
        )
    return version_id


def get_version(
    session: Session, *, actor: Actor, program_id: str, version_id: str
) -> VersionPublic:
    view = viewer(session, actor, program_id, Need.READ_PUBLISHED)
    return _public(_version(session, view, version_id))


def list_versions(
    session: Session,
    *,
    actor: Actor,
    program_id: str,
    limit: int = 100,
    offset: int = 0,
    status: ScheduleStatus | None = None,
) -> Page[VersionPublic]:
    """Newest first. Faculty and residents see the active versions only."""
    view = viewer(session, actor, program_id, Need.READ_PUBLISHED)
    stmt = select(ScheduleVersionRow).where(ScheduleVersionRow.program_id == program_id)
    if not view.manages:
        stmt = stmt.where(ScheduleVersionRow.status == ScheduleStatus.ACTIVE.value)
    if status is not None:
        stmt = stmt.where(ScheduleVersionRow.status == ScheduleStatus(status).value)
    stmt = stmt.order_by(ScheduleVersionRow.created_at.desc(), ScheduleVersionRow.id)
    return page(session, stmt, limit=limit, offset=offset, convert=_public)


def active_version(
    session: Session, *, actor: Actor, program_id: str, start: date, end: date
) -> VersionPublic | None:
    """The newest active version overlapping the local days ``start``..``end``, if any."""
    viewer(session, actor, program_id, Need.READ_PUBLISHED)
    row = session.scalar(
        select(ScheduleVersionRow)
        .where(
            ScheduleVersionRow.program_id == program_id,
            ScheduleVersionRow.status == ScheduleStatus.ACTIVE.value,
            ScheduleVersionRow.start <= end,
            ScheduleVersionRow.end >= start,
        )
        .order_by(ScheduleVersionRow.created_at.desc())
        .limit(1)
    )
    return None if row is None else _public(row)


# ----------------------------------------------------------------- reading a version


def _days(start: date, end: date) -> list[date]:
    if end < start:
        raise InvalidInput(FieldError("end", f"must not be before start ({start})"))
    count = (end - start).days + 1
    if count > MAX_GRID_DAYS:
        raise InvalidInput(FieldError("end", f"at most {MAX_GRID_DAYS} days at once"))
    return [start + timedelta(days=i) for i in range(count)]


_assignment, _slot, _person = AssignmentRow.__table__.c, SlotRow.__table__.c, PersonRow.__table__.c
_GRID_ASSIGNMENTS = select(_assignment.slot_id, _assignment.person_id, _assignment.day)
_GRID_SLOTS = select(_slot.id, _slot.shift).order_by(_slot.start, _slot.id)
_GRID_PEOPLE = select(_person.id, _person.name, _person.kind, _person.pgy, _person.active)


def grid(
    session: Session,
    *,
    actor: Actor,
    program_id: str,
    version_id: str,
    start: date | None = None,
    end: date | None = None,
) -> Grid:
    """People × local days ``start``..``end`` (the version's own first and last day when
    not given): each cell holds that day's shift codes in start order. Rows: active
    people and anyone assigned in the window; residents by PGY, then faculty.

    The grid is the page every coordinator keeps open (benchmarks/api_latency.py
    measures it): a fixed number of single-table queries, each on the one index that
    fits it, joined here rather than by the database, so the plan cannot turn into a
    nested loop over every slot of the program when planner statistics are missing
    (right after an import, or with autovacuum off)."""
    view = viewer(session, actor, program_id, Need.READ_PUBLISHED)
    version = _version(session, view, version_id)
    start, end = start or version.start, end or version.end
    days = _days(start, end)
    column = {d: i for i, d in enumerate(days)}
    width = len(days)
    by_slot: dict[str, list[tuple[str, date]]] = defaultdict(list)
    for slot_id, person_id, day in session.execute(
        _GRID_ASSIGNMENTS.where(
            _assignment.program_id == program_id,
            _assignment.version_id == version_id,
            _assignment.day >= start,
            _assignment.day <= end,
        )
    ):
        by_slot[slot_id].append((person_id, day))
    slots = session.execute(
        _GRID_SLOTS.where(_slot.program_id == program_id, _slot.day >= start, _slot.day <= end)
    ).all()
    missing = by_slot.keys() - {slot_id for slot_id, _ in slots}
    if missing:  # the assignment's day is the slot's when written; should a slot move…
        slots = session.execute(
            _GRID_SLOTS.where(_slot.program_id == program_id, _slot.id.in_(by_slot.keys()))
        ).all()
    cells: dict[str, list[list[str]]] = {}
    for slot_id, shift in slots:  # by start time
        for person_id, day in by_slot.get(slot_id, ()):
            line = cells.get(person_id)
            if line is None:
                line = cells[person_id] = [[] for _ in range(width)]
            line[column[day]].append(shift)
    people = session.execute(_GRID_PEOPLE.where(_person.program_id == program_id)).all()
    shown = [p for p in people if p.active or p.id in cells]
    shown.sort(key=lambda p: (p.kind != PersonKind.RESIDENT.value, p.pgy or 0, p.id))
    # rows straight from the database's typed columns: built without re-validation
    return Grid.model_construct(
        program_id=program_id,
        version_id=version_id,
        status=ScheduleStatus(version.status),
        days=days,
        rows=[
            GridRow.model_construct(
                person_id=p.id,
                name=p.name,
                kind=PersonKind(p.kind),
                pgy=p.pgy,
                cells=cells.get(p.id) or [[] for _ in range(width)],
            )
            for p in shown
        ],
    )


def assignments_list(
    session: Session,
    *,
    actor: Actor,
    program_id: str,
    version_id: str,
    limit: int = 100,
    offset: int = 0,
    person_id: str | None = None,
    start: date | None = None,
    end: date | None = None,
) -> Page[AssignmentPublic]:
    """Assignments of a version by slot start; filters: one person, local days start..end."""
    view = viewer(session, actor, program_id, Need.READ_PUBLISHED)
    _version(session, view, version_id)
    stmt = (
        select(AssignmentRow, SlotRow)
        .join(
            SlotRow,
            (SlotRow.program_id == AssignmentRow.program_id)
            & (SlotRow.id == AssignmentRow.slot_id),
        )
        .where(AssignmentRow.program_id == program_id, AssignmentRow.version_id == version_id)
    )
    if person_id is not None:
        stmt = stmt.where(AssignmentRow.person_id == person_id)
    if start is not None:
        stmt = stmt.where(AssignmentRow.day >= start)
    if end is not None:
        stmt = stmt.where(AssignmentRow.day <= end)
    stmt = stmt.order_by(SlotRow.start, SlotRow.id, AssignmentRow.person_id)

    def convert(row: Any) -> AssignmentPublic:
        a, slot = row
        return AssignmentPublic(
            person_id=a.person_id,
            slot_id=a.slot_id,
            day=a.day,
            shift=slot.shift,
            start=m.as_utc(slot.start),
            end=m.as_utc(slot.end),
            source=a.source,
        )

    return page(session, stmt, limit=limit, offset=offset, convert=convert, whole_rows=True)


def export_json(
    session: Session, *, actor: Actor, program_id: str, version_id: str
) -> dict[str, Any]:
    """The version as an ``rsched.schedule/1`` document (re-validated by the rule engine)."""
    view = viewer(session, actor, program_id, Need.READ_PUBLISHED)
    version = _version(session, view, version_id)
    data = m.load_program_data(session, program_id)
    assignments = _assignments(session, program_id, version_id)
    return export_schedule(data, assignments, summary=version.report or {})


def export_csv(session: Session, *, actor: Actor, program_id: str, version_id: str) -> str:
    """The version as CSV, one row per assignment on the program's local clock."""
    view = viewer(session, actor, program_id, Need.READ_PUBLISHED)
    _version(session, view, version_id)
    data = m.load_program_data(session, program_id)
    return schedule_csv(data, _assignments(session, program_id, version_id))
