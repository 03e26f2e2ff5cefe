"""The one entry point to every solver: build the model from the rule engine, solve,
and re-validate the result independently before anyone sees it."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

from rsched.domain import ProgramData
from rsched.domain.errors import FieldError, InvalidInput
from rsched.rules.report import validate
from rsched.solver.control import Control
from rsched.solver.model import ModelSpec, build_model
from rsched.solver.result import SolveResult, SolveStatus

MAX_TIME_LIMIT = 24 * 3600.0


@dataclass(frozen=True, slots=True, kw_only=True)
class SolveParams:
    algorithm: str = "cp_sat"
    time_limit: float = 60.0
    workers: int = 2
    seed: int = 0
    deterministic: bool = False

    def check(self) -> None:
        errors = []
        if self.algorithm not in SOLVERS:
            errors.append(
                FieldError(
                    "solver",
                    f"unknown solver {self.algorithm!r}; choose one of {', '.join(SOLVERS)}",
                )
            )
        if not (isinstance(self.time_limit, int | float) and math.isfinite(self.time_limit)):
            errors.append(FieldError("time_limit", "must be a number of seconds"))
        elif not 0 < self.time_limit <= MAX_TIME_LIMIT:
            errors.append(
                FieldError("time_limit", f"must be > 0 and ≤ {MAX_TIME_LIMIT:.0f} seconds")
            )
        if not 1 <= self.workers <= 64:
            errors.append(FieldError("workers", "must be 1..64"))
        if errors:
            raise InvalidInput(errors)


def _cp_sat(spec: ModelSpec, params: SolveParams, control: Control) -> SolveResult:
    from rsched.solver.cpsat import CpSatParams, solve_cpsat

    return solve_cpsat(
        spec,
        CpSatParams(
            time_limit=params.time_limit,
            workers=params.workers,
            seed=params.seed,
            deterministic=params.deterministic,
        ),
        control,
    )


def _mip(spec: ModelSpec, params: SolveParams, control: Control) -> SolveResult:
    from rsched.solver.mip import MipParams, solve_mip

    return solve_mip(
        spec,
        MipParams(time_limit=params.time_limit, threads=params.workers, seed=params.seed),
        control,
    )


def _greedy(spec: ModelSpec, params: SolveParams, control: Control) -> SolveResult:
    from rsched.solver.greedy import GreedyParams, solve_greedy

    return solve_greedy(spec, GreedyParams(time_limit=params.time_limit, seed=params.seed), control)


SolverFn = Callable[[ModelSpec, SolveParams, Control], SolveResult]
SOLVERS: dict[str, SolverFn] = {"cp_sat": _cp_sat, "greedy": _greedy, "mip": _mip}


def register_solver(name: str, fn: SolverFn) -> None:
    SOLVERS[name] = fn


def solve(
    data: ProgramData,
    params: SolveParams | None = None,
    control: Control | None = None,
    *,
    previous: frozenset[tuple[str, str]] = frozenset(),
    fixed: frozenset[tuple[str, str]] = frozenset(),
    spec: ModelSpec | None = None,
) -> SolveResult:
    """Solve ``data`` with the chosen algorithm and attach the validator's report."""
    params = params or SolveParams()
    params.check()
    control = control or Control()
    spec = spec or build_model(data, previous=previous, fixed=fixed)
    result = SOLVERS[params.algorithm](spec, params, control)
    if result.status is SolveStatus.INFEASIBLE and not result.explanation:
        from rsched.solver.explain import explain_infeasible

        result = replace(result, explanation=tuple(explain_infeasible(spec)))
    report = validate(data, result.assignments, previous=previous, candidates=spec.mctx.candidates)
    if result.has_schedule:
        found = len(report.violations)
        if found != result.claimed_violations:
            note = (
                f"validator found {found} hard violation(s) where the solver claimed "
                f"{result.claimed_violations}: "
                + "; ".join(sorted({v.rule for v in report.violations}))
            )
            result = replace(result, notes=(*result.notes, note))
    return result.with_report(report)
