"""Checkpoints that survive a crash: canonical JSON content, a SHA-256 beside it, atomic
files, and a throttled saver usable as ``Control.on_checkpoint``.

A checkpoint file ``{n:06d}.json`` holds::

    {"format": "rsched-checkpoint/1", "sha256": "<hex>", "content": {...}}

where the hash is taken over the *canonical* JSON of ``content`` (sorted keys, no
whitespace, UTF-8), so it does not depend on how the file happens to be laid out.
Loading refuses a file whose content does not hash to the recorded value, that does not
parse, or that misses a key, with a :class:`CheckpointCorrupt` naming the file and the
problem. A corrupt newest checkpoint is refused, never silently skipped; a caller that
wants "the newest one that is still good" asks for it explicitly
(``latest(verified_only=True, skipped=[...])``) and is told which files were passed over.

Each store assumes one writer per folder (numbers are allocated from the files present).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from rsched.domain.errors import CheckpointCorrupt, FieldError, InvalidInput, NotFound
from rsched.solver.control import Checkpoint

FORMAT = "rsched-checkpoint/1"
CONTENT_KEYS = (
    "algorithm",
    "created_at",
    "elapsed",
    "objective",
    "pairs",
    "program_id",
    "run",
)
_NAME = re.compile(r"^(\d{6,})\.json$")
_ID = re.compile(r"^\d{1,}$")


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckpointRecord:
    """The stored form of one checkpoint. ``id`` is given by the store (the file's number)
    and is not part of the hashed content."""

    program_id: str
    run: str
    """The run id or a label naming the solve this checkpoint belongs to."""
    pairs: tuple[tuple[str, str], ...]
    """Chosen (person, slot) pairs, sorted."""
    objective: float
    elapsed: float
    """Seconds since the solve started."""
    algorithm: str
    created_at: str = field(default_factory=_now_iso)
    """ISO 8601 UTC time of creation."""
    id: str = ""

    def __post_init__(self) -> None:
        pairs = tuple(sorted((str(p), str(s)) for p, s in self.pairs))
        object.__setattr__(self, "pairs", pairs)
        if not math.isfinite(self.objective):
            raise ValueError(f"checkpoint objective must be finite, got {self.objective!r}")
        if not math.isfinite(self.elapsed):
            raise ValueError(f"checkpoint elapsed must be finite, got {self.elapsed!r}")

    @classmethod
    def from_checkpoint(
        cls,
        cp: Checkpoint,
        *,
        program_id: str,
        run: str,
        algorithm: str,
        created_at: str | None = None,
    ) -> CheckpointRecord:
        return cls(
            program_id=program_id,
            run=run,
            pairs=cp.pairs,
            objective=float(cp.objective),
            elapsed=float(cp.elapsed),
            algorithm=algorithm,
            created_at=created_at or _now_iso(),
        )

    def content(self) -> dict[str, object]:
        """What is hashed and stored (everything except ``id``)."""
        return {
            "algorithm": self.algorithm,
            "created_at": self.created_at,
            "elapsed": self.elapsed,
            "objective": self.objective,
            "pairs": [[p, s] for p, s in self.pairs],
            "program_id": self.program_id,
            "run": self.run,
        }

    def to_checkpoint(self) -> Checkpoint:
        return Checkpoint(pairs=self.pairs, objective=self.objective, elapsed=self.elapsed)


def canonical_json(content: Mapping[str, object]) -> bytes:
    """Sorted keys, no insignificant whitespace, UTF-8, no NaN/Infinity."""
    return json.dumps(
        content, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def sha256(record: CheckpointRecord) -> str:
    """Hex SHA-256 of the canonical JSON of the record's content."""
    return hashlib.sha256(canonical_json(record.content())).hexdigest()


def _content_sha256(content: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(content)).hexdigest()


def encode(record: CheckpointRecord) -> bytes:
    """The bytes of a checkpoint file."""
    wrapper = {"content": record.content(), "format": FORMAT, "sha256": sha256(record)}
    return canonical_json(wrapper) + b"\n"


def decode(raw: bytes, *, source: str, id: str = "") -> CheckpointRecord:
    """Parse and verify the bytes of a checkpoint file; ``source`` names it in errors."""

    def corrupt(problem: str) -> CheckpointCorrupt:
        return CheckpointCorrupt(f"checkpoint {source} is corrupt: {problem}")

    try:
        wrapper = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise corrupt(f"unparsable ({exc})") from None
    if not isinstance(wrapper, dict):
        raise corrupt(f"unparsable (expected a JSON object, got {type(wrapper).__name__})")
    missing = [k for k in ("content", "format", "sha256") if k not in wrapper]
    if missing:
        raise corrupt(f"missing key(s) {', '.join(missing)}")
    if wrapper["format"] != FORMAT:
        raise corrupt(f"unknown format {wrapper['format']!r} (expected {FORMAT!r})")
    content, recorded = wrapper["content"], wrapper["sha256"]
    if not isinstance(content, dict):
        raise corrupt("'content' is not a JSON object")
    if not isinstance(recorded, str):
        raise corrupt("'sha256' is not a string")
    try:
        computed = _content_sha256(content)
    except ValueError as exc:
        raise corrupt(f"content cannot be hashed ({exc})") from None
    if computed != recorded:
        raise corrupt(f"hash mismatch (recorded sha256 {recorded}, content hashes to {computed})")
    missing = [k for k in CONTENT_KEYS if k not in content]
    if missing:
        raise corrupt(f"missing key(s) in content: {', '.join(missing)}")
    extra = sorted(set(content) - set(CONTENT_KEYS))
    if extra:
        raise corrupt(f"unexpected key(s) in content: {', '.join(extra)}")
    try:
        return _record_from(content, id)
    except (TypeError, ValueError) as exc:
        raise corrupt(f"bad value ({exc})") from None


def _record_from(content: dict[str, Any], id: str) -> CheckpointRecord:
    def text(key: str) -> str:
        value = content[key]
        if not isinstance(value, str):
            raise TypeError(f"{key} must be a string")
        return value

    def number(key: str) -> float:
        value = content[key]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"{key} must be a number")
        return float(value)

    raw_pairs = content["pairs"]
    if not isinstance(raw_pairs, list):
        raise TypeError("pairs must be a list")
    pairs: list[tuple[str, str]] = []
    for i, item in enumerate(raw_pairs):
        if not (
            isinstance(item, list) and len(item) == 2 and all(isinstance(v, str) for v in item)
        ):
            raise TypeError(f"pairs[{i}] must be [person, slot]")
        pairs.append((item[0], item[1]))
    return CheckpointRecord(
        program_id=text("program_id"),
        run=text("run"),
        pairs=tuple(pairs),
        objective=number("objective"),
        elapsed=number("elapsed"),
        algorithm=text("algorithm"),
        created_at=text("created_at"),
        id=id,
    )


