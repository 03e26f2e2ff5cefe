"""The one registry of rules, grouped by severity. Nothing else defines a rule."""

from __future__ import annotations

from rsched.rules.access import Availability, Eligibility, NoOverlap
from rsched.rules.base import HardRule, Rule, SoftRule
from rsched.rules.call import CallQ3
from rsched.rules.dayoff import DayOff1In7
from rsched.rules.duty import Continuous24, Rest8, Rest14AfterCall
from rsched.rules.hours import Hours80, Hours80Rolling
from rsched.rules.staffing import Coverage, SupervisionRatio

HARD_RULES: tuple[HardRule, ...] = (
    Hours80(),
    DayOff1In7(),
    Continuous24(),
    Rest14AfterCall(),
    CallQ3(),
    SupervisionRatio(),
    Coverage(),
    Availability(),
    NoOverlap(),
    Eligibility(),
)
"""Rules whose breach is a violation; the solver posts each as constraints."""

WARNING_RULES: tuple[SoftRule, ...] = (
    Hours80Rolling(),
    Rest8(),
)
"""Rules whose breach is a warning; the solver turns each into a named penalty."""

ALL_RULES: tuple[Rule, ...] = (*HARD_RULES, *WARNING_RULES)
RULE_BY_CODE: dict[str, Rule] = {r.code: r for r in ALL_RULES}
