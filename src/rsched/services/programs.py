"""Programs: import a program file.

A new program is imported by an admin only; an existing program id is refused (there is
no replace: people and slots are referred to by immutable schedule versions, so a
program is changed record by record, not wiped and re-imported: see ``people``,
``shift_types``, ``rotations``, ``slot_patterns``, ``absences`` and ``requests``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from rsched.db import mapping as m
from rsched.db.models import ProgramRow, SlotPatternRow
from rsched.domain import FieldError, InvalidInput, ProgramData
from rsched.programfile.loader import parse_program
from rsched.programfile.schema import SlotPatternSpec
from rsched.services.access import Actor, Forbidden, Need, authorize

ID_WIDTH, NAME_WIDTH = 64, 200


class BackupGuard(Protocol):
    """What an import needs of the backup service (``BackupService`` satisfies it)."""

    def ensure_recent(self, *, program_id: str, reason: str) -> str: ...


def import_program(
    session: Session, *, actor: Actor, mapping: Any, backups: BackupGuard | None = None
) -> str:
    """Write a whole program file (a parsed mapping) in the caller's transaction; its id.

    The mapping is checked by ``parse_program`` (the CLI's checks, every error at once)
    before anything is written; nothing is written when any check fails. With
    ``backups`` (a bulk change), a recent backup must exist or be made before the first
    write; a failed backup blocks the import."""
    if not actor.is_admin:
        raise Forbidden("only an admin may import a new program")
    data = parse_program(mapping)
    authorize(actor, data.program.id, Need.ADMIN)
    errors = _width_errors(data)
    if errors:
        raise InvalidInput(errors)
    if session.get(ProgramRow, data.program.id) is not None:
        raise InvalidInput(FieldError("program.id", f"program {data.program.id!r} already exists"))
    if backups is not None:
        backups.ensure_recent(program_id=data.program.id, reason="import")
    patterns = [
        SlotPatternRow(
            program_id=data.program.id,
            id=f"pattern-{i + 1}",
            spec=SlotPatternSpec.model_validate(raw).model_dump(mode="json", by_alias=True),
        )
        for i, raw in enumerate(mapping.get("slot_patterns") or ())
    ]
    stages = m.program_rows(data)
    session.add(m.program_row(data, created_at=datetime.now(UTC)))
    try:
        session.flush()
    except IntegrityError as exc:  # another transaction created it meanwhile
        raise InvalidInput(
            FieldError("program.id", f"program {data.program.id!r} already exists")
        ) from exc
    for rows in [stages[0] + patterns, *stages[1:]]:
        session.add_all(rows)
        session.flush()
    return data.program.id


def _width_errors(data: ProgramData) -> list[FieldError]:
    """Ids and names wider than their columns (the file format sets no width)."""
    checks: list[tuple[str, str, int]] = [
        ("program.id", data.program.id, ID_WIDTH),
        ("program.name", data.program.name, NAME_WIDTH),
        ("program.timezone", data.program.timezone, ID_WIDTH),
    ]
    for section, records, key in (
        ("people", data.people, "id"),
        ("shift_types", data.shift_types, "code"),
        ("rotations", data.rotations, "id"),
        ("slots", data.slots, "id"),
        ("absences", data.absences, "id"),
        ("requests", data.requests, "id"),
    ):
        for i, record in enumerate(records):
            checks.append((f"{section}[{i}].{key}", getattr(record, key), ID_WIDTH))
            if hasattr(record, "name"):
                checks.append((f"{section}[{i}].name", record.name, NAME_WIDTH))
    return [
        FieldError(path, f"must be at most {width} characters")
        for path, value, width in checks
        if len(value) > width
    ]
