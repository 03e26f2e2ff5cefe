"""The rule engine: one object per rule code, serving the validator and the solvers."""

from rsched.rules.base import CheckContext, Linear, ModelContext, Penalty, Violation
from rsched.rules.registry import ALL_RULES, HARD_RULES, RULE_BY_CODE, WARNING_RULES
from rsched.rules.report import ValidationReport, validate

__all__ = [
    "ALL_RULES",
    "HARD_RULES",
    "RULE_BY_CODE",
    "WARNING_RULES",
    "CheckContext",
    "Linear",
    "ModelContext",
    "Penalty",
    "ValidationReport",
    "Violation",
    "validate",
]
