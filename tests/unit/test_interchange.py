"""Interchange: the rsched.schedule/1 JSON file, CSV, ICS, the HTML grid and `rsched validate`."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rsched.cli.main import main
from rsched.domain import (
    Absence,
    Assignment,
    AssignmentSource,
    InvalidInput,
    ObjectiveWeights,
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
from rsched.domain.calendar import Period, local_at, zone
from rsched.interchange.csv_export import schedule_csv
from rsched.interchange.html_grid import render_grid
from rsched.interchange.ics import fold, fold_by_character, person_calendar, write_calendars
from rsched.interchange.schedule_json import (
    FORMAT,
    UNSPECIFIED_LEAVE,
    dump,
    export_schedule,
    import_schedule,
    load,
)
from tests.unit.builders import assign, faculty, mkslot, program, resident

NY = "America/New_York"
FALL_BACK = date(2026, 10, 29)
"""Horizon start four days before the autumn change (2026-11-01 in New York)."""


def wall(day: date, hour: int, minute: int = 0, *, tz: str = NY, fold: int = 0) -> datetime:
    """The instant (UTC) of a local wall time (``fold=1``: the second 01:30 of a fall-back
    night). In UTC, so that ``+ timedelta`` adds real time, not wall-clock time."""
    local = datetime.combine(day, time(hour, minute), tzinfo=zone(tz)).replace(fold=fold)
    return local.astimezone(UTC)


def dst_program(*, sensitive: bool = False) -> tuple[ProgramData, list[Assignment]]:
    """A week across the autumn change with every kind of record and a non-default setting."""
    start = FALL_BACK
    d = [start + timedelta(days=i) for i in range(7)]
    night_start = wall(date(2026, 10, 31), 19)
    slots = [
        Slot(id="NIGHT-1031", shift="NF", kind=ShiftKind.NIGHT_FLOAT, start=night_start,
             end=night_start + timedelta(hours=12), min_staff=1, max_staff=1),
        Slot(id="AMB-1", shift="ADM", kind=ShiftKind.ADMIN, start=wall(d[3], 1, 30),
             end=wall(d[3], 1, 30) + timedelta(minutes=30), min_staff=0, max_staff=1,
             counts_toward_hours=False),
        Slot(id="AMB-2", shift="ADM", kind=ShiftKind.ADMIN, start=wall(d[3], 1, 30, fold=1),
             end=wall(d[3], 1, 30, fold=1) + timedelta(minutes=30), min_staff=0, max_staff=1),
        Slot(id="CLIN-1", shift="CLIN", kind=ShiftKind.CLINIC, start=wall(d[4], 8),
             end=wall(d[4], 12), min_staff=1, max_staff=3, pgy_min={2: 1},
             supervision={1: 2, 0: 4}, faculty_max=1),
        Slot(id="FAC-1", shift="ATT", kind=ShiftKind.INPATIENT, start=wall(d[5], 7),
             end=wall(d[5], 19), min_staff=1, max_staff=1, staff_kind=PersonKind.FACULTY),
        Slot(id="CALL-1", shift="HC", kind=ShiftKind.HOME_CALL, start=wall(d[6], 17),
             end=wall(d[6], 17) + timedelta(hours=15), min_staff=0, max_staff=1,
             counts_toward_hours=False),
    ]
    extra = {
        "military_status": "MILITARY-SECRET-7731" if sensitive else None,
        "accommodation_notes": "ACCOMMODATION-NOTE-5529" if sensitive else None,
    }
    people = [
        Person(id="r1", name="Ana Ruiz", kind=PersonKind.RESIDENT, pgy=1,
               tags=frozenset({"acls", "peds"}), **extra),
        Person(id="r2", name="Bo Chen", kind=PersonKind.RESIDENT, pgy=3),
        Person(id="r3", name="Cy Old", kind=PersonKind.RESIDENT, pgy=2, active=False),
        Person(id="f1", name="Dr Faculty", kind=PersonKind.FACULTY),
    ]
    absences = [
        Absence(id="lv1", person_id="r2", start=wall(d[0], 0), end=wall(d[2], 0),
                leave_type="PARENTAL-LEAVE-8841" if sensitive else UNSPECIFIED_LEAVE),
        Absence(id="conf", person_id="r1", start=wall(d[5], 8), end=wall(d[5], 17),
                blocking=False, leave_type=UNSPECIFIED_LEAVE),
    ]
    shift_types = [
        ShiftType(code="NF", name="Night float", start=time(19), duration_minutes=720,
                  kind=ShiftKind.NIGHT_FLOAT, eligible_pgy=frozenset({1, 2, 3})),
        ShiftType(code="CLIN", name="Clinic, AM; \\ continuity", start=time(8),
                  duration_minutes=240, kind=ShiftKind.CLINIC, required_tags=frozenset({"acls"}),
                  faculty=True),
    ]
    blocks = (Period(start=start, end=d[3]), Period(start=d[4], end=d[6]))
    data = ProgramData(
        program=Program(
            id="im", name="Internal Medicine", timezone=NY, academic_year_start=date(2026, 7, 1),
            settings=ProgramSettings(
                rules=RuleSettings(weekly_hours_limit=72, day_off_calendar_day=True),
                weights=ObjectiveWeights(churn=7),
            ),
        ),
        start=start,
        end=d[6],
        periods=(Period(start=start, end=d[6]),),
        people=tuple(people),
        slots=tuple(slots),
        shift_types=tuple(shift_types),
        rotations=(Rotation(id="wards", name="Wards", eligible_pgy=frozenset({1, 2, 3}),
                            min_residents=0, max_residents=4, shift_types=frozenset({"NF"})),),
        rotation_assignments=(RotationAssignment(person_id="r1", block=1, rotation_id="wards"),),
        blocks=blocks,
        absences=tuple(absences),
        requests=(Request(id="q1", person_id="r1", day=d[6], wants=False, weight=3),
                  Request(id="q2", person_id="r2", day=d[4], wants=True, shift="CLIN")),
    )
    assignments = [
        Assignment(person_id="r1", slot_id="NIGHT-1031"),
        Assignment(person_id="r1", slot_id="AMB-2", source=AssignmentSource.MANUAL),
        Assignment(person_id="r2", slot_id="CLIN-1", source=AssignmentSource.SWAP),
        Assignment(person_id="f1", slot_id="CLIN-1"),
        Assignment(person_id="f1", slot_id="FAC-1"),
    ]
    return data, assignments


def through_json(document: dict[str, Any]) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(json.dumps(document))
    return loaded


def public(person: Person) -> Person:
    return replace(person, military_status=None, accommodation_notes=None)


def assert_same_data(a: ProgramData, b: ProgramData) -> None:
    """Every record equal, sensitive fields aside (they are never exported)."""
    assert b.program == a.program
    assert (b.start, b.end, b.periods, b.blocks) == (a.start, a.end, a.periods, a.blocks)
    assert b.people == tuple(public(p) for p in a.people)
    assert b.slots == a.slots
    assert b.absences == tuple(replace(x, leave_type=UNSPECIFIED_LEAVE) for x in a.absences)
    assert b.shift_types == a.shift_types
    assert b.rotations == a.rotations
    assert b.rotation_assignments == a.rotation_assignments
    assert b.requests == a.requests


# ------------------------------------------------------------------ JSON round trip


def test_round_trip_is_lossless_across_the_autumn_change() -> None:
    data, assignments = dst_program()
    document = export_schedule(data, assignments, summary={"algorithm": "cp_sat", "status": "x"})
    data2, assignments2, summary2 = import_schedule(through_json(document))
    assert export_schedule(data2, assignments2, summary=summary2) == document
    assert_same_data(data, data2)
    assert sorted(assignments2) == sorted(assignments)
    assert {(a.slot_id, a.source) for a in assignments2} >= {("CLIN-1", AssignmentSource.SWAP)}
    assert summary2["algorithm"] == "cp_sat"


def test_export_writes_local_offsets_and_exactly_the_required_shape() -> None:
    data, assignments = dst_program()
    document = export_schedule(data, assignments)
    slots = {s["id"]: s for s in document["slots"]}
    assert slots["NIGHT-1031"]["start"] == "2026-10-31T19:00:00-04:00"
    assert slots["NIGHT-1031"]["end"] == "2026-11-01T06:00:00-05:00"
    assert slots["AMB-1"]["start"] == "2026-11-01T01:30:00-04:00"
    assert slots["AMB-2"]["start"] == "2026-11-01T01:30:00-05:00"
    assert document["format"] == FORMAT
    assert document["program"]["timezone"] == NY
    assert document["horizon"] == {"start": "2026-10-29", "end": "2026-11-04"}
    assert {"id", "kind", "pgy"} <= document["people"][0].keys()
    assert document["people"][3]["pgy"] is None
    assert {"person", "start", "end", "blocking"} <= document["absences"][0].keys()
    assert {"id", "shift", "kind", "start", "end", "min", "max"} <= slots["CALL-1"].keys()
    assert slots["CALL-1"]["kind"] == "home_call"
    assert {"person", "slot"} <= document["assignments"][0].keys()
    assert set(document["summary"]) >= {
        "algorithm", "status", "objective", "violations", "warnings", "coverage"
    }
    assert document["settings"]["rules"]["weekly_hours_limit"] == 72


def test_sensitive_fields_never_leave_the_program() -> None:
    data, assignments = dst_program(sensitive=True)
    text = json.dumps(export_schedule(data, assignments))
    for secret in ("MILITARY-SECRET-7731", "ACCOMMODATION-NOTE-5529", "PARENTAL-LEAVE-8841"):
        assert secret not in text
    for key in ("military_status", "accommodation_notes", "leave_type"):
        assert key not in text


def test_file_helpers_round_trip(tmp_path: Path) -> None:
    data, assignments = dst_program()
    document = export_schedule(data, assignments)
    path = dump(document, tmp_path / "schedule.json")
    assert [p.name for p in tmp_path.iterdir()] == ["schedule.json"]  # no temporary left
    data2, assignments2, summary2 = load(path)
    assert export_schedule(data2, assignments2, summary=summary2) == document


_KINDS = list(ShiftKind)
_ZONES = ["America/New_York", "Europe/London", "Australia/Lord_Howe", "Asia/Kolkata", "UTC"]
_STARTS = [date(2026, 3, 6), date(2026, 3, 27), date(2026, 10, 2), date(2026, 10, 30)]


@st.composite
def small_schedules(draw: st.DrawFn) -> tuple[ProgramData, list[Assignment]]:
    tz = draw(st.sampled_from(_ZONES))
    start = draw(st.sampled_from(_STARTS))
    days = draw(st.integers(1, 5))
    people = [
        resident(f"r{i}", pgy=draw(st.integers(1, 7)), active=draw(st.booleans()),
                 tags=frozenset(draw(st.lists(st.sampled_from(["a", "b,c", "é"]), max_size=2))),
                 military_status=draw(st.sampled_from([None, "MIL-X"])))
        for i in range(draw(st.integers(1, 4)))
    ] + [faculty(f"f{i}") for i in range(draw(st.integers(0, 2)))]
    slots = []
    for i in range(draw(st.integers(0, 6))):
        first = local_at(
            start + timedelta(days=draw(st.integers(0, days - 1))),
            time(draw(st.integers(0, 23)), draw(st.sampled_from([0, 15, 30]))),
            zone(tz),
        )
        low = draw(st.integers(0, 2))
        slots.append(
            Slot(id=f"s{i}", shift=draw(st.sampled_from(["DAY", "NIGHT", "CALL"])),
                 kind=draw(st.sampled_from(_KINDS)), start=first,
                 end=first + timedelta(minutes=draw(st.integers(15, 28 * 60))),
                 min_staff=low, max_staff=low + draw(st.integers(0, 2)),
                 pgy_min=draw(st.dictionaries(st.integers(1, 7), st.integers(0, 2), max_size=2)),
                 supervision=draw(st.dictionaries(st.integers(0, 7), st.integers(1, 4),
                                                  max_size=2)),
                 faculty_max=draw(st.integers(0, 2)),
                 counts_toward_hours=draw(st.booleans()))
        )
    absences = [
        Absence(id=f"a{i}", person_id=p.id, start=local_at(start, time(6), zone(tz)),
                end=local_at(start + timedelta(days=1), time(6), zone(tz)),
                blocking=draw(st.booleans()), leave_type="sick")
        for i, p in enumerate(people)
        if draw(st.booleans())
    ]
    pairs = [(p.id, s.id) for p in people for s in slots]
    chosen = draw(st.lists(st.sampled_from(pairs), unique=True, max_size=8)) if pairs else []
    data = program(people=people, slots=slots, absences=absences, days=days)
    end = start + timedelta(days=days - 1)
    data = replace(
        data,
        program=replace(data.program, timezone=tz),
        start=start,
        end=end,
        periods=(Period(start=start, end=end),),
    )
    return data, assign(*chosen)


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(small_schedules())
def test_export_import_is_identity_on_generated_schedules(
    case: tuple[ProgramData, list[Assignment]],
) -> None:
    data, assignments = case
    document = export_schedule(data, assignments)
    data2, assignments2, summary2 = import_schedule(through_json(document))
    assert_same_data(data, data2)
    assert sorted(assignments2) == sorted(assignments)
    assert export_schedule(data2, assignments2, summary=summary2) == document


def test_a_bad_file_gets_every_error_with_its_path() -> None:
    data, assignments = dst_program()
    document = through_json(export_schedule(data, assignments))
    document["format"] = "rsched.schedule/0"
    document["slots"][3]["start"] = "2026-11-02 08:00"
    document["slots"][4]["min"] = -1
    document["assignments"][4]["slot"] = "X"
    document["people"][1]["pgy"] = 9
    document["absences"][0]["person"] = "nobody"
    document["settings"]["rules"]["weekly_hour_limit"] = 80
    document["requests"].append(dict(document["requests"][0]))
    del document["summary"]
    with pytest.raises(InvalidInput) as caught:
        import_schedule(document)
    found = {e.path: e.message for e in caught.value.errors}
    assert found == {
        "format": "must be 'rsched.schedule/1' (got 'rsched.schedule/0')",
        "slots[3].start": "must be an ISO datetime with offset",
        "slots[4].min": "must be a whole number ≥ 0",
        "assignments[4].slot": "unknown slot 'X'",
        "people[1].pgy": "must be 1..7 for a resident",
        "absences[0].person": "unknown person 'nobody'",
        "settings.rules.weekly_hour_limit": "unknown setting",
        "requests[2]": "duplicate of requests[0] (q1)",
        "summary": "required",
    }


def test_a_document_missing_every_list_names_each_one() -> None:
    with pytest.raises(InvalidInput) as caught:
        import_schedule({"format": FORMAT})
    paths = {e.path for e in caught.value.errors}
    assert paths == {
        "program", "horizon", "periods", "people", "absences", "slots", "assignments", "summary"
    }


def test_malformed_json_file_is_an_input_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{"format": ', encoding="utf-8")
    with pytest.raises(InvalidInput, match="not valid JSON"):
        load(path)


# ------------------------------------------------------------------ CSV


def csv_rows(data: ProgramData, assignments: list[Assignment]) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(schedule_csv(data, assignments), newline="")))


def test_csv_local_times_across_the_autumn_change() -> None:
    data, assignments = dst_program()
    rows = {r["slot"]: r for r in csv_rows(data, assignments)}
    night = rows["NIGHT-1031"]
    assert (night["date"], night["start"]) == ("2026-10-31", "19:00")
    assert night["end"] == "2026-11-01 06:00"
    assert night["hours"] == "12"
    assert (night["person"], night["person_kind"], night["pgy"]) == ("r1", "resident", "1")
    assert (night["shift"], night["kind"], night["source"]) == ("NF", "night_float", "solver")
    assert (rows["AMB-2"]["start"], rows["AMB-2"]["end"], rows["AMB-2"]["hours"]) == (
        "01:30", "02:00", "0.5"
    )
    assert rows["FAC-1"]["pgy"] == ""


def test_csv_spring_forward_night_ends_an_hour_later_on_the_clock() -> None:
    spring = date(2026, 3, 7)
    start = wall(spring, 19)
    slot = Slot(id="N", shift="NF", kind=ShiftKind.NIGHT_FLOAT, start=start,
                end=start + timedelta(hours=12), min_staff=0, max_staff=1)
    data = replace(program(people=[resident("r1")], slots=[slot]), start=spring, end=spring)
    [row] = csv_rows(data, assign(("r1", "N")))
    assert (row["end"], row["hours"]) == ("2026-03-08 08:00", "12")


# ------------------------------------------------------------------ ICS


def test_ics_lines_are_folded_crlf_and_escaped() -> None:
    data, assignments = dst_program()
    long_name = "Überwachte Nachtschicht, Station 4; " * 4
    data = replace(data, shift_types=(
        replace(data.shift_types[0], name=long_name), *data.shift_types[1:]
    ))
    stamp = datetime(2026, 10, 1, 12, 0, 0, tzinfo=UTC)
    text = person_calendar(data, assignments, "r1", stamp=stamp)
    assert text.endswith("END:VCALENDAR\r\n")
    assert "\n" not in text.replace("\r\n", "")
    lines = text.split("\r\n")[:-1]
    assert all(len(line.encode("utf-8")) <= 75 for line in lines)
    unfolded = text.replace("\r\n ", "").split("\r\n")
    summary = next(line for line in unfolded if line.startswith("SUMMARY:Überwachte"))
    assert summary == "SUMMARY:" + long_name.replace(",", "\\,").replace(";", "\\;") + " (NF)"
    assert "UID:NIGHT-1031-r1@rsched" in unfolded
    assert "DTSTART:20261031T230000Z" in unfolded
    assert "DTEND:20261101T110000Z" in unfolded
    assert "DTSTAMP:20261001T120000Z" in unfolded
    assert "CATEGORIES:night_float" in unfolded
    assert unfolded.count("BEGIN:VEVENT") == 2  # r1 works NIGHT-1031 and AMB-2


def test_ics_one_file_per_person(tmp_path: Path) -> None:
    data, assignments = dst_program()
    paths = write_calendars(data, assignments, tmp_path / "feeds")
    assert sorted(p.name for p in paths) == ["f1.ics", "r1.ics", "r2.ics", "r3.ics"]
    feed = (tmp_path / "feeds" / "f1.ics").read_bytes()
    assert b"UID:FAC-1-f1@rsched\r\n" in feed
    assert b"BEGIN:VEVENT" not in (tmp_path / "feeds" / "r3.ics").read_bytes()


# ------------------------------------------------------------------ HTML


def test_html_grid_escapes_names_and_marks_violations() -> None:
    hostile = '<script>alert("x")</script> & Co'
    people = [Person(id="r1", name=hostile, kind=PersonKind.RESIDENT, pgy=2), faculty("f1")]
    slots = [mkslot("DAY-0", 0, 7, 12, min_staff=1), mkslot("LATE-0", 0, 12, 8)]
    data = program(people=people, slots=slots, days=3)
    page = render_grid(data, assign(("r1", "DAY-0"), ("r1", "LATE-0")))
    assert "<script>" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; Co" in page
    assert '<th scope="row">' in page and '<th scope="col">' in page and "<caption>" in page
    assert "http" not in page  # nothing fetched from elsewhere
    [marked] = [line for line in page.splitlines() if 'class="v"' in line and "<td" in line]
    assert 'title="NO_OVERLAP (violation)' in marked
    assert ">DAY</span>" in marked and ">LATE</span>" in marked


# ------------------------------------------------------------------ `rsched validate`


def clean_document() -> dict[str, Any]:
    slots = [mkslot(f"DAY-{d}", d, 7, 10, min_staff=1, max_staff=1) for d in range(3)]
    data = program(people=[resident("r1"), resident("r2")], slots=slots, days=3)
    chosen = assign(("r1", "DAY-0"), ("r2", "DAY-1"), ("r1", "DAY-2"))
    return through_json(export_schedule(data, chosen))


def test_validate_cli_clean_schedule_exits_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = dump(clean_document(), tmp_path / "s.json")
    assert main(["validate", str(path)]) == 0
    assert "no hard violation" in capsys.readouterr().out


def test_validate_cli_crafted_violation_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    document = clean_document()
    document["absences"].append({
        "person": "r1", "start": "2026-07-01T00:00:00-04:00",
        "end": "2026-07-02T00:00:00-04:00", "blocking": True,
    })
    path = dump(document, tmp_path / "s.json")
    assert main(["validate", str(path)]) == 1
    out = capsys.readouterr().out
    assert "AVAILABILITY" in out and "FAIL" in out

    assert main(["validate", str(path), "--json"]) == 1
    findings = json.loads(capsys.readouterr().out)
    assert [f["rule"] for f in findings] == ["AVAILABILITY"]
    assert set(findings[0]) >= {"rule", "severity", "person", "start", "end", "value", "limit"}
    assert {"slot", "message"} <= set(findings[0])
    assert (findings[0]["person"], findings[0]["slot"]) == ("r1", "DAY-0")


def test_validate_cli_broken_file_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    document = clean_document()
    document["slots"][1]["end"] = "tomorrow"
    document["assignments"][0]["person"] = "ghost"
    path = dump(document, tmp_path / "s.json")
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "slots[1].end: must be an ISO datetime with offset" in err
    assert "assignments[0].person: unknown person 'ghost'" in err
    assert main(["validate", str(tmp_path / "missing.json")]) == 2


def test_validate_cli_against_a_program_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from rsched.programfile.generator import generate_program
    from rsched.programfile.loader import load_program

    program_path = tmp_path / "program.json"
    program_path.write_text(json.dumps(generate_program("small", 1), default=str), "utf-8")
    data = load_program(program_path)
    document = through_json(export_schedule(data, []))  # nothing staffed: COVERAGE breaches
    path = dump(document, tmp_path / "s.json")
    assert main(["validate", str(program_path), str(path), "--json"]) == 1
    assert {f["rule"] for f in json.loads(capsys.readouterr().out)} >= {"COVERAGE"}

    extra = dict(document["slots"][0], id="NOT-IN-PROGRAM")
    document["slots"].append(extra)
    document["assignments"] = [{"person": data.people[0].id, "slot": "NOT-IN-PROGRAM"}]
    path = dump(document, tmp_path / "s.json")
    assert main(["validate", str(program_path), str(path)]) == 2
    assert "assignments[0].slot: unknown slot 'NOT-IN-PROGRAM'" in capsys.readouterr().err


ASCII_LINES = st.text(st.characters(max_codepoint=127), min_size=60, max_size=400)


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(max_size=400), ASCII_LINES))
def test_ics_folding_keeps_the_text_and_the_75_octet_limit(line: str) -> None:
    line = line.replace("\r", "").replace("\n", "")
    folded = fold(line)
    assert folded.replace("\r\n ", "") == line
    assert all(len(piece.encode("utf-8")) <= 75 for piece in folded.split("\r\n"))
    assert all(piece.startswith(" ") for piece in folded.split("\r\n")[1:])
    if line.isascii():  # the fast path folds exactly where the careful one does
        assert folded == fold_by_character(line)
