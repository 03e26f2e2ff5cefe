"""Personal iCalendar feeds (RFC 5545), written by hand.

Every event is one assignment: UTC ``DTSTART``/``DTEND`` (``…Z``, so no VTIMEZONE is
needed and a shift across a DST change keeps its true length), a stable
``UID:{slot}-{person}@rsched`` so a re-published feed updates events instead of
duplicating them, ``SUMMARY`` with the shift name and code, ``CATEGORIES`` with the shift
kind. Lines end in CRLF and are folded at 75 octets without splitting a UTF-8 character;
text values are escaped (backslash, semicolon, comma, newline).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

from rsched.domain import Assignment, FieldError, InvalidInput, ProgramData, Slot
from rsched.interchange.schedule_json import write_text_atomic

PRODID = "-//rsched//rsched schedule//EN"
MAX_OCTETS = 75
_SAFE_NAME = re.compile(r"[A-Za-z0-9._-]+")


def escape_text(value: str) -> str:
    """An RFC 5545 TEXT value (section 3.3.11)."""
    return (
        value.replace("\\", "\\\\")
        .replace(";", "\\;")
        .replace(",", "\\,")
        .replace("\r\n", "\\n")
        .replace("\n", "\\n")
        .replace("\r", "\\n")
    )


def fold(line: str) -> str:
    """``line`` folded into CRLF-joined pieces of at most 75 octets each (a continuation
    piece starts with one space, which counts), never inside a UTF-8 sequence."""
    pieces: list[str] = []
    current: list[str] = []
    size = 0
    for char in line:
        octets = len(char.encode("utf-8"))
        if size + octets > MAX_OCTETS:
            pieces.append("".join(current))
            current, size = [" "], 1
        current.append(char)
        size += octets
    pieces.append("".join(current))
    return "\r\n".join(pieces)


def _utc(instant: datetime) -> str:
    return instant.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def _summary(data: ProgramData, slot: Slot) -> str:
    shift = data.shift_type_by_code.get(slot.shift)
    if shift is not None and shift.name and shift.name != shift.code:
        return f"{shift.name} ({shift.code})"
    return slot.shift


def _event(data: ProgramData, slot: Slot, person_id: str, stamp: datetime) -> list[str]:
    hours = f"{slot.minutes / 60:.2f}".rstrip("0").rstrip(".")
    description = f"{data.program.name}: slot {slot.id}, {slot.kind} duty, {hours} h"
    return [
        "BEGIN:VEVENT",
        f"UID:{escape_text(f'{slot.id}-{person_id}@rsched')}",
        f"DTSTAMP:{_utc(stamp)}",
        f"DTSTART:{_utc(slot.start)}",
        f"DTEND:{_utc(slot.end)}",
        f"SUMMARY:{escape_text(_summary(data, slot))}",
        f"CATEGORIES:{escape_text(str(slot.kind))}",
        f"DESCRIPTION:{escape_text(description)}",
        "TRANSP:OPAQUE",
        "END:VEVENT",
    ]


def person_calendar(
    data: ProgramData,
    assignments: Iterable[Assignment],
    person_id: str,
    *,
    stamp: datetime | None = None,
) -> str:
    """The iCalendar text of ``person_id``'s assignments (``stamp``: DTSTAMP, default now)."""
    person = data.person_by_id.get(person_id)
    if person is None:
        raise InvalidInput(FieldError("person", f"unknown person {person_id!r}"))
    stamp = (stamp or datetime.now(UTC)).replace(microsecond=0)
    mine = sorted({a.slot_id for a in assignments if a.person_id == person_id})
    unknown = [s for s in mine if s not in data.slot_by_id]
    if unknown:
        raise InvalidInput(
            [FieldError("assignments", f"unknown slot {s!r} for {person_id}") for s in unknown]
        )
    slots = sorted((data.slot_by_id[s] for s in mine), key=lambda s: (s.start, s.id))
    lines = [
        "BEGIN:VCALENDAR",
        "VERSION:2.0",
        f"PRODID:{PRODID}",
        "CALSCALE:GREGORIAN",
        "METHOD:PUBLISH",
        f"X-WR-CALNAME:{escape_text(f'{data.program.name}: {person.name}')}",
        f"X-WR-TIMEZONE:{data.program.timezone}",
    ]
    for slot in slots:
        lines.extend(_event(data, slot, person_id, stamp))
    lines.append("END:VCALENDAR")
    return "".join(fold(line) + "\r\n" for line in lines)


def file_name(person_id: str) -> str:
    """A safe, distinct file name for ``person_id``'s feed: the id itself when it is made
    of letters, digits, ``.``, ``_`` and ``-`` only; otherwise a cleaned form plus a hash."""
    if _SAFE_NAME.fullmatch(person_id) and not person_id.startswith("."):
        return f"{person_id}.ics"
    cleaned = re.sub(r"[^A-Za-z0-9_-]+", "_", person_id).strip("_")[:40] or "person"
    digest = hashlib.sha256(person_id.encode("utf-8")).hexdigest()[:10]
    return f"{cleaned}-{digest}.ics"


def write_calendars(
    data: ProgramData,
    assignments: Iterable[Assignment],
    folder: str | os.PathLike[str],
    *,
    stamp: datetime | None = None,
) -> list[Path]:
    """One ``.ics`` per person (people without assignments get an empty calendar), each
    written atomically into ``folder`` (created if missing). Returns the paths written."""
    target = Path(folder)
    target.mkdir(parents=True, exist_ok=True)
    chosen = list(assignments)
    stamp = stamp or datetime.now(UTC)
    return [
        write_text_atomic(
            target / file_name(p.id), person_calendar(data, chosen, p.id, stamp=stamp)
        )
        for p in data.people
    ]
