"""Enumerations of the domain."""

from __future__ import annotations

from enum import StrEnum


class PersonKind(StrEnum):
    RESIDENT = "resident"
    FACULTY = "faculty"


class ShiftKind(StrEnum):
    CLINIC = "clinic"
    INPATIENT = "inpatient"
    NIGHT_FLOAT = "night_float"
    IN_HOUSE_CALL = "in_house_call"
    HOME_CALL = "home_call"
    EDUCATION = "education"
    ADMIN = "admin"

    @property
    def is_clinical(self) -> bool:
        """Clinical duty for the continuous-duty rule: every kind but education and home call."""
        return self not in (ShiftKind.EDUCATION, ShiftKind.HOME_CALL)

    @property
    def is_duty(self) -> bool:
        """Duty that ends rest and days off (everything but home call, which is off-site)."""
        return self is not ShiftKind.HOME_CALL


class Severity(StrEnum):
    VIOLATION = "violation"
    WARNING = "warning"


class AssignmentSource(StrEnum):
    SOLVER = "solver"
    MANUAL = "manual"
    SWAP = "swap"


class ScheduleStatus(StrEnum):
    DRAFT = "draft"
    STAGED = "staged"
    ACTIVE = "active"
    SUPERSEDED = "superseded"


class RunState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ABORTED = "aborted"
