"""HiGHS (highspy): an exact MIP solver over the same model IR as CP-SAT.

Columns are the candidate ``X`` pairs (0/1) followed by the ``Aux`` variables (integers
within their bounds); every hard and soft ``Linear`` becomes one row; the objective is
``Σ weight·coef·var + Σ weight·constant``; fixed pairs get the bounds [1, 1]; the hint
is passed as a (partial) start. HiGHS prints nothing (``output_flag`` off before
anything else happens) and reports each improving solution through its callback, which
becomes a checkpoint. An abort (or the time limit) interrupts HiGHS from its interrupt
callbacks; as HiGHS may go seconds without calling one (presolve, the root LP of a large
model), it runs on its own thread and the caller gets the best solution so far after
at most ``GRACE_SECONDS`` in any case.

Objective and penalties are read from the solution's variables, as for CP-SAT: an
incumbent whose spread variables are not yet tight reports more than the validator.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import highspy
import numpy as np
import numpy.typing as npt

from rsched.domain import Assignment, AssignmentSource
from rsched.rules.base import Linear, Var, X
from rsched.solver.control import Checkpoint, Control, Progress, Watchdog
from rsched.solver.model import ModelSpec
from rsched.solver.result import SolveResult, SolveStatus, StopReason

_MS = highspy.HighsModelStatus
_ERRORS = frozenset(
    {
        _MS.kLoadError,
        _MS.kModelError,
        _MS.kPresolveError,
        _MS.kSolveError,
        _MS.kPostsolveError,
    }
)


GRACE_SECONDS = 0.5
"""How long HiGHS may take to stop by itself after an abort or the time limit."""


@dataclass(frozen=True, slots=True, kw_only=True)
class MipParams:
    time_limit: float = 60.0
    threads: int = 2
    seed: int = 0


class _QuietHighs(highspy.Highs):
    """``highspy.Highs`` that never writes to the console.

    ``Highs.__init__`` installs its callback dispatcher, which makes HiGHS write its
    banner unless ``output_flag`` is already off; switch it off first."""

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]

    def enableCallbacks(self) -> None:
        self.setOptionValue("output_flag", False)
        super().enableCallbacks()  # type: ignore[no-untyped-call]


# HiGHS runs on one process-wide task scheduler whose thread count is fixed when it is
# first used; a run asking for another count fails. The scheduler is rebuilt for a new
# count only while no HiGHS run of this module is in progress.
_SCHED_LOCK = threading.Lock()
_sched_threads: int | None = None
_sched_running = 0


def _acquire_scheduler(threads: int) -> int:
    global _sched_threads, _sched_running
    with _SCHED_LOCK:
        if _sched_threads != threads:
            if _sched_running == 0:
                highspy.Highs.resetGlobalScheduler(True)
                _sched_threads = threads
            elif _sched_threads is not None:
                threads = _sched_threads
        _sched_running += 1
        return threads


def _release_scheduler() -> None:
    global _sched_running
    with _SCHED_LOCK:
        _sched_running -= 1


FloatArray = npt.NDArray[np.float64]


@dataclass
class _Model:
    """The IR flattened to HiGHS arrays."""

    x_vars: list[X]
    columns: dict[Var, int]
    lower: FloatArray
    upper: FloatArray
    costs: FloatArray
    offset: float
    row_lower: list[float] = field(default_factory=list)
    row_upper: list[float] = field(default_factory=list)
    starts: list[int] = field(default_factory=list)
    indices: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    integral_objective: bool = True

    def add_row(self, lin: Linear) -> None:
        if lin.lb is None and lin.ub is None:
            return
        coefs: dict[int, float] = {}
        for v, c in lin.terms:
            col = self.columns.get(v)
            if col is None:  # a pair that is no candidate can never be chosen: it is 0
                continue
            coefs[col] = coefs.get(col, 0.0) + c
        self.starts.append(len(self.indices))
        for col, coef in coefs.items():
            if coef != 0:
                self.indices.append(col)
                self.values.append(coef)
        self.row_lower.append(-math.inf if lin.lb is None else float(lin.lb))
        self.row_upper.append(math.inf if lin.ub is None else float(lin.ub))

    def row_satisfied_at_zero(self, k: int) -> bool:
        return self.row_lower[k] <= 0 <= self.row_upper[k]


def _flatten(spec: ModelSpec) -> _Model:
    x_vars = spec.x_vars()
    aux = spec.aux_vars()
    columns: dict[Var, int] = {x: i for i, x in enumerate(x_vars)}
    for j, a in enumerate(aux):
        columns[a] = len(x_vars) + j
    n = len(columns)
    lower = np.zeros(n, dtype=np.float64)
    upper = np.ones(n, dtype=np.float64)
    for j, a in enumerate(aux):
        lower[len(x_vars) + j] = a.lb
        upper[len(x_vars) + j] = a.ub
    for p, s in spec.mctx.fixed:
        col = columns.get(X(p, s))
        if col is not None:
            lower[col] = 1.0
    costs = np.zeros(n, dtype=np.float64)
    offset = 0.0
    integral = True
    for pen in spec.penalties:
        offset += pen.weight * pen.constant
        integral = integral and isinstance(pen.weight, int) and isinstance(pen.constant, int)
        for v, c in pen.terms:
            integral = integral and isinstance(c, int)
            col = columns.get(v)
            if col is not None:
                costs[col] += pen.weight * c
    model = _Model(
        x_vars=x_vars,
        columns=columns,
        lower=lower,
        upper=upper,
        costs=costs,
        offset=offset,
        integral_objective=integral,
    )
    for lin in (*spec.hard, *spec.soft):
        model.add_row(lin)
    return model


def _load(h: highspy.Highs, m: _Model) -> None:
    n = len(m.columns)
    empty_i = np.zeros(0, dtype=np.int32)
    empty_f = np.zeros(0, dtype=np.float64)
    h.addCols(n, m.costs, m.lower, m.upper, 0, np.zeros(n, dtype=np.int32), empty_i, empty_f)
    h.changeColsIntegrality(
        n,
        np.arange(n, dtype=np.int32),
        np.full(n, int(highspy.HighsVarType.kInteger), dtype=np.uint8),
    )
    h.changeObjectiveOffset(m.offset)
    rows = len(m.row_lower)
    if rows:
        h.addRows(
            rows,
            np.array(m.row_lower, dtype=np.float64),
            np.array(m.row_upper, dtype=np.float64),
            len(m.indices),
            np.array(m.starts, dtype=np.int32),
            np.array(m.indices, dtype=np.int32),
            np.array(m.values, dtype=np.float64),
        )


class _Search:
    """State shared by HiGHS's callbacks (on the HiGHS thread), the watchdog and the
    caller's thread."""

    def __init__(self, model: _Model, control: Control, t0: float) -> None:
        self._model = model
        self._control = control
        self._t0 = t0
        self.lock = threading.Lock()
        self.stop = threading.Event()
        """Set: interrupt HiGHS at its next check."""
        self.closed = threading.Event()
        """Set: the solver has returned; late callbacks only interrupt."""
        self.aborted = threading.Event()
        self.error: BaseException | None = None
        self.best: FloatArray | None = None
        self.objective: float | None = None
        self.bound: float | None = None
        self.solutions = 0
        self.first_at: float | None = None
        self._last_poll = 0.0

    def check_abort(self) -> bool:
        if not self.aborted.is_set() and self._control.should_abort():
            self.aborted.set()
            self.stop.set()
        return self.stop.is_set()

    def _guard(self, fn: Callable[[Any], None]) -> Callable[[Any], None]:
        """A callback must not raise into HiGHS: keep the error, stop, re-raise later."""

        def run(e: Any) -> None:
            if not self.closed.is_set():
                try:
                    fn(e)
                except BaseException as exc:
                    if self.error is None:
                        self.error = exc
                    self.stop.set()
            if self.stop.is_set():
                e.interrupt()

        return run

    def on_improving(self, e: Any) -> None:
        out = e.data_out
        values = np.array(out.mip_solution, dtype=np.float64, copy=True)
        elapsed = time.monotonic() - self._t0
        objective = float(out.objective_function_value)
        with self.lock:
            self.solutions += 1
            if self.first_at is None:
                self.first_at = elapsed
            self.best = values
            self.objective = objective
            self._note_bound(out.mip_dual_bound)
        if self._control.on_checkpoint is not None:
            nx = len(self._model.x_vars)
            pairs = tuple(
                (x.person, x.slot)
                for x, v in zip(self._model.x_vars, values[:nx], strict=True)
                if v > 0.5
            )
            self._control.on_checkpoint(
                Checkpoint(pairs=pairs, objective=objective, elapsed=elapsed)
            )
        self.check_abort()

    def on_mip_interrupt(self, e: Any) -> None:
        with self.lock:
            self._note_bound(e.data_out.mip_dual_bound)
        self._poll()

    def on_lp_interrupt(self, _e: Any) -> None:
        self._poll()

    def _poll(self) -> None:
        # the flag on every call; the caller's own should_abort at most every 0.1 s
        now = time.monotonic()
        if now - self._last_poll >= 0.1:
            self._last_poll = now
            self.check_abort()

    def _note_bound(self, bound: float) -> None:
        if math.isfinite(bound):
            self.bound = bound

    def subscribe(self, h: highspy.Highs) -> None:
        h.cbMipImprovingSolution.subscribe(self._guard(self.on_improving))
        h.cbMipInterrupt.subscribe(self._guard(self.on_mip_interrupt))
        h.cbSimplexInterrupt.subscribe(self._guard(self.on_lp_interrupt))
        h.cbIpmInterrupt.subscribe(self._guard(self.on_lp_interrupt))


