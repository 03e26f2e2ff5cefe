"""Program files: loading YAML and JSON, every error at once with its path, DST-correct
slots, the published JSON Schema, and the ``rsched program``/``rsched schema`` commands."""

from __future__ import annotations

import copy
import json
import re
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from rsched.cli.main import main
from rsched.domain import InvalidInput, ProgramData
from rsched.programfile.generator import generate_program
from rsched.programfile.loader import load_program, parse_program
from rsched.programfile.reading import format_loc, read_document
from rsched.programfile.schema import program_json_schema

GOOD_YAML = """\
format: rsched.program/1
program:
  id: im
  name: Internal Medicine
  timezone: America/New_York
  academic_year_start: 2026-07-01
horizon: {start: 2026-07-01, end: 2026-07-28}
settings:
  rules: {merge_gap_minutes: 30}
people:
  - {id: r1, name: Resident 1, kind: resident, pgy: 1, tags: [acls]}
  - {id: r2, name: Resident 2, kind: resident, pgy: 2}
  - {id: r3, name: Resident 3, kind: resident, pgy: 3}
  - {id: f1, name: Faculty 1, kind: faculty}
shift_types:
  - {code: DAY, name: Day, start: 07:00, duration_hours: 12, kind: inpatient, faculty: true}
  - {code: NIGHT, name: Night, start: 19:00, duration_minutes: 720, kind: night_float}
rotations:
  - {id: wards, name: Wards, eligible_pgy: [1, 2, 3], max_residents: 3, shift_types: [DAY, NIGHT]}
rotation_assignments:
  - {person: r1, block: 1, rotation: wards}
slot_patterns:
  - {shift: DAY, days: weekdays, min: 1, max: 2, pgy_min: {2: 1}, supervision: {1: 2, 0: 4},
     faculty_max: 1}
  - {shift: NIGHT, days: [sat, sun], from: 2026-07-04, to: 2026-07-12, min: 1, max: 1}
slots:
  - {shift: DAY, date: 2026-07-04, min: 1, max: 1, supervision: {0: 4}, faculty_max: 1}
  - {id: extra-night, shift: NIGHT, date: 2026-07-20, min: 0, max: 1}
absences:
  - {person: r1, start: 2026-07-06, end: 2026-07-10}
  - {person: r2, start: "2026-07-15T08:00:00-04:00", end: "2026-07-15T12:00:00-04:00",
     leave_type: conference, blocking: false}
requests:
  - {person: r3, date: 2026-07-08, wants: false, weight: 3}
  - {id: q2, person: r2, date: 2026-07-09, wants: true, shift: NIGHT}
"""


def good() -> dict[str, Any]:
    """The good file as a mapping, read as the loader reads YAML (``19:00`` stays text)."""
    mapping, _ = read_document(GOOD_YAML)
    return mapping


def errors_of(mapping: Any) -> list[tuple[str, str]]:
    with pytest.raises(InvalidInput) as caught:
        parse_program(mapping)
    return [(e.path, e.message) for e in caught.value.errors]


def paths_of(mapping: Any) -> list[str]:
    return [path for path, _ in errors_of(mapping)]


# ---------------------------------------------------------------- loading


def test_yaml_text_loads_every_section() -> None:
    data = load_program(GOOD_YAML)
    assert isinstance(data, ProgramData)
    assert [p.id for p in data.people] == ["r1", "r2", "r3", "f1"]
    assert data.program.settings.rules.merge_gap_minutes == 30
    assert data.shift_type_by_code["NIGHT"].start == time(19, 0)  # YAML 1.1 would say 1140
    assert data.shift_type_by_code["DAY"].duration_minutes == 720
    assert len(data.slots) == 20 + 4 + 2  # weekdays, 4 weekend nights, 2 explicit
    assert data.slot_by_id["extra-night"].max_staff == 1
    assert data.slot_by_id["DAY-2026-07-01"].supervision == {0: 4, 1: 2}
    assert data.rotation_of[("r1", 1)] == "wards"
    assert [(p.start.isoformat(), p.end.isoformat()) for p in data.periods] == [
        ("2026-07-01", "2026-07-28")
    ]
    assert len(data.blocks) == 13
    vacation, conference = data.absences
    assert vacation.start == datetime(2026, 7, 6, 4, tzinfo=UTC)  # local midnight EDT
    assert vacation.end == datetime(2026, 7, 11, 4, tzinfo=UTC)  # end date inclusive
    assert conference.blocking is False and conference.leave_type == "conference"
    assert [r.id for r in data.requests] == ["request-1", "q2"]


