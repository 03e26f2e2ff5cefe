"""`rsched generate` / `check` / `demo` from the command line, good and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from rsched.cli.main import main
from rsched.programfile.generator import generate_program


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("prog") / "small.yaml"
    path.write_text(yaml.safe_dump(generate_program("small", 5), sort_keys=False))
    return path


def test_generate_writes_a_schedule_that_validates(small: Path, tmp_path: Path) -> None:
    out = tmp_path / "s.json"
    ckpt = tmp_path / "ckpt"
    code = main(
        [
            "generate",
            str(small),
            "--time-limit",
            "10",
            "--quiet",
            "-o",
            str(out),
            "--checkpoints",
            str(ckpt),
        ]
    )
    assert code == 0
    doc = json.loads(out.read_text())
    assert doc["format"] == "rsched.schedule/1" and doc["summary"]["violations"] == 0
    assert main(["validate", str(small), str(out)]) == 0
    assert sorted(ckpt.iterdir())  # improving solutions were checkpointed
    # resume from the verified checkpoint
    again = tmp_path / "again.json"
    assert (
        main(
            [
                "generate",
                str(small),
                "--time-limit",
                "5",
                "--quiet",
                "-o",
                str(again),
                "--resume",
                str(ckpt),
            ]
        )
        == 0
    )


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--solver", "magic"], "unknown solver 'magic'"),
        (["--time-limit", "-5"], "time_limit"),
        (["--time-limit", "1e9"], "time_limit"),
    ],
)
def test_bad_solver_arguments_exit_2_and_write_nothing(
    small: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], needle: str
) -> None:
    out = tmp_path / "s.json"
    assert main(["generate", str(small), "--quiet", "-o", str(out), *args]) == 2
    assert needle in capsys.readouterr().err
    assert not out.exists() and not list(tmp_path.iterdir())


def test_program_failing_the_precheck_is_refused(
    small: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mapping = yaml.safe_load(small.read_text())
    pattern = mapping["slot_patterns"][0]
    pattern.update(min=50, max=50)
    pattern.pop("supervision", None)
    pattern.pop("faculty_max", None)
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(mapping, sort_keys=False))
    out = tmp_path / "s.json"
    assert main(["generate", str(bad), "--quiet", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "needs 50" in err and "eligible and available" in err
    assert not out.exists()
    assert main(["check", str(bad)]) == 1


def test_corrupt_checkpoint_is_refused(
    small: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = tmp_path / "ckpt"
    assert (
        main(["generate", str(small), "--time-limit", "5", "--quiet", "--checkpoints", str(ckpt)])
        == 0
    )
    newest = sorted(ckpt.iterdir())[-1]
    raw = bytearray(newest.read_bytes())
    i = raw.index(b'"pairs"') + 12
    raw[i] = ord("Z") if raw[i] != ord("Z") else ord("Y")
    newest.write_bytes(bytes(raw))
    out = tmp_path / "s.json"
    code = main(["generate", str(small), "--quiet", "--resume", str(ckpt), "-o", str(out)])
    assert code != 0
    assert newest.name in capsys.readouterr().err
    assert not out.exists()


def test_demo_writes_every_export(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    code = main(["demo", "--out", str(out), "--size", "small", "--time-limit", "10", "--quiet"])
    assert code == 0
    names = {p.name for p in out.iterdir()}
    assert {
        "program.yaml",
        "schedule.json",
        "schedule.csv",
        "grid.html",
        "report.json",
        "calendars",
    } <= names
    assert len(list((out / "calendars").glob("*.ics"))) == 16
    report = json.loads((out / "report.json").read_text())
    assert report["validation"]["violations"] == 0
