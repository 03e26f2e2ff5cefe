"""Rule and objective settings of a program; defaults are the ACGME numbers."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from rsched.domain.errors import FieldError, InvalidInput


@dataclass(frozen=True, slots=True, kw_only=True)
class RuleSettings:
    """Limits used by the rules. Every field has the ACGME (or documented local) default."""

    weekly_hours_limit: int = 80
    """HOURS_80: average weekly hours over an averaging period."""
    hours_exception: bool = False
    """HOURS_80: the program holds an RRC-granted exception (88 h)."""
    weekly_hours_exception_limit: int = 88
    rolling_window_days: int = 28
    """HOURS_80_ROLLING: length of the rolling advisory window."""
    exclude_leave_from_average: bool = True
    """Leave days leave both the hours and the day count of an averaging period."""
    day_off_every_days: int = 7
    """DAY_OFF_1_IN_7: one day off per this many non-leave days."""
    day_off_calendar_day: bool = False
    """DAY_OFF_1_IN_7: a day off is a whole local calendar day (otherwise any 24 free hours)."""
    max_continuous_minutes: int = 24 * 60
    """CONTINUOUS_24_4: clinical duty stretch."""
    max_continuous_with_education_minutes: int = 28 * 60
    """CONTINUOUS_24_4: the stretch with education/handoff time appended."""
    merge_gap_minutes: int = 60
    """Duty periods separated by less than this are one continuous stretch (local policy)."""
    min_rest_minutes: int = 8 * 60
    """REST_8: time off between duty periods (ACGME 'should': a warning)."""
    rest_after_call_minutes: int = 14 * 60
    """REST_14_AFTER_24: time off after 24 h of in-house call."""
    call_every_nights: int = 3
    """CALL_Q3: in-house call no more often than every third night."""

    @property
    def hours_limit(self) -> int:
        return (
            self.weekly_hours_exception_limit if self.hours_exception else self.weekly_hours_limit
        )

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, path: str = "settings.rules") -> RuleSettings:
        result: RuleSettings = _from_dict(cls, data, path)
        return result


@dataclass(frozen=True, slots=True, kw_only=True)
class ObjectiveWeights:
    """Weights of the named soft penalty terms (all integers; 0 switches a term off)."""

    night_spread: int = 20
    weekend_spread: int = 20
    call_spread: int = 30
    request: int = 10
    """Multiplied by each request's own weight."""
    continuity: int = 2
    """Clinic continuity: a resident's clinic sessions with faculty other than their usual one."""
    churn: int = 50
    """Per assignment changed against the previous (active) schedule when repairing."""
    rest: int = 40
    """Per REST_8 warning the solver could not avoid."""
    rolling_hours: int = 5
    """Per hour above the rolling 28-day advisory limit."""

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, path: str = "settings.weights") -> ObjectiveWeights:
        weights: ObjectiveWeights = _from_dict(cls, data, path)
        return weights


def _from_dict(cls: Any, data: dict[str, Any], path: str) -> Any:
    known = {f.name: f for f in fields(cls)}
    errors: list[FieldError] = []
    values: dict[str, Any] = {}
    for key, value in data.items():
        if key not in known:
            errors.append(FieldError(f"{path}.{key}", "unknown setting"))
            continue
        default = known[key].default
        if isinstance(default, bool):
            if not isinstance(value, bool):
                errors.append(FieldError(f"{path}.{key}", "must be true or false"))
                continue
        elif isinstance(default, int):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                errors.append(FieldError(f"{path}.{key}", "must be a whole number ≥ 0"))
                continue
        values[key] = value
    if errors:
        raise InvalidInput(errors)
    return cls(**values)


@dataclass(frozen=True, slots=True, kw_only=True)
class ProgramSettings:
    rules: RuleSettings = field(default_factory=RuleSettings)
    weights: ObjectiveWeights = field(default_factory=ObjectiveWeights)