def test_yaml_and_json_files_load_to_the_same_program(tmp_path) -> None:
    (tmp_path / "p.yaml").write_text(GOOD_YAML, "utf-8")
    (tmp_path / "p.json").write_text(json.dumps(good(), default=str), "utf-8")
    from_yaml = load_program(tmp_path / "p.yaml")
    from_json = load_program(str(tmp_path / "p.json"))
    assert from_json.slots == from_yaml.slots
    assert from_json.people == from_yaml.people
    assert from_json.absences == from_yaml.absences
    assert from_json.requests == from_yaml.requests
    assert load_program(json.dumps(good(), default=str)).slots == from_yaml.slots


def test_a_file_with_many_mistakes_reports_every_one_with_its_path() -> None:
    bad = good()
    bad["people"][2]["pgy"] = 9  # out of range
    bad["people"][3]["pgy"] = 2  # faculty with a PGY level
    bad["people"][1]["nmae"] = "typo"  # unknown key
    bad["slots"][0]["shift"] = "EVENING"  # unknown shift type
    bad["absences"][0]["person"] = "r9"  # unknown person
    bad["requests"][0]["weight"] = 0  # out of range
    bad["rotation_assignments"][0]["block"] = 14  # the year has 13 blocks
    bad["shift_types"][1]["start"] = "7pm"
    found = errors_of(bad)
    assert sorted(path for path, _ in found) == sorted(
        [
            "people[1].nmae",
            "people[2].pgy",
            "people[3].pgy",
            "shift_types[1].start",
            "rotation_assignments[0].block",
            "slots[0].shift",
            "absences[0].person",
            "requests[0].weight",
        ]
    )
    messages = dict(found)
    assert messages["people[2].pgy"] == "must be 1..7"
    assert messages["people[1].nmae"] == "unknown key (did you mean 'name'?)"
    assert messages["slots[0].shift"] == "unknown shift type 'EVENING'"
    assert messages["absences[0].person"] == "unknown person 'r9'"


def test_errors_of_meaning_are_each_reported_with_their_path() -> None:
    bad = good()
    bad["people"].append({"id": "r2", "name": "Again", "kind": "resident", "pgy": 1})
    bad["absences"].append({"person": "r1", "start": "2026-07-09", "end": "2026-07-12"})
    bad["slot_patterns"][1]["to"] = "2026-08-30"
    bad["requests"][0]["date"] = "2026-09-01"
    bad["rotations"][0]["shift_types"].append("ICU")
    bad["rotation_assignments"].append({"person": "f1", "block": 1, "rotation": "wards"})
    bad["slot_patterns"][0]["faculty_max"] = 0
    found = dict(errors_of(bad))
    assert found == {
        "people[4].id": "duplicate 'r2' (also people[1])",
        "rotations[0].shift_types[2]": "unknown shift type 'ICU'",
        "rotation_assignments[1].person": "'f1' is faculty, not a resident",
        "slot_patterns[0].faculty_max": "0 faculty cannot supervise the minimum of 1 residents "
        "at 1:4",
        "slot_patterns[1].to": "outside the horizon 2026-07-01..2026-07-28",
        "absences[2].start": "overlaps absences[0] (same person)",
        "requests[0].date": "outside the horizon 2026-07-01..2026-07-28",
    }


