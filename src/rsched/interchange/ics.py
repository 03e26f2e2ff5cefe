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
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from rsched.domain import Assignment, FieldError, InvalidInput, ProgramData
from rsched.interchange.files import write_text_atomic

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
    if line.isascii():  # one octet a character: slice (most lines need no fold at all)
        if len(line) <= MAX_OCTETS:
            return line
        rest = MAX_OCTETS - 1
        return "\r\n ".join(
            [line[:MAX_OCTETS], *(line[i : i + rest] for i in range(MAX_OCTETS, len(line), rest))]
        )
    return fold_by_character(line)


def fold_by_character(line: str) -> str:
    """:func:`fold` for any text, counting each character's UTF-8 octets."""
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


@dataclass(frozen=True, slots=True)
class Event:
    """One assignment as a VEVENT, in plain values (no domain objects needed)."""

    slot_id: str
    person_id: str
    start: datetime
    end: datetime
    shift: str
    shift_name: str | None
    kind: str
    program_name: str
    stamp: datetime
    """DTSTAMP: when this information was created."""


def _summary(shift: str, name: str | None) -> str:
    return f"{name} ({shift})" if name and name != shift else shift


def _event_lines(e: Event) -> list[str]:
    minutes = int((e.end - e.start) / timedelta(minutes=1))
    hours = f"{minutes / 60:.2f}".rstrip("0").rstrip(".")
    description = f"{e.program_name}: slot {e.slot_id}, {e.kind} duty, {hours} h"
    return [
        "BEGIN:VEVENT",
        f"UID:{escape_text(f'{e.slot_id}-{e.person_id}@rsched')}",
        f"DTSTAMP:{_utc(e.stamp)}",
        f"DTSTART:{_utc(e.start)}",
        f"DTEND:{_utc(e.end)}",
        f"SUMMARY:{escape_text(_summary(e.shift, e.shift_name))}",
        f"CATEGORIES:{escape_text(e.kind)}",
        f"DESCRIPTION:{escape_text(description)}",
        "TRANSP:OPAQUE",
        "END:VEVENT",
    ]


def render_calendar(name: str, timezone: str, events: Iterable[Event]) -> str:
    """A VCALENDAR named ``name`` holding ``events`` in the order given (the one writer
    of every iCalendar text rsched produces: exported files and the HTTP feeds)."""
    lines = [
        "BEGIN:VCALENDAR",
        "VERSION:2.0",
        f"PRODID:{PRODID}",
        "CALSCALE:GREGORIAN",
        "METHOD:PUBLISH",
        f"X-WR-CALNAME:{escape_text(name)}",
        f"X-WR-TIMEZONE:{timezone}",
    ]
    for event in events:
        lines.extend(_event_lines(event))
    lines.append("END:VCALENDAR")
    return "".join(fold(line) + "\r\n" for line in lines)


def calendar_name(program_name: str, person_name: str) -> str:
    return f"{program_name}: {person_name}"


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
    names = {t.code: t.name for t in data.shift_types}
    events = (
        Event(
            slot_id=slot.id,
            person_id=person_id,
            start=slot.start,
            end=slot.end,
            shift=slot.shift,
            shift_name=names.get(slot.shift),
            kind=str(slot.kind),
            program_name=data.program.name,
            stamp=stamp,
        )
        for slot in slots
    )
    return render_calendar(
        calendar_name(data.program.name, person.name), data.program.timezone, events
    )


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
