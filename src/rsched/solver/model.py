"""From the rule engine to one solver-neutral model: candidates, constraints, penalties."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

from rsched.domain import ProgramData
from rsched.rules.access import candidate_slots
from rsched.rules.base import Aux, Linear, ModelContext, Penalty, X
from rsched.rules.registry import HARD_RULES, WARNING_RULES
from rsched.rules.soft import model_terms


@dataclass(kw_only=True)
class ModelSpec:
    """Everything a solver needs. Variables are the candidate ``X`` pairs plus the ``Aux``
    variables named in constraints and penalties."""

    mctx: ModelContext
    hard: list[Linear]
    soft: list[Linear]
    """Constraints that define the soft terms' auxiliary variables."""
    penalties: list[Penalty]
    build_seconds: float = 0.0
    constraints_by_rule: dict[str, int] = field(default_factory=dict)

    @property
    def data(self) -> ProgramData:
        return self.mctx.data

    def x_vars(self) -> list[X]:
        return [X(p, s) for p, slots in self.mctx.candidates.items() for s in slots]

    def aux_vars(self) -> list[Aux]:
        seen: dict[str, Aux] = {}
        for lin in (*self.hard, *self.soft):
            for v, _ in lin.terms:
                if isinstance(v, Aux):
                    seen.setdefault(v.name, v)
        for pen in self.penalties:
            for v, _ in pen.terms:
                if isinstance(v, Aux):
                    seen.setdefault(v.name, v)
        return list(seen.values())

    def size(self) -> dict[str, object]:
        return {
            "x_vars": sum(len(v) for v in self.mctx.candidates.values()),
            "aux_vars": len(self.aux_vars()),
            "hard_constraints": len(self.hard),
            "soft_constraints": len(self.soft),
            "penalty_terms": len(self.penalties),
            "constraints_by_rule": dict(self.constraints_by_rule),
        }


def build_model(
    data: ProgramData,
    *,
    previous: frozenset[tuple[str, str]] = frozenset(),
    fixed: frozenset[tuple[str, str]] = frozenset(),
    candidates: dict[str, list[str]] | None = None,
) -> ModelSpec:
    t0 = time.perf_counter()
    mctx = ModelContext(
        data=data,
        candidates=candidates if candidates is not None else candidate_slots(data),
        previous=previous,
        fixed=fixed,
    )
    hard: list[Linear] = []
    for rule in HARD_RULES:
        hard.extend(rule.constraints(mctx))
    soft: list[Linear] = []
    penalties: list[Penalty] = []
    for wrule in WARNING_RULES:
        lins, pens = wrule.penalties(mctx)
        soft.extend(lins)
        penalties.extend(pens)
    lins, pens = model_terms(mctx)
    soft.extend(lins)
    penalties.extend(pens)
    by_rule = Counter(c.rule for c in hard)
    return ModelSpec(
        mctx=mctx,
        hard=hard,
        soft=soft,
        penalties=penalties,
        build_seconds=time.perf_counter() - t0,
        constraints_by_rule=dict(sorted(by_rule.items())),
    )