def test_both_passes_are_reported_together_and_broken_records_do_not_cascade() -> None:
    bad = good()
    bad["program"]["timezone"] = "Mars/Olympus"
    bad["horizon"]["end"] = "2026-06-01"
    bad["people"][0]["kind"] = "student"  # r1 is broken: references to r1 are not errors
    bad["shift_types"][0].pop("duration_hours")  # DAY is broken (second pass)
    paths = paths_of(bad)
    assert paths == [
        "program.timezone",
        "horizon.end",
        "people[0].kind",
        "shift_types[0]",
    ]


def test_a_pgy_level_is_required_for_residents_and_shift_durations_are_exclusive() -> None:
    bad = good()
    del bad["people"][0]["pgy"]
    bad["shift_types"][1]["duration_hours"] = 12
    assert dict(errors_of(bad)) == {
        "people[0].pgy": "required for a resident (1..7)",
        "shift_types[1]": "needs one of duration_hours, duration_minutes",
    }


def test_structure_errors_use_short_messages() -> None:
    bad = good()
    bad["format"] = "rsched.program/2"
    bad["people"][0]["active"] = "yes"
    bad["people"][1]["pgy"] = 2.5
    bad["slot_patterns"][0]["days"] = "fortnightly"
    bad["slot_patterns"][0]["pgy_min"] = {9: 1}
    bad["absences"][1]["start"] = "2026-07-15T08:00:00"
    bad["settings"]["rules"]["weekly_hourz"] = 70
    del bad["horizon"]
    found = dict(errors_of(bad))
    assert found == {
        "format": "must be 'rsched.program/1'",
        "horizon": "required",
        "settings.rules.weekly_hourz": "unknown key (did you mean 'weekly_hours_limit'?)",
        "people[0].active": "must be true or false",
        "people[1].pgy": "must be a whole number",
        "slot_patterns[0].days": "must be one of daily, weekdays, weekends or a list of weekdays",
        "slot_patterns[0].pgy_min[9]": "key: must be ≤ 7",
        "absences[1].start": "a datetime must carry its UTC offset (e.g. 2026-07-01T08:00-04:00)",
    }


def test_yaml_syntax_error_names_its_line() -> None:
    text = GOOD_YAML.replace("horizon: {start: 2026-07-01,", "horizon: {start: 2026-07-01,,[")
    with pytest.raises(InvalidInput) as caught:
        load_program(text)
    (error,) = caught.value.errors
    assert error.path == "line 7"
    assert error.message.startswith("YAML syntax")


def test_duplicate_yaml_keys_and_non_mappings_are_refused(tmp_path) -> None:
    with pytest.raises(InvalidInput) as caught:
        load_program("format: a\nformat: b\n")
    assert caught.value.errors[0].path == "line 2"
    with pytest.raises(InvalidInput, match="is a mapping"):
        load_program("- just\n- a list\n")
    with pytest.raises(InvalidInput, match="cannot read"):
        load_program(tmp_path / "missing.yaml")


