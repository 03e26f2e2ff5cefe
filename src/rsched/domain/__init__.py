"""The domain core: frozen records, enums, errors. Standard library only."""

from rsched.domain.calendar import Period
from rsched.domain.enums import (
    AssignmentSource,
    PersonKind,
    RunState,
    ScheduleStatus,
    Severity,
    ShiftKind,
)
from rsched.domain.errors import (
    CheckpointCorrupt,
    FieldError,
    Infeasible,
    InvalidInput,
    NotFound,
    RschedError,
    SolverFailure,
)
from rsched.domain.model import (
    Absence,
    Assignment,
    Block,
    Person,
    Program,
    Request,
    Rotation,
    RotationAssignment,
    Schedule,
    ShiftType,
    Slot,
)
from rsched.domain.problem import ProgramData
from rsched.domain.settings import ObjectiveWeights, ProgramSettings, RuleSettings

__all__ = [
    "Absence",
    "Assignment",
    "AssignmentSource",
    "Block",
    "CheckpointCorrupt",
    "FieldError",
    "Infeasible",
    "InvalidInput",
    "NotFound",
    "ObjectiveWeights",
    "Period",
    "Person",
    "PersonKind",
    "Program",
    "ProgramData",
    "ProgramSettings",
    "Request",
    "Rotation",
    "RotationAssignment",
    "RschedError",
    "RuleSettings",
    "RunState",
    "Schedule",
    "ScheduleStatus",
    "Severity",
    "ShiftKind",
    "ShiftType",
    "Slot",
    "SolverFailure",
]
