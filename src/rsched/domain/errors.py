"""One exception root for the whole product; every error names what was wrong."""

from __future__ import annotations

from dataclasses import dataclass


class RschedError(Exception):
    """Root of every error rsched raises on purpose."""


@dataclass(frozen=True, slots=True)
class FieldError:
    """One problem with one input field, located by a path such as ``people[3].pgy``."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class InvalidInput(RschedError):
    """Input was refused; ``errors`` lists every problem found, each with its path."""

    def __init__(self, errors: list[FieldError] | FieldError, *, source: str = "") -> None:
        self.errors: list[FieldError] = [errors] if isinstance(errors, FieldError) else errors
        self.source = source
        head = f"{source}: " if source else ""
        lines = "\n".join(f"  {e}" for e in self.errors)
        super().__init__(f"{head}{len(self.errors)} error(s)\n{lines}")


class NotFound(RschedError):
    """A referenced object does not exist (or is not visible to the caller)."""


class Infeasible(RschedError):
    """No schedule satisfies the hard rules; ``reasons`` explains why in the user's terms."""

    def __init__(self, reasons: list[str]) -> None:
        self.reasons = reasons
        super().__init__("no feasible schedule: " + "; ".join(reasons))


class CheckpointCorrupt(RschedError):
    """A checkpoint's content does not match its recorded SHA-256."""


class SolverFailure(RschedError):
    """The solver could not run (bad parameters, resource limit, crash of the child)."""
