"""Slot patterns → dated slots, in the program time zone and DST-correct.

A slot starts at its shift type's local clock time on its local date and ends
``duration`` later in real elapsed time: a 12 h night across the autumn change is
12 h (07:00 local the next morning is then 13 h of wall clock away, so it ends at
06:00), and across the spring change it ends at 08:00. Instants are stored in UTC.

Slot ids are deterministic: ``{SHIFTCODE}-{YYYY-MM-DD}``, with ``-2``, ``-3``… when
the file yields more than one slot of a shift on one date (patterns in file order,
then explicit slots; an id written in the file is never reused for a generated one).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from datetime import date, timedelta
from zoneinfo import ZoneInfo

from rsched.domain.calendar import local_at
from rsched.domain.enums import PersonKind
from rsched.domain.errors import FieldError, InvalidInput
from rsched.domain.model import ShiftType, Slot
from rsched.programfile.schema import DAY_SETS, WEEKDAYS, SlotPatternSpec, SlotSpec

Staffing = SlotPatternSpec | SlotSpec


def weekday_set(days: str | Sequence[str]) -> frozenset[int]:
    """``daily``/``weekdays``/``weekends`` or a list of ``mon``…``sun`` → ISO weekdays 0..6."""
    if isinstance(days, str):
        return DAY_SETS[days]
    return frozenset(WEEKDAYS.index(d) for d in days)


def pattern_dates(pattern: SlotPatternSpec, start: date, end: date) -> list[date]:
    """The dates a pattern yields inside the inclusive horizon ``start..end``."""
    first = max(pattern.from_ or start, start)
    last = min(pattern.to or end, end)
    wanted = weekday_set(pattern.days)
    out: list[date] = []
    day = first
    while day <= last:
        if day.weekday() in wanted:
            out.append(day)
        day += timedelta(days=1)
    return out


def check_staffing(
    spec: Staffing,
    path: str,
    shift_types: Mapping[str, ShiftType],
    excused: Callable[[str], bool],
    horizon: tuple[date, date] | None,
) -> list[FieldError]:
    """Second-pass checks of one slot pattern or explicit slot.

    ``excused(code)`` is true for a shift code whose record failed earlier (not reported).
    """
    errors: list[FieldError] = []
    if spec.max_staff < spec.min_staff:
        errors.append(FieldError(f"{path}.max", f"must be ≥ min ({spec.min_staff})"))
    errors.extend(_check_dates(spec, path, horizon))
    st = shift_types.get(spec.shift)
    if st is None:
        if not excused(spec.shift):
            errors.append(FieldError(f"{path}.shift", f"unknown shift type {spec.shift!r}"))
        return errors
    if spec.staff is PersonKind.FACULTY:
        if not st.faculty:
            errors.append(
                FieldError(f"{path}.staff", f"shift type {st.code!r} does not allow faculty")
            )
        for key in ("pgy_min", "supervision"):
            if getattr(spec, key):
                errors.append(FieldError(f"{path}.{key}", "a faculty slot has no residents"))
        return errors
    if spec.min_staff > 0 and not st.eligible_pgy:
        errors.append(
            FieldError(f"{path}.shift", f"no resident may staff {st.code!r} (empty eligible_pgy)")
        )
    for level, least in spec.pgy_min.items():
        if least > spec.max_staff:
            errors.append(FieldError(f"{path}.pgy_min.{level}", "must be ≤ max"))
        elif least > 0 and not any(p >= level for p in st.eligible_pgy):
            errors.append(
                FieldError(f"{path}.pgy_min.{level}", f"{st.code!r} admits no PGY ≥ {level}")
            )
    if spec.faculty_max > 0 and not st.faculty:
        errors.append(
            FieldError(f"{path}.faculty_max", f"shift type {st.code!r} does not allow faculty")
        )
    if spec.supervision:
        best = max(spec.supervision.values())
        needed = math.ceil(spec.min_staff / best)
        if needed > spec.faculty_max:
            errors.append(
                FieldError(
                    f"{path}.faculty_max",
                    f"{spec.faculty_max} faculty cannot supervise the minimum of "
                    f"{spec.min_staff} residents at 1:{best}",
                )
            )
    return errors


def _check_dates(spec: Staffing, path: str, horizon: tuple[date, date] | None) -> list[FieldError]:
    errors: list[FieldError] = []
    if isinstance(spec, SlotPatternSpec):
        if spec.from_ and spec.to and spec.to < spec.from_:
            errors.append(FieldError(f"{path}.to", "must not be before from"))
        named = [("from", spec.from_), ("to", spec.to)]
    else:
        named = [("date", spec.day)]
    if horizon is not None:
        lo, hi = horizon
        for key, value in named:
            if value is not None and not lo <= value <= hi:
                errors.append(FieldError(f"{path}.{key}", f"outside the horizon {lo}..{hi}"))
    return errors


class _Ids:
    """Deterministic ids ``CODE-YYYY-MM-DD``, ``-2``, ``-3``… never reusing a reserved id."""

    def __init__(self, reserved: set[str]) -> None:
        self.taken = set(reserved)

    def next(self, shift: str, day: date) -> str:
        base = f"{shift}-{day.isoformat()}"
        candidate, n = base, 1
        while candidate in self.taken:
            n += 1
            candidate = f"{base}-{n}"
        self.taken.add(candidate)
        return candidate


def expand_slots(
    patterns: Sequence[tuple[int, SlotPatternSpec]],
    slots: Sequence[tuple[int, SlotSpec]],
    shift_types: Mapping[str, ShiftType],
    tz: ZoneInfo,
    horizon: tuple[date, date],
) -> list[Slot]:
    """Every slot of the file, patterns first (in file order, by date), then explicit slots.

    ``patterns`` and ``slots`` carry each record's index in the file; the records must
    have passed ``check_staffing``. A duplicate explicit id raises ``InvalidInput``.
    """
    reserved = {s.id for _, s in slots if s.id is not None}
    ids = _Ids(set())
    out: list[Slot] = []
    errors: list[FieldError] = []
    for _, pattern in patterns:
        for day in pattern_dates(pattern, *horizon):
            slot_id = ids.next(pattern.shift, day)
            while slot_id in reserved:
                slot_id = ids.next(pattern.shift, day)
            out.append(_slot(slot_id, pattern, shift_types[pattern.shift], day, tz))
    for index, spec in slots:
        if spec.id is None:
            slot_id = ids.next(spec.shift, spec.day)
            while slot_id in reserved:
                slot_id = ids.next(spec.shift, spec.day)
        elif spec.id in ids.taken:
            errors.append(FieldError(f"slots[{index}].id", f"duplicate slot id {spec.id!r}"))
            continue
        else:
            slot_id = spec.id
            ids.taken.add(slot_id)
        out.append(_slot(slot_id, spec, shift_types[spec.shift], spec.day, tz))
    if errors:
        raise InvalidInput(errors)
    return out


def _slot(slot_id: str, spec: Staffing, st: ShiftType, day: date, tz: ZoneInfo) -> Slot:
    start = local_at(day, st.start, tz)
    return Slot(
        id=slot_id,
        shift=st.code,
        kind=st.kind,
        start=start,
        end=start + timedelta(minutes=st.duration_minutes),
        min_staff=spec.min_staff,
        max_staff=spec.max_staff,
        staff_kind=spec.staff,
        pgy_min=dict(sorted(spec.pgy_min.items())),
        supervision=dict(sorted(spec.supervision.items())),
        faculty_max=spec.faculty_max,
        counts_toward_hours=st.counts_toward_hours,
    )

