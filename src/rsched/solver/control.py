"""Control hooks every solver honours: progress, abort, checkpoints."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True, kw_only=True)
class Progress:
    elapsed: float
    solutions: int
    objective: float | None
    bound: float | None
    iterations: int = 0
    phase: str = "search"

    @property
    def gap(self) -> float | None:
        if self.objective is None or self.bound is None:
            return None
        if self.objective == 0:
            return 0.0 if self.bound == 0 else None
        return abs(self.objective - self.bound) / max(abs(self.objective), 1e-9)

    def to_dict(self) -> dict[str, object]:
        return {
            "elapsed": round(self.elapsed, 3),
            "solutions": self.solutions,
            "objective": self.objective,
            "bound": self.bound,
            "gap": self.gap,
            "iterations": self.iterations,
            "phase": self.phase,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class Checkpoint:
    """An improving solution: the chosen pairs and their objective."""

    pairs: tuple[tuple[str, str], ...]
    objective: float
    elapsed: float


@dataclass(kw_only=True)
class Control:
    """What the caller gives a solver. Every field is optional.

    ``should_abort`` is polled from the solution callback and from a timer at least
    every ``poll_seconds``; ``on_progress`` is called at least once a second (also
    before the first solution); ``on_checkpoint`` receives each improving solution.
    """

    should_abort: Callable[[], bool] = field(default=lambda: False)
    on_progress: Callable[[Progress], None] | None = None
    on_checkpoint: Callable[[Checkpoint], None] | None = None
    poll_seconds: float = 0.2
    hint: frozenset[tuple[str, str]] = frozenset()
    """A previous solution (e.g. a verified checkpoint) to start from."""


class AbortFlag:
    """A thread-safe abort flag usable as ``Control.should_abort``."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason: str | None = None

    def set(self, reason: str = "abort requested") -> None:
        self.reason = reason
        self._event.set()

    def __call__(self) -> bool:
        return self._event.is_set()


class Watchdog:
    """A timer thread: calls ``tick()`` every ``period`` seconds until stopped. Solvers
    use it to report progress and poll the abort flag while no solution arrives."""

    def __init__(self, period: float, tick: Callable[[], None]) -> None:
        self._period = period
        self._tick = tick
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rsched-watchdog", daemon=True)
        self.started = time.monotonic()

    def _run(self) -> None:
        while not self._stop.wait(self._period):
            self._tick()

    def __enter__(self) -> Watchdog:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
