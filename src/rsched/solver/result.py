"""The one typed result every solver returns."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import TYPE_CHECKING

from rsched.domain import Assignment

if TYPE_CHECKING:
    from rsched.rules.report import ValidationReport


class SolveStatus(StrEnum):
    OPTIMAL = "optimal"
    FEASIBLE = "feasible"
    """A schedule was found; optimality not proved (time limit, abort, or heuristic)."""
    INFEASIBLE = "infeasible"
    """Proved: no schedule meets every hard rule."""
    UNKNOWN = "unknown"
    """Stopped before any schedule was found."""


class StopReason(StrEnum):
    COMPLETED = "completed"
    TIME_LIMIT = "time_limit"
    ABORTED = "aborted"
    RESOURCE_LIMIT = "resource_limit"


@dataclass(frozen=True, slots=True, kw_only=True)
class SolveResult:
    algorithm: str
    status: SolveStatus
    stop_reason: StopReason
    assignments: tuple[Assignment, ...]
    objective: float | None
    """The solver's own objective value (weighted penalties)."""
    bound: float | None
    """Best proved lower bound on the objective, where the solver proves one."""
    time_to_first: float | None
    solutions: int
    wall_seconds: float
    claimed_violations: int = 0
    """Hard violations the solver knows it left (0 for an exact solver with a solution)."""
    penalties: dict[str, float] = field(default_factory=dict)
    """Weighted value of each named soft term as the solver computed it."""
    explanation: tuple[str, ...] = ()
    """Why no schedule exists, in the user's terms (when infeasible)."""
    notes: tuple[str, ...] = ()
    model_size: dict[str, object] = field(default_factory=dict)
    report: ValidationReport | None = None
    """The independent validator's report on ``assignments`` (set by ``solve``)."""

    @property
    def gap(self) -> float | None:
        if self.objective is None or self.bound is None:
            return None
        if self.objective == 0:
            return 0.0
        return abs(self.objective - self.bound) / abs(self.objective)

    @property
    def has_schedule(self) -> bool:
        return self.status in (SolveStatus.OPTIMAL, SolveStatus.FEASIBLE)

    def with_report(self, report: ValidationReport) -> SolveResult:
        return replace(self, report=report)

    def summary(self) -> dict[str, object]:
        out: dict[str, object] = {
            "algorithm": self.algorithm,
            "status": str(self.status),
            "stop_reason": str(self.stop_reason),
            "objective": self.objective,
            "bound": self.bound,
            "gap": self.gap,
            "time_to_first": self.time_to_first,
            "solutions": self.solutions,
            "wall_seconds": round(self.wall_seconds, 3),
            "claimed_violations": self.claimed_violations,
            "penalties": self.penalties,
            "explanation": list(self.explanation),
            "notes": list(self.notes),
            "model_size": self.model_size,
        }
        if self.report is not None:
            out["validation"] = self.report.summary()
        return out