def test_json_syntax_error_names_its_line(tmp_path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{\n  "format": "rsched.program/1",\n  "program": }\n', "utf-8")
    with pytest.raises(InvalidInput) as caught:
        load_program(path)
    assert caught.value.errors[0].path == "line 3"
    assert caught.value.source == str(path)


def test_pydantic_locations_read_like_the_file() -> None:
    assert format_loc(("people", 3, "pgy")) == ("people[3].pgy", False)
    assert format_loc(("slots", 0, "pgy_min", "x", "[key]")) == ("slots[0].pgy_min.x", True)


# ---------------------------------------------------------------- slots and DST


def _one_shift(shift: dict[str, Any], first: str, last: str) -> ProgramData:
    mapping = good()
    mapping.update(
        horizon={"start": first, "end": last},
        shift_types=[shift],
        rotations=[],
        rotation_assignments=[],
        slot_patterns=[{"shift": shift["code"], "days": "daily", "min": 1, "max": 1}],
        slots=[],
        absences=[],
        requests=[],
    )
    return parse_program(mapping)


NIGHT = {"code": "NIGHT", "name": "Night", "start": "19:00", "duration_hours": 12,
         "kind": "night_float"}


def test_spring_forward_night_is_twelve_real_hours() -> None:
    data = _one_shift(NIGHT, "2027-03-13", "2027-03-14")
    night = data.slot_by_id["NIGHT-2027-03-13"]
    assert night.end - night.start == timedelta(hours=12)
    assert night.start == datetime(2027, 3, 14, 0, tzinfo=UTC)  # 19:00 EST
    assert night.end.astimezone(data.tz).time() == time(8, 0)  # 08:00 EDT, not 07:00


def test_fall_back_night_is_twelve_real_hours() -> None:
    data = _one_shift(NIGHT, "2026-10-31", "2026-11-01")
    night = data.slot_by_id["NIGHT-2026-10-31"]
    assert night.end - night.start == timedelta(hours=12)
    assert night.start == datetime(2026, 10, 31, 23, tzinfo=UTC)  # 19:00 EDT
    assert night.end.astimezone(data.tz).time() == time(6, 0)  # 06:00 EST
    after = data.slot_by_id["NIGHT-2026-11-01"]
    assert after.start == datetime(2026, 11, 2, 0, tzinfo=UTC)  # 19:00 EST


def test_day_of_the_change_keeps_the_local_start_and_the_true_length() -> None:
    call = {"code": "CALL", "name": "Call", "start": "07:00", "duration_hours": 24,
            "kind": "in_house_call"}
    spring = _one_shift(call, "2027-03-14", "2027-03-14").slot_by_id["CALL-2027-03-14"]
    assert spring.start == datetime(2027, 3, 14, 11, tzinfo=UTC)  # 07:00 EDT
    assert spring.minutes == 24 * 60
    early = {"code": "EARLY", "name": "Early", "start": "02:30", "duration_hours": 4,
             "kind": "admin"}
    gap = _one_shift(early, "2027-03-14", "2027-03-14").slot_by_id["EARLY-2027-03-14"]
    assert gap.minutes == 4 * 60  # 02:30 does not exist that night; read as 03:30 EDT


def test_slot_ids_are_deterministic_and_numbered_when_repeated() -> None:
    mapping = good()
    mapping["slot_patterns"].append(
        {"shift": "NIGHT", "days": "weekends", "from": "2026-07-04", "to": "2026-07-05",
         "min": 0, "max": 1}
    )
    mapping["slots"].append({"shift": "NIGHT", "date": "2026-07-04", "min": 0, "max": 1})
    slots = parse_program(mapping).slots
    ids = [s.id for s in slots if s.id.startswith("NIGHT-2026-07-04")]
    assert ids == ["NIGHT-2026-07-04", "NIGHT-2026-07-04-2", "NIGHT-2026-07-04-3"]
    assert [s.id for s in parse_program(mapping).slots] == [s.id for s in slots]


def test_a_slot_takes_kind_and_hours_from_its_shift_type() -> None:
    mapping = good()
    mapping["shift_types"].append({"code": "HOME", "name": "Home call", "start": "17:00",
                                   "duration_hours": 15, "kind": "home_call",
                                   "counts_toward_hours": False})
    mapping["slots"].append({"shift": "HOME", "date": "2026-07-02", "min": 1, "max": 1})
    home = parse_program(mapping).slot_by_id["HOME-2026-07-02"]
    assert home.kind.value == "home_call" and home.counts_toward_hours is False
    assert home.minutes == 15 * 60


def test_duplicate_explicit_slot_ids_are_refused() -> None:
    mapping = good()
    mapping["slots"].append({"id": "extra-night", "shift": "NIGHT", "date": "2026-07-21",
                             "min": 0, "max": 1})
    assert dict(errors_of(mapping)) == {"slots[2].id": "duplicate slot id 'extra-night'"}


def test_explicit_periods_must_lie_in_the_horizon_without_overlap() -> None:
    mapping = good()
    mapping["periods"] = [{"start": "2026-07-01", "end": "2026-07-14"},
                          {"start": "2026-07-14", "end": "2026-07-28"}]
    assert paths_of(mapping) == ["periods[1].start"]
    mapping["periods"][1]["start"] = "2026-07-15"
    assert len(parse_program(mapping).periods) == 2


# ---------------------------------------------------------------- JSON Schema


def _validator() -> jsonschema.Draft202012Validator:
    schema = program_json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_schema_is_published_with_id_and_title() -> None:
    schema = program_json_schema()
    assert schema["$id"] and "rsched.program/1" in schema["title"]
    assert schema["additionalProperties"] is False


def test_schema_accepts_a_generated_file() -> None:
    document = json.loads(json.dumps(generate_program("medium", 3)))
    errors = list(_validator().iter_errors(document))
    assert errors == []
    hand_written = json.loads(json.dumps(good(), default=str))
    assert list(_validator().iter_errors(hand_written)) == []


@pytest.mark.parametrize(
    "breakage",
    [
        lambda d: d["people"][0].update(pgy=9),
        lambda d: d["people"][0].update(nickname="x"),
        lambda d: d["shift_types"][0].update(duration_minutes=60),  # both durations
        lambda d: d["slot_patterns"][0].update(days=["someday"]),
        lambda d: d["slot_patterns"][0].update(pgy_min={"9": 1}),
        lambda d: d.pop("horizon"),
        lambda d: d.update(format="rsched.program/0"),
    ],
)
def test_schema_rejects_a_broken_file(breakage) -> None:
    document = json.loads(json.dumps(generate_program("small", 1)))
    broken = copy.deepcopy(document)
    breakage(broken)
    assert list(_validator().iter_errors(broken))
    with pytest.raises(InvalidInput):
        parse_program(broken)


# ---------------------------------------------------------------- the commands


def test_program_new_then_check(tmp_path, capsys) -> None:
    target = tmp_path / "small.yaml"
    assert main(["program", "new", "--size", "small", "--seed", "4", "-o", str(target)]) == 0
    assert yaml.safe_load(target.read_text("utf-8")) == generate_program("small", 4)
    assert main(["program", "check", str(target)]) == 0
    out = capsys.readouterr().out
    assert "slot-positions" in out and "12 residents" in out


def test_program_new_gme_writes_one_file_per_program(tmp_path) -> None:
    assert main(["program", "new", "--size", "gme", "--seed", "1", "-o", str(tmp_path)]) == 0
    files = sorted(tmp_path.glob("*.yaml"))
    assert len(files) == 5
    assert sum(len(load_program(f).residents()) for f in files) == 300


def test_program_check_prints_every_error_and_exits_2(tmp_path, capsys) -> None:
    bad = good()
    bad["people"][2]["pgy"] = 9
    bad["slots"][0]["shift"] = "EVENING"
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad, default=str), "utf-8")
    assert main(["program", "check", str(path)]) == 2
    err = capsys.readouterr().err
    assert "people[2].pgy: must be 1..7" in err
    assert "slots[0].shift: unknown shift type 'EVENING'" in err


def test_schema_program_command(tmp_path, capsys) -> None:
    assert main(["schema", "program"]) == 0
    assert json.loads(capsys.readouterr().out) == program_json_schema()
    target = tmp_path / "program.schema.json"
    assert main(["schema", "program", "-o", str(target)]) == 0
    assert json.loads(target.read_text("utf-8")) == program_json_schema()


def test_the_example_in_the_docs_loads() -> None:
    doc = Path(__file__).parents[2] / "docs" / "program-file.md"
    example = re.search(r"```yaml\n(.*?)```", doc.read_text("utf-8"), re.S)
    assert example is not None
    data = load_program(example.group(1))
    assert data.program.id == "im" and len(data.slots) == 28 + 8 + 1
