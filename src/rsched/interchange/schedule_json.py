"""The JSON interchange file ``rsched.schedule/1`` (see docs/DOMAIN.md).

One table per record kind (:data:`PERSON`, :data:`SLOT`, …) lists the file keys, the
record attributes they hold, how to check them and their default; export and import both
read these tables, so the format is written down once. The required keys of the format
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

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from enum import Enum, StrEnum
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from rsched.domain import (
    Absence,
    Assignment,
    AssignmentSource,
    FieldError,
    InvalidInput,
    ObjectiveWeights,
    Period,
    Person,
    PersonKind,
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
from rsched.rules.report import ValidationReport, validate

FORMAT = "rsched.schedule/1"
SUMMARY_KEYS = ("algorithm", "status", "objective", "violations", "warnings", "coverage")
UNSPECIFIED_LEAVE = "unspecified"
"""Leave type of an imported absence: the real one is sensitive and never exported."""

Parser = Callable[[Any], Any]
_BAD: Any = object()
"""A value that failed its check (its error is already recorded)."""
_REQUIRED: Any = object()

# ------------------------------------------------------------------------ value checks


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("must be a non-empty string")
    return value


def _string(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("must be a string")
    return value


def _opt(parse: Parser) -> Parser:
    return lambda value: None if value is None else parse(value)


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("must be true or false")
    return value


def _whole(lo: int) -> Parser:
    def parse(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < lo:
            raise ValueError(f"must be a whole number ≥ {lo}")
        return value

    return parse


def _number(value: Any) -> float | int:
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        raise ValueError("must be a number")
    return value


def _iso(kind: Callable[[str], Any], message: str) -> Parser:
    def parse(value: Any) -> Any:
        try:
            if isinstance(value, str):
                return kind(value)
        except ValueError:
            pass
        raise ValueError(message)

    return parse


_day = _iso(date.fromisoformat, "must be an ISO date (YYYY-MM-DD)")
_clock = _iso(time.fromisoformat, "must be an ISO time (HH:MM[:SS])")
_local = _iso(datetime.fromisoformat, "must be an ISO datetime with offset")


def _instant(value: Any) -> datetime:
    parsed: datetime = _local(value)
    if parsed.utcoffset() is None:
        raise ValueError("must be an ISO datetime with offset")
    return parsed.astimezone(UTC)


def _choice(enum: type[StrEnum]) -> Parser:
    def parse(value: Any) -> Any:
        try:
            return enum(value)
        except ValueError:
            raise ValueError("must be one of " + ", ".join(e.value for e in enum)) from None

    return parse


def _texts(value: Any) -> frozenset[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ValueError("must be a list of non-empty strings")
    return frozenset(value)


def _levels(value: Any) -> frozenset[int]:
    if not isinstance(value, list) or not all(
        isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 7 for v in value
    ):
        raise ValueError("must be a list of PGY levels 1..7")
    return frozenset(value)


def _level_map(least: int) -> Parser:
    def parse(value: Any) -> dict[int, int]:
        if not isinstance(value, dict):
            raise ValueError("must be an object mapping a PGY level (0..7) to a number")
        out: dict[int, int] = {}
        for key, count in value.items():
            if not (isinstance(key, str) and key.isdigit() and int(key) <= 7):
                raise ValueError(f"key {key!r} must be a PGY level 0..7")
            out[int(key)] = _whole(least)(count)
        return out

    return parse


# ------------------------------------------------------------------------ the tables


@dataclass(frozen=True, slots=True)
class Key:
    """File key ``key`` holds record attribute ``attr`` (default: the same name), checked by
    ``parse``; when absent, ``default`` (a value, or a function of the fields read so far)
    or an error when required. ``ref`` names the list whose records it must refer to."""

    key: str
    parse: Parser
    default: Any = _REQUIRED
    attr: str = ""
    ref: str = ""

    @property
    def name(self) -> str:
        return self.attr or self.key


def _same_as(attr: str) -> Callable[[dict[str, Any]], Any]:
    return lambda read: read[attr]


def _empty(_: dict[str, Any]) -> dict[int, int]:
    return {}


PROGRAM = (
    Key("id", _text),
    Key("name", _string),
    Key("timezone", _text),
    Key("academic_year_start", _day, None),
    Key("block_length_days", _whole(1), 28),
)
PERIOD = (Key("start", _day), Key("end", _day))
PERSON = (
    Key("id", _text),
    Key("kind", _choice(PersonKind)),
    Key("pgy", _opt(_whole(0))),
    Key("name", _string, _same_as("id")),
    Key("tags", _texts, frozenset()),
    Key("active", _flag, True),
)
ABSENCE = (
    Key("person", _text, attr="person_id", ref="people"),
    Key("start", _instant),
    Key("end", _instant),
    Key("blocking", _flag),
    Key("id", _text, None),
)
SLOT = (
    Key("id", _text),
    Key("shift", _text),
    Key("kind", _choice(ShiftKind)),
    Key("start", _instant),
    Key("end", _instant),
    Key("min", _whole(0), attr="min_staff"),
    Key("max", _whole(0), attr="max_staff"),
    Key("staff", _choice(PersonKind), PersonKind.RESIDENT, attr="staff_kind"),
    Key("pgy_min", _level_map(0), _empty),
    Key("supervision", _level_map(1), _empty),
    Key("faculty_max", _whole(0), 0),
    Key("counts_toward_hours", _flag, None),
)
ASSIGNMENT = (
    Key("person", _text, attr="person_id", ref="people"),
    Key("slot", _text, attr="slot_id", ref="slots"),
    Key("source", _choice(AssignmentSource), AssignmentSource.MANUAL),
)
SHIFT_TYPE = (
    Key("code", _text),
    Key("name", _string, _same_as("code")),
    Key("start", _clock),
    Key("duration_minutes", _whole(1)),
    Key("kind", _choice(ShiftKind)),
    Key("counts_toward_hours", _flag, True),
    Key("eligible_pgy", _levels, frozenset(range(1, 8))),
    Key("required_tags", _texts, frozenset()),
    Key("faculty", _flag, False),
)
ROTATION = (
    Key("id", _text),
    Key("name", _string, _same_as("id")),
    Key("eligible_pgy", _levels),
    Key("min_residents", _whole(0)),
    Key("max_residents", _whole(0)),
    Key("shift_types", _texts),
)
ROTATION_ASSIGNMENT = (
    Key("person", _text, attr="person_id", ref="people"),
    Key("block", _whole(1), ref="blocks"),
    Key("rotation", _text, attr="rotation_id", ref="rotations"),
)
REQUEST = (
    Key("id", _text),
    Key("person", _text, attr="person_id", ref="people"),
    Key("day", _day),
    Key("wants", _flag),
    Key("weight", _whole(1), 1),
    Key("shift", _opt(_text), None),
)
SUMMARY = (
    Key("algorithm", _opt(_string)),
    Key("status", _opt(_string)),
    Key("objective", _opt(_number)),
    Key("violations", _whole(0)),
    Key("warnings", _whole(0)),
    Key("coverage", _number),
)

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
        """attribute → checked value (``_BAD`` where a check failed)."""
        out: dict[str, Any] = {}
        for k in table:
            value = _BAD
            if k.key in m:
                try:
                    value = k.parse(m[k.key])
                except ValueError as exc:
                    self.fail(f"{path}.{k.key}", str(exc))
            elif k.default is _REQUIRED:
                self.fail(f"{path}.{k.key}", "required")
            else:
                value = k.default(out) if callable(k.default) else k.default
            if k.ref and value is not _BAD and value not in self.known.get(k.ref, ()):
                self.fail(f"{path}.{k.key}", f"unknown {k.key} {value!r}")
                value = _BAD
            out[k.name] = value
        return out

    def build(self, path: str, cls: Callable[..., Any], fields: dict[str, Any]) -> Any:
        """``cls(**fields)`` unless a field failed; the record's own checks become errors
        at ``path`` (``slots[S1].min`` from the record is reported as ``slots[3].min``)."""
        if any(v is _BAD for v in fields.values()):
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
            self.known[key] = declared - {_BAD}
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
        if f["counts_toward_hours"] is None and _BAD not in (f["shift"], f["kind"]):
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
    if _BAD in fields.values() or not fields:
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
    if fields["timezone"] is not _BAD:
        try:
            zone(fields["timezone"], "program.timezone")
        except InvalidInput as exc:
            r.errors.extend(exc.errors)
            fields["timezone"] = _BAD
    if fields["academic_year_start"] is None:  # the latest July 1 on or before the horizon
        day = horizon_start
        fields["academic_year_start"] = (
            _BAD if day is None else date(day.year if day.month >= 7 else day.year - 1, 7, 1)
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


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8, newlines as given) to ``path`` through a temporary file in the
    same folder and ``os.replace``: readers see the old file or the new one, never half."""
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return target


def dump(document: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write an interchange document (from :func:`export_schedule`) to ``path`` atomically."""
    text = json.dumps(document, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    return write_text_atomic(path, text)


def read_document(path: str | os.PathLike[str]) -> Any:
    """The parsed JSON of ``path``; an unreadable or malformed file is an input error."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidInput(FieldError("", "no such file"), source=source) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(FieldError("", f"cannot read the file: {exc}"), source=source) from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno} column {exc.colno}"
        raise InvalidInput(
            FieldError("", f"not valid JSON: {exc.msg} at {where}"), source=source
        ) from exc


def load(path: str | os.PathLike[str]) -> tuple[ProgramData, list[Assignment], dict[str, Any]]:
    """:func:`import_schedule` of the file at ``path`` (errors name the file)."""
    document = read_document(path)
    try:
        return import_schedule(document)
    except InvalidInput as exc:
        raise InvalidInput(exc.errors, source=str(path)) from exc
