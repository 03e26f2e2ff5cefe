"""Continuous duty and rest: CONTINUOUS_24_4, REST_14_AFTER_24, REST_8.

The validator merges a person's duty into stretches (``timeline.stretches``); the model
forbids every *chain* of interval groups that would form a stretch breaking the rule,
so a schedule the model accepts has no such stretch (a breaking stretch always contains
a breaking chain: its own slots in order).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import timedelta
from functools import lru_cache
from itertools import pairwise
from typing import ClassVar

from rsched.domain import ProgramData, Severity
from rsched.rules.base import Aux, CheckContext, Linear, ModelContext, Penalty, Var, Violation, X
from rsched.rules.timeline import Group, Stretch, chains, duty_groups, minutes, stretches


def _merge_gap(data: ProgramData) -> timedelta:
    return timedelta(minutes=data.program.settings.rules.merge_gap_minutes)


def _breaks_24_4(data: ProgramData, chain: tuple[Group, ...]) -> bool:
    rules = data.program.settings.rules
    total = minutes(max(g.end for g in chain) - chain[0].start)
    clinical = [g for g in chain if g.clinical]
    if clinical:
        span = minutes(max(g.end for g in clinical) - min(g.start for g in clinical))
        if span > rules.max_continuous_minutes:
            return True
    return total > rules.max_continuous_with_education_minutes


def _long_call(data: ProgramData, chain: tuple[Group, ...]) -> bool:
    span = minutes(max(g.end for g in chain) - chain[0].start)
    return any(g.call for g in chain) and span >= 24 * 60


@lru_cache(maxsize=4)
def _chains_24_4(data: ProgramData) -> list[tuple[Group, ...]]:
    rules = data.program.settings.rules
    horizon = timedelta(minutes=rules.max_continuous_with_education_minutes) + timedelta(hours=48)
    return chains(duty_groups(data), _merge_gap(data), lambda c: _breaks_24_4(data, c), horizon)


@lru_cache(maxsize=4)
def _call_chains(data: ProgramData) -> list[tuple[Group, ...]]:
    rules = data.program.settings.rules
    horizon = timedelta(minutes=rules.max_continuous_with_education_minutes)
    return chains(duty_groups(data), _merge_gap(data), lambda c: _long_call(data, c), horizon)


def _busy(mctx: ModelContext, person: str, group: Group) -> list[tuple[Var, int]]:
    mine = mctx.candidate_set
    return [(X(person, s), 1) for s in group.slot_ids if (person, s) in mine]


def _chain_constraints(
    mctx: ModelContext, rule: str, chain_list: Sequence[tuple[Group, ...]], what: str
) -> Iterable[Linear]:
    for person_id in mctx.candidates:
        if not mctx.data.person_by_id[person_id].is_resident:
            continue
        for chain in chain_list:
            parts = [_busy(mctx, person_id, g) for g in chain]
            if any(not p for p in parts):
                continue
            yield Linear(
                rule=rule,
                name=f"{rule} {person_id} {what} from {chain[0].start.isoformat()}",
                terms=tuple(t for p in parts for t in p),
                ub=len(chain) - 1,
                person=person_id,
            )


def _short_rests(
    ctx: CheckContext, need: int, *, after_long_call: bool
) -> Iterator[tuple[str, Stretch, Stretch, int]]:
    """(person, stretch, next stretch, minutes between) for every gap shorter than
    ``need``: only the gaps after ≥ 24 h of in-house call, or only the others."""
    gap = _merge_gap(ctx.data)
    for person, slots in ctx.assigned_residents():
        for cur, nxt in pairwise(stretches(slots, gap)):
            if (cur.has_call and cur.total_minutes >= 24 * 60) != after_long_call:
                continue
            rest = minutes(nxt.start - cur.end)
            if rest < need:
                yield person.id, cur, nxt, rest


class Continuous24:
    code: ClassVar[str] = "CONTINUOUS_24_4"
    label: ClassVar[str] = "Continuous clinical duty at most 24 h (+4 h for education/handoff)"
    severity: ClassVar[Severity] = Severity.VIOLATION
    citation: ClassVar[str] = "ACGME CPR VI.F.4.a / 6.26"

    def check(self, ctx: CheckContext) -> list[Violation]:
        rules = ctx.data.program.settings.rules
        gap = _merge_gap(ctx.data)
        out: list[Violation] = []
        for person, slots in ctx.assigned_residents():
            for st in stretches(slots, gap):
                clinical, total = st.clinical_minutes, st.total_minutes
                if clinical > rules.max_continuous_minutes:
                    value, limit, what = clinical, rules.max_continuous_minutes, "clinical duty"
                elif total > rules.max_continuous_with_education_minutes:
                    value = total
                    limit = rules.max_continuous_with_education_minutes
                    what = "duty with education"
                else:
                    continue
                out.append(
                    Violation(
                        rule=self.code,
                        severity=self.severity,
                        person=person.id,
                        start=st.start,
                        end=st.end,
                        value=value / 60,
                        limit=limit / 60,
                        message=(
                            f"{person.id} has {value / 60:.1f} h of continuous {what} from "
                            f"{st.start.isoformat()} ({', '.join(s.id for s in st.slots)}); "
                            f"limit {limit / 60:.0f} h"
                        ),
                    )
                )
        return out

    def constraints(self, mctx: ModelContext) -> Iterable[Linear]:
        return _chain_constraints(mctx, self.code, _chains_24_4(mctx.data), "stretch")


class Rest14AfterCall:
    code: ClassVar[str] = "REST_14_AFTER_24"
    label: ClassVar[str] = "14 hours free after 24 hours of in-house call"
    severity: ClassVar[Severity] = Severity.VIOLATION
    citation: ClassVar[str] = "ACGME CPR VI.F.2.c / 6.23"

    def check(self, ctx: CheckContext) -> list[Violation]:
        need = ctx.data.program.settings.rules.rest_after_call_minutes
        return [
            Violation(
                rule=self.code,
                severity=self.severity,
                person=person,
                start=cur.end,
                end=nxt.start,
                value=rest / 60,
                limit=need / 60,
                message=(
                    f"{person} has {rest / 60:.1f} h off after 24 h of call "
                    f"ending {cur.end.isoformat()} (next: {nxt.slots[0].id}); "
                    f"needs {need / 60:.0f} h"
                ),
            )
            for person, cur, nxt, rest in _short_rests(ctx, need, after_long_call=True)
        ]

    def constraints(self, mctx: ModelContext) -> Iterable[Linear]:
        data = mctx.data
        need = timedelta(minutes=data.program.settings.rules.rest_after_call_minutes)
        gap = _merge_gap(data)
        groups = duty_groups(data)
        for chain in _call_chains(data):
            end = max(g.end for g in chain)
            after = [g for g in groups if end + gap <= g.start < end + need]
            for person_id in mctx.candidates:
                if not data.person_by_id[person_id].is_resident:
                    continue
                parts = [_busy(mctx, person_id, g) for g in chain]
                if any(not p for p in parts):
                    continue
                chain_terms = tuple(t for p in parts for t in p)
                for g in after:
                    nxt = _busy(mctx, person_id, g)
                    if nxt:
                        yield Linear(
                            rule=self.code,
                            name=f"{self.code} {person_id} after {end.isoformat()}",
                            terms=chain_terms + tuple(nxt),
                            ub=len(chain),
                            person=person_id,
                        )


class Rest8:
    code: ClassVar[str] = "REST_8"
    label: ClassVar[str] = "8 hours off between duty periods (ACGME 'should')"
    severity: ClassVar[Severity] = Severity.WARNING
    citation: ClassVar[str] = "ACGME CPR VI.F.2.b / 6.23"

    def check(self, ctx: CheckContext) -> list[Violation]:
        need = ctx.data.program.settings.rules.min_rest_minutes
        # after a 24-h call REST_14_AFTER_24 governs the gap
        return [
            Violation(
                rule=self.code,
                severity=self.severity,
                person=person,
                start=cur.end,
                end=nxt.start,
                value=rest / 60,
                limit=need / 60,
                message=(
                    f"{person} has {rest / 60:.1f} h off between duty ending "
                    f"{cur.end.isoformat()} and {nxt.slots[0].id}; should be "
                    f"{need / 60:.0f} h"
                ),
            )
            for person, cur, nxt, rest in _short_rests(ctx, need, after_long_call=False)
        ]

    def penalties(self, mctx: ModelContext) -> tuple[list[Linear], list[Penalty]]:
        data = mctx.data
        weight = data.program.settings.weights.rest
        lins: list[Linear] = []
        pens: list[Penalty] = []
        if weight <= 0:
            return lins, pens
        gap = _merge_gap(data)
        rest = timedelta(minutes=data.program.settings.rules.min_rest_minutes)
        groups = duty_groups(data)
        starts = sorted(groups, key=lambda g: g.start)
        for person_id in mctx.candidates:
            if not data.person_by_id[person_id].is_resident:
                continue
            busy = {g.index: _busy(mctx, person_id, g) for g in groups}
            for a in groups:
                if not busy[a.index]:
                    continue
                for b in starts:
                    if b.start < a.end + gap:
                        continue
                    if b.start >= a.end + rest:
                        break
                    if not busy[b.index]:
                        continue
                    v = Aux(f"rest8[{person_id},{a.index},{b.index}]")
                    lins.append(
                        Linear(
                            rule=self.code,
                            name=f"{self.code} {person_id} {a.end.isoformat()}",
                            terms=(*busy[a.index], *busy[b.index], (v, -1)),
                            ub=1,
                            person=person_id,
                        )
                    )
                    pens.append(Penalty(name="rest", terms=((v, 1),), weight=weight))
        return lins, pens
