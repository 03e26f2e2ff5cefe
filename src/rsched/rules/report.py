"""The independent validator: runs every rule on a schedule and reports the quality figures."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from rsched.domain import Assignment, ProgramData, Severity
from rsched.rules.access import candidate_slots
from rsched.rules.base import CheckContext, Violation
from rsched.rules.registry import ALL_RULES
from rsched.rules.soft import Fairness, evaluate, fairness, weighted
from rsched.rules.staffing import staffed_positions


@dataclass(frozen=True, slots=True, kw_only=True)
class ValidationReport:
    violations: tuple[Violation, ...]
    """Hard breaches (severity violation)."""
    warnings: tuple[Violation, ...]
    coverage: float
    """Staffed slot-positions ÷ required slot-positions (1.0 when nothing is required)."""
    required_positions: int
    staffed_positions: int
    fairness: tuple[Fairness, ...]
    penalties: dict[str, int] = field(default_factory=dict)
    """Unweighted value of each named soft term."""
    objective: int = 0
    """Weighted sum of the penalties, as the solver's objective defines it."""
    seconds_by_rule: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.violations

    def count_by_rule(self, severity: Severity) -> dict[str, int]:
        items = self.violations if severity is Severity.VIOLATION else self.warnings
        return dict(sorted(Counter(v.rule for v in items).items()))

    def summary(self) -> dict[str, object]:
        return {
            "violations": len(self.violations),
            "warnings": len(self.warnings),
            "violations_by_rule": self.count_by_rule(Severity.VIOLATION),
            "warnings_by_rule": self.count_by_rule(Severity.WARNING),
            "coverage": round(self.coverage, 6),
            "objective": self.objective,
            "penalties": dict(sorted(self.penalties.items())),
            "fairness": [
                {
                    "category": f.category,
                    "pgy": f.pgy,
                    "min": f.min,
                    "max": f.max,
                    "spread": f.spread,
                }
                for f in self.fairness
            ],
        }


def validate(
    data: ProgramData,
    assignments: Iterable[Assignment],
    *,
    previous: frozenset[tuple[str, str]] = frozenset(),
    candidates: dict[str, list[str]] | None = None,
) -> ValidationReport:
    """Check ``assignments`` against every rule of the registry. Never raises on a rule
    breach (only on references to unknown people or slots)."""
    ctx = CheckContext(data, assignments)
    found: list[Violation] = []
    seconds: dict[str, float] = {}
    for rule in ALL_RULES:
        t0 = time.perf_counter()
        found.extend(rule.check(ctx))
        seconds[rule.code] = time.perf_counter() - t0
    violations = tuple(v for v in found if v.severity is Severity.VIOLATION)
    warnings = tuple(v for v in found if v.severity is Severity.WARNING)
    required = sum(s.min_staff for s in data.slots)
    staffed = sum(staffed_positions(s, ctx.people_on.get(s.id, [])) for s in data.slots)
    cands = candidates if candidates is not None else candidate_slots(data)
    warn_terms = {
        "rest": sum(1 for v in warnings if v.rule == "REST_8"),
    }
    penalties = evaluate(ctx, cands, previous, warn_terms)
    return ValidationReport(
        violations=violations,
        warnings=warnings,
        coverage=staffed / required if required else 1.0,
        required_positions=required,
        staffed_positions=staffed,
        fairness=tuple(fairness(ctx, cands)),
        penalties=penalties,
        objective=weighted(data, penalties),
        seconds_by_rule=seconds,
    )
