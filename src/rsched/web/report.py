"""A schedule version's stored report as the pages show it: the solver's figures, the
validation (violations and warnings by rule, coverage) and fairness per PGY cohort with a
small bar chart (an SVG drawn from the numbers, with the numbers in a table beside it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

CHART_WIDTH = 360
BAR_HEIGHT = 18
LABEL_WIDTH = 70
ROW_GAP = 6


@dataclass(frozen=True, slots=True)
class Bar:
    label: str
    y: int
    x: float
    width: float
    text_x: float
    low: float
    high: float
    spread: float


@dataclass(slots=True)
class Chart:
    category: str
    height: int
    scale_max: float
    bars: list[Bar] = field(default_factory=list)


@dataclass(slots=True)
class ReportView:
    solver: dict[str, Any]
    violations: int | None
    warnings: int | None
    violations_by_rule: dict[str, int]
    warnings_by_rule: dict[str, int]
    coverage: float | None
    fairness: list[dict[str, Any]]
    charts: list[Chart]
    penalties: dict[str, Any]

    @property
    def empty(self) -> bool:
        return not self.solver and self.violations is None and not self.fairness


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def charts(fairness: list[dict[str, Any]]) -> list[Chart]:
    """One chart per category (calls, nights, weekends…): a bar per PGY level from the
    cohort's least to its most, on a scale from 0 to the category's largest count."""
    by_category: dict[str, list[dict[str, Any]]] = {}
    for row in fairness:
        by_category.setdefault(str(row.get("category", "")), []).append(row)
    out: list[Chart] = []
    span = CHART_WIDTH - LABEL_WIDTH - 40
    for category, rows in sorted(by_category.items()):
        rows.sort(key=lambda r: (r.get("pgy") is None, r.get("pgy") or 0))
        top = max((_number(r.get("max")) or 0.0 for r in rows), default=0.0) or 1.0
        chart = Chart(
            category=category, height=len(rows) * (BAR_HEIGHT + ROW_GAP) + 4, scale_max=top
        )
        for i, r in enumerate(rows):
            low = _number(r.get("min")) or 0.0
            high = _number(r.get("max")) or 0.0
            x = LABEL_WIDTH + span * low / top
            width = max(2.0, span * (high - low) / top)
            pgy = r.get("pgy")
            chart.bars.append(
                Bar(
                    label=f"PGY-{pgy}" if pgy is not None else "all",
                    y=2 + i * (BAR_HEIGHT + ROW_GAP),
                    x=round(x, 1),
                    width=round(width, 1),
                    text_x=round(x + width + 4, 1),
                    low=low,
                    high=high,
                    spread=_number(r.get("spread")) or high - low,
                )
            )
        out.append(chart)
    return out


SOLVER_KEYS = (
    ("algorithm", "Solver"),
    ("status", "Status"),
    ("stop_reason", "Stopped by"),
    ("objective", "Objective"),
    ("bound", "Best bound"),
    ("gap", "Gap"),
    ("time_to_first", "Time to first schedule"),
    ("wall_seconds", "Solve time"),
    ("solutions", "Solutions found"),
)


def report_view(report: dict[str, Any] | None) -> ReportView:
    report = dict(report or {})
    validation = report.get("validation")
    if not isinstance(validation, dict):  # a summary of the interchange file's shape
        validation = {k: report[k] for k in ("violations", "warnings", "coverage") if k in report}
        for key in ("violations_by_rule", "warnings_by_rule", "fairness"):
            if key in report:
                validation[key] = report[key]
    fairness = [f for f in validation.get("fairness", []) if isinstance(f, dict)]
    violations = validation.get("violations")
    warnings = validation.get("warnings")
    return ReportView(
        solver={key: report[key] for key, _ in SOLVER_KEYS if key in report},
        violations=int(violations) if isinstance(violations, int | float) else None,
        warnings=int(warnings) if isinstance(warnings, int | float) else None,
        violations_by_rule=dict(validation.get("violations_by_rule") or {}),
        warnings_by_rule=dict(validation.get("warnings_by_rule") or {}),
        coverage=_number(validation.get("coverage")),
        fairness=fairness,
        charts=charts(fairness),
        penalties=dict(validation.get("penalties") or report.get("penalties") or {}),
    )
