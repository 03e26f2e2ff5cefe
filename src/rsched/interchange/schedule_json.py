"""The JSON interchange file ``rsched.schedule/1`` (see docs/DOMAIN.md).

Export and import both read the tables of :mod:`rsched.interchange.schedule_format`
(one per record kind: file keys, record attributes, checks, defaults), so the format is
written down once. The required keys of the format
come first; the extra keys (allowed by it) make the round trip lossless and let anyone
re-validate fully: slot staffing details, people's tags/active/name, absence ids, the rule
settings, shift types, rotations, blocks and requests. Sensitive fields
(``military_status``, ``accommodation_notes``, ``leave_type``) are in no table, so they
are never written; an imported absence's leave type is ``unspecified``.

Datetimes are written in the program's local offset; imported ones are normalised to UTC.
Import checks the whole document and raises one :class:`InvalidInput` naming every problem
with its path (``slots[3].start: …``); nothing is partially imported.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Mapping
from datetime import date, datetime, time
from enum import Enum
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from rsched.domain import (
    Absence,
    Assignment,
    FieldError,
    InvalidInput,
    ObjectiveWeights,
    Period,
    Person,
    Program,
    ProgramData,
    ProgramSettings,
    Request,
    Rotation,
    RotationAssignment,
    RuleSettings,
    ShiftKind,
    ShiftType,
    Slot,
)
from rsched.domain.calendar import zone
from rsched.interchange.files import read_document, write_text_atomic
from rsched.interchange.schedule_format import (
    ABSENCE,
    ASSIGNMENT,
    BAD,
    FORMAT,
    PERIOD,
    PERSON,
    PROGRAM,
    REQUEST,
    REQUIRED,
    ROTATION,
    ROTATION_ASSIGNMENT,
    SHIFT_TYPE,
    SLOT,
    SUMMARY,
    UNSPECIFIED_LEAVE,
    Key,
)
from rsched.rules.report import ValidationReport, validate

# ----------------------------------------------------------------------------- export


def export_schedule(
    data: ProgramData,
    assignments: Iterable[Assignment],
    *,
    summary: Mapping[str, Any] | None = None,
    report: ValidationReport | None = None,
) -> dict[str, Any]:
    """The interchange document of ``assignments`` on ``data``.

    ``summary`` supplies ``algorithm``, ``status`` and ``objective`` (and any extra keys);
    the counts and coverage always come from the validator (``report`` if it was already
    computed for these assignments, else a fresh validation), so the file never claims
    figures its content contradicts.
    """
    tz = data.tz
    chosen = sorted(set(assignments))
    report = report if report is not None else validate(data, chosen)

    def rows(table: tuple[Key, ...], records: Iterable[Any]) -> list[dict[str, Any]]:
        return [{k.key: _out(getattr(x, k.name), tz) for k in table} for x in records]

    return {
        "format": FORMAT,
        "program": rows(PROGRAM, [data.program])[0],
        "horizon": {"start": data.start.isoformat(), "end": data.end.isoformat()},
        "periods": rows(PERIOD, data.periods),
        "people": rows(PERSON, data.people),
        "absences": rows(ABSENCE, data.absences),
        "slots": rows(SLOT, data.slots),
        "assignments": rows(ASSIGNMENT, chosen),
        "summary": _summary_out(summary, report),
        "settings": {
            "rules": data.program.settings.rules.to_dict(),
            "weights": data.program.settings.weights.to_dict(),
        },
        "shift_types": rows(SHIFT_TYPE, data.shift_types),
        "rotations": rows(ROTATION, data.rotations),
        "rotation_assignments": rows(ROTATION_ASSIGNMENT, data.rotation_assignments),
        "blocks": rows(PERIOD, data.blocks),
        "requests": rows(REQUEST, data.requests),
    }


def _out(value: Any, tz: ZoneInfo) -> Any:
    """A record attribute as plain JSON data (datetimes in the program's local offset)."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, datetime):
        return value.astimezone(tz).isoformat()
    if isinstance(value, date | time):
        return value.isoformat()
    if isinstance(value, frozenset | set):
        return sorted(value)
    if isinstance(value, Mapping):
        return {str(k): value[k] for k in sorted(value)}
    return value


def _summary_out(given: Mapping[str, Any] | None, report: ValidationReport) -> dict[str, Any]:
    extra = dict(given or {})
    figures = report.summary()
    out: dict[str, Any] = {
        "algorithm": extra.get("algorithm"),
        "status": extra.get("status"),
        "objective": extra.get("objective", report.objective),
        "violations": len(report.violations),
        "warnings": len(report.warnings),
        "coverage": figures["coverage"],
        "violations_by_rule": figures["violations_by_rule"],
        "warnings_by_rule": figures["warnings_by_rule"],
    }
    out.update((k, v) for k, v in extra.items() if k not in out)
    try:
        json.dumps(out, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(FieldError("summary", f"must be plain JSON data ({exc})")) from exc
    return out


# ----------------------------------------------------------------------------- import

Fill = Callable[[str, dict[str, Any]], bool]
"""Completes or checks the fields of one record before it is built; False drops it."""


class _Reader:
    """Reads a document and collects every problem with its path."""

    def __init__(self, doc: Mapping[str, Any]) -> None:
        self.doc = doc
        self.errors: list[FieldError] = []
        self.known: dict[str, set[Any]] = {}
        """list key → ids of its records read so far (the targets of ``Key.ref``)."""

    def fail(self, path: str, message: str) -> None:
        self.errors.append(FieldError(path, message))

    def section(self, key: str) -> Mapping[str, Any] | None:
        """A required object of the document."""
        if key not in self.doc:
            self.fail(key, "required")
        elif isinstance(self.doc[key], dict):
            return dict(self.doc[key])
        else:
            self.fail(key, "must be an object")
        return None

    def read(self, path: str, m: Mapping[str, Any], table: tuple[Key, ...]) -> dict[str, Any]:
        """attribute → checked value (``BAD`` where a check failed)."""
        out: dict[str, Any] = {}
        for k in table:
            value = BAD
            if k.key in m:
                try:
                    value = k.parse(m[k.key])
                except ValueError as exc:
                    self.fail(f"{path}.{k.key}", str(exc))
            elif k.default is REQUIRED:
                self.fail(f"{path}.{k.key}", "required")
            else:
                value = k.default(out) if callable(k.default) else k.default
            if k.ref and value is not BAD and value not in self.known.get(k.ref, ()):
                self.fail(f"{path}.{k.key}", f"unknown {k.key} {value!r}")
                value = BAD
            out[k.name] = value
        return out

    def build(self, path: str, cls: Callable[..., Any], fields: dict[str, Any]) -> Any:
        """``cls(**fields)`` unless a field failed; the record's own checks become errors
        at ``path`` (``slots[S1].min`` from the record is reported as ``slots[3].min``)."""
        if any(v is BAD for v in fields.values()):
            return None
        try:
            return cls(**fields)
        except InvalidInput as exc:
            for e in exc.errors:
                where = path + e.path.split("]", 1)[1] if "]" in e.path else e.path
                self.fail(where, e.message)
            return None

    def records(
        self,
        key: str,
        table: tuple[Key, ...],
        cls: Callable[..., Any],
        *,
        unique: tuple[str, ...] = (),
        required: bool = False,
        fill: Fill | None = None,
    ) -> list[Any]:
        """The records of list ``key``; no two may agree on all of ``unique``."""
        if key not in self.doc:
            if required:
                self.fail(key, "required")
            return []
        if not isinstance(self.doc[key], list):
            self.fail(key, "must be a list")
            return []
        built: list[Any] = []
        seen: dict[tuple[Any, ...], str] = {}
        declared: set[Any] = set()
        """Ids named by the items, valid or not: a reference to a broken record is not
        reported again as unknown."""
        for i, item in enumerate(self.doc[key]):
            path = f"{key}[{i}]"
            if not isinstance(item, dict):
                self.fail(path, "must be an object")
                continue
            fields = self.read(path, item, table)
            if len(unique) == 1:
                declared.add(fields[unique[0]])
            if fill is not None and not fill(path, fields):
                continue
            record = self.build(path, cls, fields)
            if record is None:
                continue
            ident = tuple(getattr(record, a) for a in unique)
            if unique and ident in seen:
                self.fail(path, f"duplicate of {seen[ident]} ({', '.join(map(str, ident))})")
                continue
            seen[ident] = path
            built.append(record)
        if len(unique) == 1:
            self.known[key] = declared - {BAD}
        return built


def import_schedule(mapping: Any) -> tuple[ProgramData, list[Assignment], dict[str, Any]]:
    """The program data, assignments (file order) and summary of an interchange document."""
    if not isinstance(mapping, dict):
        raise InvalidInput(FieldError("", "an interchange document must be a JSON object"))
    r = _Reader(mapping)
    if "format" not in mapping:
        r.fail("format", "required")
    elif mapping["format"] != FORMAT:
        r.fail("format", f"must be {FORMAT!r} (got {mapping['format']!r})")
    horizon = r.section("horizon")
    span = r.read("horizon", horizon, PERIOD) if horizon is not None else {}
    if not _ordered(r, "horizon", span):
        span = {}
    program = _program(r, span.get("start"))
    periods = r.records("periods", PERIOD, Period, required=True, fill=_ordered_fill(r))
    blocks = r.records("blocks", PERIOD, Period, fill=_ordered_fill(r))
    r.known["blocks"] = set(range(1, len(blocks) + 1))
    types = r.records("shift_types", SHIFT_TYPE, ShiftType, unique=("code",))
    type_of = {t.code: t for t in types}

    def slot_hours(path: str, f: dict[str, Any]) -> bool:
        if f["counts_toward_hours"] is None and BAD not in (f["shift"], f["kind"]):
            known = type_of.get(f["shift"])
            counts = known.counts_toward_hours if known else f["kind"] is not ShiftKind.HOME_CALL
            f["counts_toward_hours"] = counts
        return True

    def absence_id(path: str, f: dict[str, Any]) -> bool:
        f.update(id=f["id"] or path, leave_type=UNSPECIFIED_LEAVE)
        return True

    people = r.records("people", PERSON, Person, unique=("id",), required=True)
    slots = r.records("slots", SLOT, Slot, unique=("id",), required=True, fill=slot_hours)
    absences = r.records(
        "absences", ABSENCE, Absence, unique=("id",), required=True, fill=absence_id
    )
    rotations = r.records("rotations", ROTATION, Rotation, unique=("id",))
    rotation_assignments = r.records(
        "rotation_assignments",
        ROTATION_ASSIGNMENT,
        RotationAssignment,
        unique=("person_id", "block"),
    )
    requests = r.records("requests", REQUEST, Request, unique=("id",))
    assignments = r.records(
        "assignments", ASSIGNMENT, Assignment, unique=("person_id", "slot_id"), required=True
    )
    summary = r.section("summary")
    if summary is not None:
        r.read("summary", summary, SUMMARY)
    if r.errors or program is None or not span:
        raise InvalidInput(r.errors or [FieldError("", "invalid document")])
    data = ProgramData(
        program=program,
        start=span["start"],
        end=span["end"],
        periods=tuple(periods),
        people=tuple(people),
        slots=tuple(slots),
        shift_types=tuple(types),
        rotations=tuple(rotations),
        rotation_assignments=tuple(rotation_assignments),
        blocks=tuple(blocks),
        absences=tuple(absences),
        requests=tuple(requests),
    )
    return data, assignments, dict(summary or {})


def _ordered(r: _Reader, path: str, fields: dict[str, Any]) -> bool:
    """A span whose dates were read and whose start is not after its end."""
    if BAD in fields.values() or not fields:
        return False
    if fields["start"] > fields["end"]:
        r.fail(f"{path}.end", "must be on or after start")
        return False
    return True


def _ordered_fill(r: _Reader) -> Fill:
    return lambda path, fields: _ordered(r, path, fields)


def _program(r: _Reader, horizon_start: date | None) -> Program | None:
    m = r.section("program")
    if m is None:
        return None
    fields = r.read("program", m, PROGRAM)
    if fields["timezone"] is not BAD:
        try:
            zone(fields["timezone"], "program.timezone")
        except InvalidInput as exc:
            r.errors.extend(exc.errors)
            fields["timezone"] = BAD
    if fields["academic_year_start"] is None:  # the latest July 1 on or before the horizon
        day = horizon_start
        fields["academic_year_start"] = (
            BAD if day is None else date(day.year if day.month >= 7 else day.year - 1, 7, 1)
        )
    parts: dict[str, Any] = {}
    given = r.doc.get("settings", {})
    if not isinstance(given, dict):
        r.fail("settings", "must be an object")
        given = {}
    for key, cls in (("rules", RuleSettings), ("weights", ObjectiveWeights)):
        part = given.get(key, {})
        if not isinstance(part, dict):
            r.fail(f"settings.{key}", "must be an object")
            continue
        try:
            parts[key] = cls.from_dict(part)
        except InvalidInput as exc:
            r.errors.extend(exc.errors)
    fields["settings"] = ProgramSettings(**parts)
    result: Program | None = r.build("program", Program, fields)
    return result


# ----------------------------------------------------------------------------- files


def dump(document: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write an interchange document (from :func:`export_schedule`) to ``path`` atomically."""
    text = json.dumps(document, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    return write_text_atomic(path, text)


def load(path: str | os.PathLike[str]) -> tuple[ProgramData, list[Assignment], dict[str, Any]]:
    """:func:`import_schedule` of the file at ``path`` (errors name the file)."""
    document = read_document(path)
    try:
        return import_schedule(document)
    except InvalidInput as exc:
        raise InvalidInput(exc.errors, source=str(path)) from exc
