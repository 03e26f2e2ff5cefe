"""Infeasibility in the user's terms: the pre-solve shortfalls, else a small conflicting
set of requirements found by CP-SAT with one assumption literal per requirement."""

from __future__ import annotations

from ortools.sat.python import cp_model

from rsched.rules.base import Linear, X
from rsched.solver.model import ModelSpec
from rsched.solver.precheck import slot_shortfalls


def describe(spec: ModelSpec, lin: Linear) -> str:
    data = spec.data
    if lin.slot is not None:
        slot = data.slot_by_id[lin.slot]
        day = slot.start.astimezone(data.tz).date()
        people = sorted({v.person for v, _ in lin.terms if hasattr(v, "person")})
        bound = f"≥ {lin.lb}" if lin.lb is not None else f"≤ {lin.ub}"
        return (
            f"{lin.rule}: slot {slot.shift} {day} ({slot.id}) needs {bound} "
            f"from {len(people)} candidate(s): {', '.join(people[:8]) or 'nobody'}"
        )
    return f"{lin.rule}: {lin.name}"


def explain_infeasible(spec: ModelSpec, *, time_limit: float = 20.0, most: int = 12) -> list[str]:
    reasons = slot_shortfalls(spec, limit=most)
    if reasons:
        return reasons
    model = cp_model.CpModel()
    x = {v: model.new_bool_var(str(v)) for v in spec.x_vars()}
    aux = {a.name: model.new_int_var(a.lb, a.ub, a.name) for a in spec.aux_vars()}
    literals: dict[int, Linear] = {}
    for lin in spec.hard:
        if not lin.terms:
            continue
        variables = [x[v] if isinstance(v, X) else aux[v.name] for v, _ in lin.terms]
        expr = cp_model.LinearExpr.weighted_sum(variables, [c for _, c in lin.terms])
        lit = model.new_bool_var(f"req{len(literals)}")
        if lin.lb is not None:
            model.add(expr >= lin.lb).only_enforce_if(lit)
        if lin.ub is not None:
            model.add(expr <= lin.ub).only_enforce_if(lit)
        literals[lit.index] = lin
    for p, s in spec.mctx.fixed:
        if X(p, s) in x:
            model.add(x[X(p, s)] == 1)
    model.add_assumptions([model.get_bool_var_from_proto_index(i) for i in literals])
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = time_limit
    solver.parameters.num_workers = 1
    status = solver.solve(model)
    if status != cp_model.INFEASIBLE:
        return ["no schedule meets every hard rule; the conflict could not be isolated in time"]
    core = solver.sufficient_assumptions_for_infeasibility()
    lines = [describe(spec, literals[i]) for i in core if i in literals]
    return lines[:most] or ["the hard rules contradict each other (empty conflict core)"]
