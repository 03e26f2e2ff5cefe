"""CP-SAT (OR-Tools): the default exact solver."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from ortools.sat.python import cp_model

from rsched.domain import Assignment, AssignmentSource
from rsched.rules.base import Linear, Var, X
from rsched.solver.control import Checkpoint, Control, Progress, Watchdog
from rsched.solver.model import ModelSpec
from rsched.solver.result import SolveResult, SolveStatus, StopReason


@dataclass(frozen=True, slots=True, kw_only=True)
class CpSatParams:
    time_limit: float = 60.0
    workers: int = 2
    seed: int = 0
    deterministic: bool = False
    """Reproducible search: a deterministic-time limit instead of wall time."""
    log: bool = False


class _Vars:
    def __init__(self, model: cp_model.CpModel, spec: ModelSpec) -> None:
        self.x: dict[X, cp_model.IntVar] = {}
        for x in spec.x_vars():
            self.x[x] = model.new_bool_var(f"x[{x.person},{x.slot}]")
        self.aux: dict[str, cp_model.IntVar] = {}
        for a in spec.aux_vars():
            self.aux[a.name] = model.new_int_var(a.lb, a.ub, a.name)

    def __getitem__(self, v: Var) -> cp_model.IntVar:
        return self.x[v] if isinstance(v, X) else self.aux[v.name]


def post(model: cp_model.CpModel, vars_: _Vars, lin: Linear) -> cp_model.Constraint | None:
    expr = cp_model.LinearExpr.weighted_sum(
        [vars_[v] for v, _ in lin.terms], [c for _, c in lin.terms]
    )
    if lin.lb is not None and lin.ub is not None:
        return model.add_linear_constraint(expr, lin.lb, lin.ub)
    if lin.ub is not None:
        return model.add(expr <= lin.ub)
    if lin.lb is not None:
        return model.add(expr >= lin.lb)
    return None


class _Callback(cp_model.CpSolverSolutionCallback):
    def __init__(self, vars_: _Vars, control: Control, t0: float) -> None:
        super().__init__()
        self._vars = vars_
        self._control = control
        self._t0 = t0
        self.lock = threading.Lock()
        self.best: tuple[tuple[str, str], ...] | None = None
        self.objective: float | None = None
        self.bound: float | None = None
        self.solutions = 0
        self.first_at: float | None = None

    def on_solution_callback(self) -> None:
        elapsed = time.monotonic() - self._t0
        pairs = tuple(
            (x.person, x.slot) for x, var in self._vars.x.items() if self.boolean_value(var)
        )
        with self.lock:
            self.solutions += 1
            if self.first_at is None:
                self.first_at = elapsed
            self.best = pairs
            self.objective = self.objective_value
            self.bound = self.best_objective_bound
        if self._control.on_checkpoint is not None:
            self._control.on_checkpoint(
                Checkpoint(pairs=pairs, objective=self.objective, elapsed=elapsed)
            )
        if self._control.should_abort():
            self.stop_search()


def solve_cpsat(spec: ModelSpec, params: CpSatParams, control: Control) -> SolveResult:
    t0 = time.monotonic()
    model = cp_model.CpModel()
    vars_ = _Vars(model, spec)
    for lin in spec.hard:
        post(model, vars_, lin)
    for lin in spec.soft:
        post(model, vars_, lin)
    for p, s in spec.mctx.fixed:
        if X(p, s) in vars_.x:
            model.add(vars_.x[X(p, s)] == 1)
    objective_terms: list[tuple[cp_model.IntVar, int]] = []
    constant = 0
    for pen in spec.penalties:
        constant += pen.weight * pen.constant
        objective_terms.extend((vars_[v], pen.weight * c) for v, c in pen.terms)
    if objective_terms:
        model.minimize(
            cp_model.LinearExpr.weighted_sum(
                [v for v, _ in objective_terms], [c for _, c in objective_terms]
            )
            + constant
        )
    if control.hint:
        for x, var in vars_.x.items():
            model.add_hint(var, 1 if (x.person, x.slot) in control.hint else 0)

    solver = cp_model.CpSolver()
    prm = solver.parameters
    prm.num_workers = max(1, params.workers)
    prm.random_seed = params.seed
    prm.log_search_progress = params.log
    if params.deterministic:
        prm.max_deterministic_time = params.time_limit
        prm.interleave_search = True
    else:
        prm.max_time_in_seconds = params.time_limit
    callback = _Callback(vars_, control, t0)
    aborted = threading.Event()
    bound_seen: list[float] = []
    solver.best_bound_callback = bound_seen.append
    last_report = [0.0]

    def tick() -> None:
        now = time.monotonic()
        if control.should_abort() and not aborted.is_set():
            aborted.set()
            solver.stop_search()
        if control.on_progress is not None and now - last_report[0] >= 0.5:
            last_report[0] = now
            with callback.lock:
                bound = (
                    callback.bound
                    if callback.bound is not None
                    else (bound_seen[-1] if bound_seen else None)
                )
                control.on_progress(
                    Progress(
                        elapsed=now - t0,
                        solutions=callback.solutions,
                        objective=callback.objective,
                        bound=bound,
                    )
                )

    with Watchdog(control.poll_seconds, tick):
        code = solver.solve(model, callback)
    if control.should_abort():
        aborted.set()
    wall = time.monotonic() - t0

    if code == cp_model.INFEASIBLE:
        status, stop = SolveStatus.INFEASIBLE, StopReason.COMPLETED
    elif code == cp_model.MODEL_INVALID:
        raise RuntimeError(f"CP-SAT rejected the model: {model.validate()}")
    elif callback.best is None:
        status = SolveStatus.UNKNOWN
        stop = StopReason.ABORTED if aborted.is_set() else StopReason.TIME_LIMIT
    elif code == cp_model.OPTIMAL:
        status, stop = SolveStatus.OPTIMAL, StopReason.COMPLETED
    else:
        status = SolveStatus.FEASIBLE
        stop = StopReason.ABORTED if aborted.is_set() else StopReason.TIME_LIMIT

    pairs = callback.best or ()
    objective = solver.objective_value if callback.best is not None else None
    bound = solver.best_objective_bound if callback.best is not None else None
    if code == cp_model.OPTIMAL and objective is not None:
        bound = objective
    penalties: dict[str, float] = {}
    if callback.best is not None:
        for pen in spec.penalties:
            value = pen.weight * (
                pen.constant + sum(c * solver.value(vars_[v]) for v, c in pen.terms)
            )
            penalties[pen.name] = penalties.get(pen.name, 0) + value
    return SolveResult(
        algorithm="cp_sat",
        status=status,
        stop_reason=stop,
        assignments=tuple(
            Assignment(person_id=p, slot_id=s, source=AssignmentSource.SOLVER)
            for p, s in sorted(pairs)
        ),
        objective=objective,
        bound=bound,
        time_to_first=callback.first_at,
        solutions=callback.solutions,
        wall_seconds=wall,
        penalties=penalties,
        model_size=spec.size(),
    )
