"""CSV export: one row per assignment, times on the program's local clock (DST-correct).

The date is the local day the shift starts; the end time carries its own date when the
shift ends on a later local day. ``hours`` is the true length of the shift (UTC
arithmetic), so a 12-hour night across the autumn change ends at 06:00 and still counts 12.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

from rsched.domain import Assignment, FieldError, InvalidInput, ProgramData
from rsched.interchange.files import write_text_atomic

COLUMNS = (
    "person",
    "person_kind",
    "pgy",
    "slot",
    "shift",
    "kind",
    "date",
    "start",
    "end",
    "hours",
    "source",
)


def _hours(minutes: int) -> str:
    """Hours with at most two decimals and no trailing zeros (``12``, ``7.5``)."""
    return f"{minutes / 60:.2f}".rstrip("0").rstrip(".")


def rows(data: ProgramData, assignments: Iterable[Assignment]) -> list[dict[str, str]]:
    """The CSV rows, ordered by slot start, slot id and person id."""
    tz = data.tz
    chosen = sorted(set(assignments))
    errors = [
        FieldError(f"assignments[{i}]", f"unknown {what} {ref!r}")
        for i, a in enumerate(chosen)
        for what, ref, known in (
            ("person", a.person_id, data.person_by_id),
            ("slot", a.slot_id, data.slot_by_id),
        )
        if ref not in known
    ]
    if errors:
        raise InvalidInput(errors)
    out: list[tuple[datetime, str, str, dict[str, str]]] = []
    for a in chosen:
        person = data.person_by_id[a.person_id]
        slot = data.slot_by_id[a.slot_id]
        start, end = slot.start.astimezone(tz), slot.end.astimezone(tz)
        end_text = end.strftime("%H:%M")
        if end.date() != start.date():
            end_text = f"{end.date().isoformat()} {end_text}"
        row = {
            "person": person.id,
            "person_kind": str(person.kind),
            "pgy": "" if person.pgy is None else str(person.pgy),
            "slot": slot.id,
            "shift": slot.shift,
            "kind": str(slot.kind),
            "date": start.date().isoformat(),
            "start": start.strftime("%H:%M"),
            "end": end_text,
            "hours": _hours(slot.minutes),
            "source": str(a.source),
        }
        out.append((slot.start, slot.id, person.id, row))
    out.sort(key=lambda item: item[:3])
    return [row for *_, row in out]


def schedule_csv(data: ProgramData, assignments: Iterable[Assignment]) -> str:
    """The whole CSV text (header row first, RFC 4180 CRLF line endings)."""
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows(rows(data, assignments))
    return buffer.getvalue()


def write_csv(
    data: ProgramData, assignments: Iterable[Assignment], path: str | os.PathLike[str]
) -> Path:
    """Write :func:`schedule_csv` to ``path`` atomically."""
    return write_text_atomic(path, schedule_csv(data, assignments))