def _solve_without_columns(spec: ModelSpec, m: _Model, t0: float) -> SolveResult:
    """No variable at all: every row is a constant 0, so the answer is immediate."""
    feasible = all(m.row_satisfied_at_zero(k) for k in range(len(m.row_lower)))
    penalties: dict[str, float] = {}
    if feasible:
        for pen in spec.penalties:
            penalties[pen.name] = penalties.get(pen.name, 0) + pen.weight * pen.constant
    return SolveResult(
        algorithm="mip",
        status=SolveStatus.OPTIMAL if feasible else SolveStatus.INFEASIBLE,
        stop_reason=StopReason.COMPLETED,
        assignments=(),
        objective=m.offset if feasible else None,
        bound=m.offset if feasible else None,
        time_to_first=time.monotonic() - t0 if feasible else None,
        solutions=1 if feasible else 0,
        wall_seconds=time.monotonic() - t0,
        penalties=penalties,
        model_size=spec.size(),
    )


def solve_mip(spec: ModelSpec, params: MipParams, control: Control) -> SolveResult:
    t0 = time.monotonic()
    if control.should_abort():
        return SolveResult(
            algorithm="mip",
            status=SolveStatus.UNKNOWN,
            stop_reason=StopReason.ABORTED,
            assignments=(),
            objective=None,
            bound=None,
            time_to_first=None,
            solutions=0,
            wall_seconds=time.monotonic() - t0,
            model_size=spec.size(),
        )
    m = _flatten(spec)
    if not m.columns:
        return _solve_without_columns(spec, m, t0)

    h = _QuietHighs()
    h.setOptionValue("log_to_console", False)
    _load(h, m)
    h.setOptionValue("random_seed", int(params.seed))
    h.setOptionValue("mip_rel_gap", 0.0)
    if m.integral_objective:
        # every objective value is a whole number: a gap below 1 proves optimality
        h.setOptionValue("mip_abs_gap", 0.999)
    if control.hint:
        nx = len(m.x_vars)
        hint = np.array(
            [1.0 if (x.person, x.slot) in control.hint else 0.0 for x in m.x_vars],
            dtype=np.float64,
        )
        h.setSolution(nx, np.arange(nx, dtype=np.int32), hint)

    search = _Search(m, control, t0)
    search.subscribe(h)
    last_report = [0.0]

    def tick() -> None:
        search.check_abort()
        now = time.monotonic()
        if control.on_progress is not None and now - last_report[0] >= 0.5:
            last_report[0] = now
            with search.lock:
                progress = Progress(
                    elapsed=now - t0,
                    solutions=search.solutions,
                    objective=search.objective,
                    bound=search.bound,
                )
            control.on_progress(progress)

    notes: list[str] = []
    done = threading.Event()

    def work() -> None:
        try:
            h.run()
        except BaseException as exc:
            if search.error is None:
                search.error = exc
        finally:
            _release_scheduler()
            done.set()

    # HiGHS looks at its interrupt callbacks (and its own time limit) only between
    # steps; presolve and the root LP of a large model can run for many seconds
    # without one. It runs on its own thread so that an abort or the time limit
    # returns the best solution found so far within GRACE_SECONDS even then.
    deadline = t0 + params.time_limit
    abandoned = False
    try:
        with Watchdog(min(control.poll_seconds, 0.5), tick):
            threads = max(1, params.threads)
            used = _acquire_scheduler(threads)
            try:
                if used != threads:
                    notes.append(
                        f"HiGHS ran with {used} thread(s): another HiGHS run in this process "
                        f"holds its scheduler"
                    )
                h.setOptionValue("threads", used)
                h.setOptionValue(
                    "time_limit", max(0.01, params.time_limit - (time.monotonic() - t0))
                )
                threading.Thread(target=work, name="rsched-highs", daemon=True).start()
            except BaseException:
                _release_scheduler()
                raise
            stop_at: float | None = None
            while not done.wait(0.05):
                now = time.monotonic()
                if stop_at is None:
                    if search.check_abort() or now >= deadline:
                        search.stop.set()
                        stop_at = now
                elif now - stop_at >= GRACE_SECONDS:
                    abandoned = True
                    break
    finally:
        search.stop.set()
        search.closed.set()
    if search.error is not None:
        raise search.error
    wall = time.monotonic() - t0

    values: FloatArray | None = None
    code: highspy.HighsModelStatus | None = None
    dual = -math.inf
    if abandoned:
        notes.append(
            f"HiGHS did not reach an interruption point within {GRACE_SECONDS:g} s "
            f"(presolve or an LP solve); it stops by itself in the background"
        )
        values = search.best
    else:
        code = h.getModelStatus()
        if code in _ERRORS:
            raise RuntimeError(f"HiGHS failed: {h.modelStatusToString(code)}")
        info = h.getInfo()
        dual = info.mip_dual_bound
        if info.primal_solution_status == highspy.kSolutionStatusFeasible:
            values = np.array(h.getSolution().col_value, dtype=np.float64)
        else:
            values = search.best
    if not math.isfinite(dual) and search.bound is not None:
        dual = search.bound

    aborted = search.aborted.is_set()
    if code in (_MS.kInfeasible, _MS.kUnboundedOrInfeasible):
        # every column is bounded, so "unbounded or infeasible" can only be infeasible
        status, stop = SolveStatus.INFEASIBLE, StopReason.COMPLETED
        values = None
    elif values is None:
        status = SolveStatus.UNKNOWN
        stop = _stop_reason(code, aborted)
    elif code == _MS.kOptimal:
        status, stop = SolveStatus.OPTIMAL, StopReason.COMPLETED
    else:
        status = SolveStatus.FEASIBLE
        stop = _stop_reason(code, aborted)

    pairs: list[tuple[str, str]] = []
    objective: float | None = None
    bound: float | None = None
    penalties: dict[str, float] = {}
    if values is not None:
        rounded = np.rint(values)
        pairs = [
            (x.person, x.slot)
            for x, v in zip(m.x_vars, rounded[: len(m.x_vars)], strict=True)
            if v > 0.5
        ]
        for pen in spec.penalties:
            value = pen.weight * (
                pen.constant
                + sum(c * rounded[m.columns[v]] for v, c in pen.terms if v in m.columns)
            )
            penalties[pen.name] = penalties.get(pen.name, 0) + float(value)
        objective = float(m.offset + float(np.dot(m.costs, rounded)))
        if status is SolveStatus.OPTIMAL:
            bound = objective
        elif math.isfinite(dual):
            bound = math.ceil(dual - 1e-6) if m.integral_objective else dual
            bound = float(min(bound, objective))
    return SolveResult(
        algorithm="mip",
        status=status,
        stop_reason=stop,
        assignments=tuple(
            Assignment(person_id=p, slot_id=s, source=AssignmentSource.SOLVER)
            for p, s in sorted(pairs)
        ),
        objective=objective,
        bound=bound,
        time_to_first=(
            (search.first_at if search.first_at is not None else wall)
            if values is not None
            else None
        ),
        solutions=search.solutions,
        wall_seconds=wall,
        penalties=penalties,
        notes=tuple(notes),
        model_size=spec.size(),
    )


def _stop_reason(code: highspy.HighsModelStatus | None, aborted: bool) -> StopReason:
    if aborted:
        return StopReason.ABORTED
    if code == _MS.kMemoryLimit:
        return StopReason.RESOURCE_LIMIT
    return StopReason.TIME_LIMIT
