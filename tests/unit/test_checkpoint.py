"""Checkpoints: canonical content and hash, atomic files, refusal of corrupt ones, the
throttled saver, and resuming from a verified checkpoint."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from rsched.domain import CheckpointCorrupt, InvalidInput, NotFound, ProgramData, ShiftKind
from rsched.solver.api import SolveParams, solve
from rsched.solver.checkpoint import (
    Checkpointer,
    CheckpointRecord,
    CheckpointStore,
    FileCheckpointStore,
    canonical_json,
    decode,
    encode,
    hint_from,
    sha256,
)
from rsched.solver.control import Checkpoint, Control

from .builders import faculty, mkslot, program, resident


def record(**kw: object) -> CheckpointRecord:
    base: dict[str, object] = {
        "program_id": "p1",
        "run": "run-7",
        "pairs": (("r2", "DAY-1"), ("r1", "NIGHT-0"), ("r1", "DAY-0")),
        "objective": 42.5,
        "elapsed": 3.25,
        "algorithm": "cp_sat",
        "created_at": "2026-07-01T12:00:00.000Z",
    }
    base.update(kw)
    return CheckpointRecord(**base)  # type: ignore[arg-type]


def test_content_is_canonical_and_hash_ignores_pair_order() -> None:
    a = record()
    b = record(pairs=tuple(reversed(a.pairs)))
    assert a.pairs == (("r1", "DAY-0"), ("r1", "NIGHT-0"), ("r2", "DAY-1"))
    assert sha256(a) == sha256(b)
    assert canonical_json(a.content()) == canonical_json(b.content())
    assert b" " not in canonical_json(a.content())
    assert sha256(a) != sha256(record(objective=42.0))
    assert len(sha256(a)) == 64


def test_round_trip_through_the_store(tmp_path: Path) -> None:
    store = FileCheckpointStore(tmp_path / "cps")
    assert isinstance(store, CheckpointStore)
    assert store.latest() is None
    first = store.save(record())
    second = store.save(record(objective=40.0, pairs=(("r1", "ü-slot"),)))
    assert (first, second) == ("000001", "000002")
    assert sorted(p.name for p in (tmp_path / "cps").iterdir()) == ["000001.json", "000002.json"]
    loaded = store.load(first)
    assert loaded == record(id="000001")
    assert loaded.to_checkpoint() == Checkpoint(pairs=record().pairs, objective=42.5, elapsed=3.25)
    latest = store.latest()
    assert latest is not None and latest.id == "000002"
    assert latest.pairs == (("r1", "ü-slot"),)
    # the hash is stored beside the content
    raw = json.loads((tmp_path / "cps" / "000001.json").read_text("utf-8"))
    assert set(raw) == {"content", "format", "sha256"}
    assert raw["sha256"] == sha256(record())
    assert decode(encode(record()), source="mem") == record()


def test_a_missing_checkpoint_is_not_found(tmp_path: Path) -> None:
    store = FileCheckpointStore(tmp_path)
    with pytest.raises(NotFound, match="000003"):
        store.load(3)
    with pytest.raises(InvalidInput):
        store.load("../etc/passwd")


def test_a_flipped_byte_is_refused_with_the_file_and_the_problem(tmp_path: Path) -> None:
    store = FileCheckpointStore(tmp_path)
    cid = store.save(record())
    path = tmp_path / f"{cid}.json"
    data = bytearray(path.read_bytes())
    at = data.index(b"NIGHT-0")
    data[at] ^= 0x01  # 'N' -> 'O': still valid JSON, different content
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointCorrupt) as err:
        store.load(cid)
    message = str(err.value)
    assert str(path) in message
    assert "hash mismatch" in message
    assert sha256(record()) in message  # the recorded hash is named


def test_every_single_byte_flip_is_detected(tmp_path: Path) -> None:
    good = encode(record())
    for i in range(len(good)):
        bad = bytearray(good)
        bad[i] ^= 0x01
        with pytest.raises(CheckpointCorrupt):
            decode(bytes(bad), source=f"flip@{i}")


def test_unparsable_and_incomplete_files_say_so(tmp_path: Path) -> None:
    store = FileCheckpointStore(tmp_path)
    cid = store.save(record())
    path = tmp_path / f"{cid}.json"
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(CheckpointCorrupt, match="unparsable"):
        store.load(cid)

    content = record().content()
    del content["run"]
    wrapper = {
        "format": "rsched-checkpoint/1",
        "sha256": hashlib.sha256(canonical_json(content)).hexdigest(),
        "content": content,
    }
    path.write_text(json.dumps(wrapper), "utf-8")
    with pytest.raises(CheckpointCorrupt, match=r"missing key\(s\) in content: run"):
        store.load(cid)

    path.write_text(json.dumps({"content": record().content()}), "utf-8")
    with pytest.raises(CheckpointCorrupt, match=r"missing key\(s\) format, sha256"):
        store.load(cid)


def test_a_corrupt_newest_checkpoint_is_refused_unless_asked_to_skip(tmp_path: Path) -> None:
    store = FileCheckpointStore(tmp_path)
    store.save(record(objective=50.0))
    store.save(record(objective=45.0))
    newest = tmp_path / f"{store.save(record(objective=40.0))}.json"
    newest.write_bytes(newest.read_bytes().replace(b"40.0", b"10.0"))
    with pytest.raises(CheckpointCorrupt, match=r"000003\.json"):
        store.latest()
    skipped: list[CheckpointCorrupt] = []
    good = store.latest(verified_only=True, skipped=skipped)
    assert good is not None and good.id == "000002" and good.objective == 45.0
    assert len(skipped) == 1 and "000003.json" in str(skipped[0])


def test_atomic_writes_leave_no_temporary_files_and_keep_prunes(tmp_path: Path) -> None:
    store = FileCheckpointStore(tmp_path, keep=2)
    for k in range(5):
        store.save(record(objective=float(100 - k)))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["000004.json", "000005.json"]
    assert store.ids() == ["000004", "000005"]


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_checkpointer_saves_improvements_and_throttles_the_rest(tmp_path: Path) -> None:
    store = FileCheckpointStore(tmp_path)
    clock = FakeClock()
    saver = Checkpointer(
        store, program_id="p1", run="r", algorithm="cp_sat", min_interval=60, clock=clock
    )
    pairs = (("r1", "DAY-0"),)
    for k, objective in enumerate([100.0, 90.0, 80.0]):  # each improving one, at once
        clock.now = k * 0.01
        saver(Checkpoint(pairs=pairs, objective=objective, elapsed=clock.now))
    assert saver.saved == ["000001", "000002", "000003"]
    clock.now = 1.0
    saver(Checkpoint(pairs=(("r2", "DAY-0"),), objective=80.0, elapsed=1.0))  # same: wait
    saver(Checkpoint(pairs=pairs, objective=95.0, elapsed=1.0))  # worse: never
    assert len(saver.saved) == 3
    clock.now = 61.0
    saver(Checkpoint(pairs=pairs, objective=99.0, elapsed=61.0))  # worse: never
    saver(Checkpoint(pairs=(("r2", "DAY-0"),), objective=80.0, elapsed=61.0))  # due now
    assert len(saver.saved) == 4
    latest = store.latest()
    assert latest is not None
    assert latest.objective == 80.0 and latest.pairs == (("r2", "DAY-0"),)
    assert latest.run == "r" and latest.program_id == "p1"
    assert saver.best is not None and saver.best.objective == 80.0


def test_checkpointer_keeps_going_when_the_disk_fails(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    saver = Checkpointer(
        FileCheckpointStore(blocker / "cps"), program_id="p1", run="r", algorithm="cp_sat"
    )
    saver(Checkpoint(pairs=(), objective=1.0, elapsed=0.1))
    assert saver.errors and saver.saved == []
    assert saver.best is not None


def test_hint_from_refuses_another_programs_checkpoint() -> None:
    cp = record(id="000004")
    assert hint_from(cp) == frozenset(cp.pairs)
    assert hint_from(cp, program_id="p1") == frozenset(cp.pairs)
    with pytest.raises(InvalidInput, match="belongs to program 'p1'"):
        hint_from(cp, program_id="other")


def small_program() -> ProgramData:
    slots = []
    for d in range(14):
        slots.append(mkslot(f"DAY-{d}", d, 7, 12, min_staff=2, max_staff=3))
        slots.append(
            mkslot(f"NIGHT-{d}", d, 19, 12, ShiftKind.NIGHT_FLOAT, min_staff=1, max_staff=1)
        )
    people = [resident(f"r{i}", pgy=1 + i % 3) for i in range(8)] + [faculty("f1")]
    return program(people=people, slots=slots, days=14)


def test_resume_from_the_newest_verified_checkpoint(tmp_path: Path) -> None:
    data = small_program()
    store = FileCheckpointStore(tmp_path)
    saver = Checkpointer(store, program_id=data.program.id, run="first", algorithm="cp_sat")
    first = solve(
        data,
        SolveParams(time_limit=10, workers=1, seed=1),
        Control(on_checkpoint=saver),
    )
    assert first.has_schedule and saver.saved
    # a damaged extra file on top: refused by default, skipped when asked
    bad = tmp_path / f"{len(saver.saved) + 1:06d}.json"
    bad.write_bytes(b'{"format": "rsched-checkpoint/1", "sha256": "00", "content": {}}')
    with pytest.raises(CheckpointCorrupt):
        store.latest()
    skipped: list[CheckpointCorrupt] = []
    cp = store.latest(verified_only=True, skipped=skipped)
    assert cp is not None and [bad.name in str(e) for e in skipped] == [True]
    assert cp.objective == first.objective
    assert {(a.person_id, a.slot_id) for a in first.assignments} == set(cp.pairs)

    hint = hint_from(cp, program_id=data.program.id)
    assert hint == frozenset(cp.pairs)
    resumed = solve(data, SolveParams(time_limit=10, workers=1, seed=2), Control(hint=hint))
    assert resumed.has_schedule and resumed.report is not None and resumed.report.ok
    assert resumed.objective is not None and resumed.objective <= cp.objective