@runtime_checkable
class CheckpointStore(Protocol):
    def save(self, cp: CheckpointRecord) -> str:
        """Store ``cp``; return its id."""
        ...

    def latest(
        self, *, verified_only: bool = False, skipped: list[CheckpointCorrupt] | None = None
    ) -> CheckpointRecord | None:
        """The newest checkpoint, or ``None`` when there is none."""
        ...

    def load(self, id: str | int) -> CheckpointRecord:
        """The checkpoint ``id``, verified (:class:`CheckpointCorrupt` if it is not)."""
        ...


class FileCheckpointStore:
    """Checkpoints as ``{n:06d}.json`` files in one folder, written atomically."""

    def __init__(self, folder: str | os.PathLike[str], *, keep: int | None = None) -> None:
        """``keep``: when set, only the newest ``keep`` files are kept after each save."""
        if keep is not None and keep < 1:
            raise InvalidInput(FieldError("keep", "must be at least 1"))
        self.folder = Path(folder)
        self.keep = keep
        self._lock = threading.Lock()

    def _numbers(self) -> list[int]:
        if not self.folder.is_dir():
            return []
        found = []
        for entry in os.scandir(self.folder):
            m = _NAME.match(entry.name)
            if m and entry.is_file():
                found.append(int(m.group(1)))
        return sorted(found)

    def ids(self) -> list[str]:
        """Ids of the stored checkpoints, oldest first."""
        return [f"{n:06d}" for n in self._numbers()]

    def path_of(self, id: str | int) -> Path:
        text = str(id)
        if not _ID.match(text):
            raise InvalidInput(FieldError("checkpoint", f"not a checkpoint id: {text!r}"))
        return self.folder / f"{int(text):06d}.json"

    def save(self, cp: CheckpointRecord) -> str:
        data = encode(cp)
        with self._lock:
            self.folder.mkdir(parents=True, exist_ok=True)
            numbers = self._numbers()
            n = (numbers[-1] + 1) if numbers else 1
            final = self.path_of(n)
            fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=self.folder)
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, final)
            except BaseException:
                try:
                    os.unlink(tmp)
                except FileNotFoundError:
                    pass
                raise
            _fsync_dir(self.folder)
            if self.keep is not None:
                for old in numbers[: max(0, len(numbers) + 1 - self.keep)]:
                    try:
                        self.path_of(old).unlink()
                    except FileNotFoundError:
                        pass
        return f"{n:06d}"

    def load(self, id: str | int) -> CheckpointRecord:
        path = self.path_of(id)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise NotFound(f"checkpoint {path} does not exist") from None
        return decode(raw, source=str(path), id=path.stem)

    def latest(
        self, *, verified_only: bool = False, skipped: list[CheckpointCorrupt] | None = None
    ) -> CheckpointRecord | None:
        """The newest checkpoint. A corrupt newest file raises :class:`CheckpointCorrupt`;
        with ``verified_only=True`` the newest *valid* one is returned instead and every
        corrupt file passed over is appended to ``skipped``."""
        for n in reversed(self._numbers()):
            try:
                return self.load(n)
            except CheckpointCorrupt as exc:
                if not verified_only:
                    raise
                if skipped is not None:
                    skipped.append(exc)
        return None


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class Checkpointer:
    """A ``Control.on_checkpoint`` that saves improving solutions without flooding the disk.

    Every solution whose objective is strictly better than the last one saved is written at
    once. Any other callback (same objective again, e.g. from a heuristic re-reporting its
    incumbent) is written at most once per ``min_interval`` seconds, and only when it is
    not worse than the last one saved, so ``latest()`` is always the best solution seen.

    Safe to call from several solver threads. A failed write does not stop the solve: the
    error is kept in ``errors`` (and the solution in ``best``).
    """

    def __init__(
        self,
        store: CheckpointStore,
        *,
        program_id: str,
        run: str,
        algorithm: str,
        min_interval: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not min_interval >= 0:
            raise InvalidInput(FieldError("min_interval", "must be ≥ 0 seconds"))
        self.store = store
        self.program_id = program_id
        self.run = run
        self.algorithm = algorithm
        self.min_interval = min_interval
        self._clock = clock
        self._lock = threading.Lock()
        self._last_save: float | None = None
        self._last_objective: float | None = None
        self.best: Checkpoint | None = None
        """The best solution received (saved or not)."""
        self.saved: list[str] = []
        """Ids of the checkpoints written, oldest first."""
        self.errors: list[OSError] = []

    def __call__(self, cp: Checkpoint) -> None:
        with self._lock:
            if self.best is None or cp.objective < self.best.objective:
                self.best = cp
            now = self._clock()
            last = self._last_objective
            if last is not None and not cp.objective < last:
                if cp.objective > last:
                    return
                if self._last_save is not None and now - self._last_save < self.min_interval:
                    return
            record = CheckpointRecord.from_checkpoint(
                cp, program_id=self.program_id, run=self.run, algorithm=self.algorithm
            )
            self._last_save = now
            self._last_objective = cp.objective
            try:
                self.saved.append(self.store.save(record))
            except OSError as exc:
                self.errors.append(exc)


def hint_from(
    cp: CheckpointRecord | Checkpoint, *, program_id: str | None = None
) -> frozenset[tuple[str, str]]:
    """The pairs of a checkpoint, to pass as ``Control.hint`` when resuming. With
    ``program_id``, a checkpoint of another program is refused."""
    if program_id is not None and isinstance(cp, CheckpointRecord) and cp.program_id != program_id:
        raise InvalidInput(
            FieldError(
                "checkpoint",
                f"checkpoint {cp.id or '?'} belongs to program {cp.program_id!r}, "
                f"not {program_id!r}",
            )
        )
    return frozenset(cp.pairs)
