"""N-1: can the schedule absorb the sudden absence of any one person?

For each person (residents and faculty) the question is answered as if that person
had a blocking absence over the whole horizon, with everything else fixed as far as
possible: every assignment of the other people on the days the person did not work
stays as it is; the days they worked are free to re-arrange; churn against the given
schedule is minimised. (A blocking absence over the horizon does nothing but remove
every candidate pair of the person — their own averaging limits no longer matter once
they have no assignment — so the program data are left as they are and the person is
simply left out of the model, which lets every person's check share the same indexes.)

Two steps per person, cheapest first:

1. **Direct cover.** The person's slots are handed over one at a time, in time order:
   the slot is simply dropped when that adds no hard violation (it was above its
   minimum), else it is given to the best-ranked colleague of the same kind (fairness
   first, ``swaps``) for whom the give-away adds no hard violation — each step checked
   by the rule engine's own checks on exactly what it changes
   (``swaps.ScheduleChecker``). When every slot finds a taker the schedule is proved
   absorbable, and with the fewest changes there can be: every slot of the person
   must lose them, and a slot that cannot lose them alone needs at least one other
   change, which is all this step makes. No solver is needed.
2. **Re-solve.** Otherwise the days the person worked are re-solved with CP-SAT (or the
   chosen solver) on the restricted model of ``repair`` — the rest fixed, churn
   penalised, each slot's staffing minima relaxed at a large penalty so that the solver
   returns the least-short schedule rather than "infeasible". First only the person's
   possible takers (the candidates of their slots, faculty included for supervision)
   may move on those days, which keeps the model small; if that leaves a slot short and
   time is left, everyone working those days may move. The person is absorbable when
   nothing is left short; otherwise the report lists the slots left short and the rules
   broken. ``proved`` is true for a full cover, or for a shortfall the second stage
   proved optimal; a time limit (``params_per_person.time_limit`` covers both stages)
   leaves it false.

What is reused between people: the candidate pairs, the schedule's indexes and its
hard violations (``ScheduleChecker``), the fairness counts, and in each process the
program's derived tables (duty groups, chains) that the model builders cache.
People are checked in parallel over ``jobs`` processes when asked (a fork server with
the solver preloaded, else ``spawn``); each solve uses ``params_per_person.workers``
threads, and ``jobs`` defaults to ``cores ÷ workers`` so that jobs × threads ≤ cores.
On the reference ``medium`` program nearly every person is covered directly in tens of
milliseconds, so one process is about as fast as two (the pool's start-up costs what
the second core saves); the processes pay off when many people need the solver.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field, replace
from datetime import date
from multiprocessing import get_all_start_methods, get_context
from multiprocessing.context import BaseContext
from typing import Literal

from rsched.domain import Assignment, FieldError, InvalidInput, ProgramData
from rsched.domain.calendar import local_date
from rsched.rules.access import candidate_slots
from rsched.rules.base import Violation
from rsched.solver.api import SolveParams
from rsched.solver.control import Control
from rsched.solver.repair import (
    Pair,
    ScheduleDiff,
    hard_violations,
    restricted_model,
    schedule_diff,
    slot_days,
    solve_spec,
)
from rsched.solver.result import SolveStatus
from rsched.solver.swaps import (
    FairnessIndex,
    ScheduleChecker,
    SwapChange,
    new_against,
    rank_change,
)


@dataclass(frozen=True, slots=True, kw_only=True)
class N1Entry:
    person: str
    kind: str
    pgy: int | None
    assignments: int
    """How many assignments the person had."""
    absorbable: bool
    proved: bool
    """The verdict is certain: a full cover was found, or the solver proved the shortfall
    optimal over the freed days. False when a time limit cut the search short."""
    method: Literal["none", "direct", "solver"]
    """``none``: the person had no assignment; ``direct``: covered by single hand-overs;
    ``solver``: the freed days were re-solved."""
    diff: ScheduleDiff
    """Changes against the given schedule (the person's own removals included)."""
    unfilled: tuple[str, ...] = ()
    """Slots left short of their staffing (coverage, PGY mix or supervision)."""
    broken: dict[str, int] = field(default_factory=dict)
    """New hard violations by rule."""
    violations: tuple[Violation, ...] = ()
    seconds: float = 0.0
    note: str = ""

    def to_dict(self) -> dict[str, object]:
        return {
            "person": self.person,
            "kind": self.kind,
            "pgy": self.pgy,
            "assignments": self.assignments,
            "absorbable": self.absorbable,
            "proved": self.proved,
            "method": self.method,
            "changed": self.diff.changed,
            "added": self.diff.n_added,
            "removed": self.diff.n_removed,
            "unfilled": list(self.unfilled),
            "broken": dict(sorted(self.broken.items())),
            "seconds": round(self.seconds, 3),
            "note": self.note,
        }


@dataclass(frozen=True, kw_only=True)
class N1Report:
    entries: tuple[N1Entry, ...]
    wall_seconds: float
    jobs: int
    aborted: bool = False

    @property
    def not_absorbable(self) -> list[str]:
        return [e.person for e in self.entries if not e.absorbable]

    def summary(self) -> dict[str, object]:
        return {
            "people": len(self.entries),
            "not_absorbable": self.not_absorbable,
            "unproved": [e.person for e in self.entries if not e.proved],
            "solver_used": sum(1 for e in self.entries if e.method == "solver"),
            "wall_seconds": round(self.wall_seconds, 3),
            "jobs": self.jobs,
            "aborted": self.aborted,
            "entries": [e.to_dict() for e in self.entries],
        }


class _Shared:
    """What every person's check reuses: built once per process."""

    def __init__(
        self,
        data: ProgramData,
        pairs: Sequence[Pair],
        params: SolveParams,
        control: Control,
        *,
        direct: bool = True,
    ) -> None:
        self.data = data
        self.direct = direct
        self.pairs = frozenset(pairs)
        self.params = params
        self.control = control
        self.candidates = candidate_slots(data)
        self.checker = ScheduleChecker(data, self.pairs, candidates=self.candidates)
        self.fairness = FairnessIndex(data, self.pairs, self.candidates)
        self.before = hard_violations(data, self.pairs)
        self.takers: dict[str, list[str]] = {}
        for p, slots in self.candidates.items():
            for s in slots:
                self.takers.setdefault(s, []).append(p)

    def check(self, person: str) -> N1Entry:
        t0 = time.monotonic()
        data = self.data
        who = data.person_by_id[person]
        mine = sorted(
            self.checker.by_person.get(person, ()),
            key=lambda s: (data.slot_by_id[s].start, s),
        )
        base = N1Entry(
            person=person,
            kind=str(who.kind),
            pgy=who.pgy,
            assignments=len(mine),
            absorbable=True,
            proved=True,
            method="none",
            diff=schedule_diff((), ()),
        )
        if not mine:
            return replace(base, seconds=time.monotonic() - t0)
        covered, partial = self._direct(person, mine) if self.direct else (False, set(self.pairs))
        if covered:
            return replace(
                base,
                method="direct",
                diff=schedule_diff(self.pairs, partial),
                seconds=time.monotonic() - t0,
            )
        return self._solve(person, mine, base, t0, partial)

    def _direct(self, person: str, mine: Sequence[str]) -> tuple[bool, set[Pair]]:
        """(every slot handed over, the schedule reached: the hand-overs that worked)."""
        checker = self.checker.clone()
        fair = self.fairness.clone()
        people = self.data.person_by_id
        kind = people[person].kind
        for s in mine:
            drop: tuple[Pair, ...] = ((person, s),)
            fresh, after = checker.new_violations(drop, ())
            if not fresh:
                checker.apply(drop, (), after)
                fair.apply(drop, ())
                continue
            options = [
                rank_change(fair, SwapChange(person_id=person, slot_id=s, taker_id=q))
                for q in self.takers.get(s, ())
                if q != person and people[q].kind is kind and not checker.holds(q, s)
            ]
            for change in (c.change for c in sorted(options, key=lambda c: c.rank)):
                fresh, after = checker.new_violations(change.removed, change.added)
                if not fresh:
                    checker.apply(change.removed, change.added, after)
                    fair.apply(change.removed, change.added)
                    break
            else:
                return False, checker.pairs()
        return True, checker.pairs()

    def _solve(
        self, person: str, mine: Sequence[str], base: N1Entry, t0: float, start: set[Pair]
    ) -> N1Entry:
        """Re-solve the days ``person`` worked: first only their possible takers move,
        then (if that leaves a slot short and time is left) everyone working those days."""
        data = self.data
        worked: set[date] = set()
        for s in mine:
            worked.update(slot_days(data, data.slot_by_id[s]))
        free = frozenset(s.id for s in data.slots if local_date(s.start, data.tz) in worked)
        takers = sorted({q for s in mine for q in self.takers.get(s, ()) if q != person})
        deadline = t0 + self.params.time_limit
        hint = frozenset(pr for pr in start if pr[0] != person)
        entry = replace(
            base,
            absorbable=False,
            proved=False,
            method="solver",
            note="no schedule within the time limit",
        )
        stages: list[tuple[list[str] | None, str]] = [(takers, "takers"), (None, "everyone")]
        for movers, who in stages:
            left = deadline - time.monotonic()
            if left <= 0 or self.control.should_abort():
                break
            spec, outside = restricted_model(
                data,
                self.candidates,
                self.pairs,
                free,
                previous=self.pairs,
                exclude=(person,),
                movers=movers,
                relax=True,
            )
            res = solve_spec(
                spec, replace(self.params, time_limit=left), replace(self.control, hint=hint)
            )
            if not res.has_schedule:
                if res.status is SolveStatus.INFEASIBLE:
                    entry = replace(
                        entry,
                        note="the rest of the schedule cannot be kept (it breaks a hard rule)",
                    )
                continue
            pairs = {(a.person_id, a.slot_id) for a in res.assignments} | outside
            fresh = new_against(self.before, hard_violations(data, pairs))
            unfilled = sorted({v.slot for v in fresh if v.person is None and v.slot})
            entry = replace(
                entry,
                absorbable=not fresh,
                proved=not fresh or (movers is None and res.status is SolveStatus.OPTIMAL),
                diff=schedule_diff(self.pairs, pairs),
                unfilled=tuple(unfilled),
                broken=dict(sorted(Counter(v.rule for v in fresh).items())),
                violations=tuple(fresh),
                note=(
                    f"re-solved {len(free)} slots over {len(worked)} days, {who} moving "
                    f"({res.status})"
                ),
            )
            if not fresh:
                break
            hint = frozenset(pairs)
        return replace(entry, seconds=time.monotonic() - t0)


_WORKER: _Shared | None = None
PRELOAD = ("__main__", "rsched.solver.n1", "ortools.sat.python.cp_model")
"""Imported once by the fork server, so that each worker starts without importing them."""


def _pool_context() -> BaseContext:
    """A fork server with the solver preloaded where there is one (workers start in a
    fraction of a second), else ``spawn``. Neither shares the caller's threads or state;
    as with ``spawn``, a script calling this must guard its entry point."""
    if "forkserver" in get_all_start_methods():
        ctx = get_context("forkserver")
        ctx.set_forkserver_preload(list(PRELOAD))
        return ctx
    return get_context("spawn")


def _init_worker(
    data: ProgramData, pairs: Sequence[Pair], params: SolveParams, direct: bool
) -> None:
    global _WORKER
    _WORKER = _Shared(data, pairs, params, Control(), direct=direct)


def _work(person: str) -> N1Entry:
    assert _WORKER is not None
    return _WORKER.check(person)


def n_minus_one(
    data: ProgramData,
    assignments: Sequence[Assignment],
    *,
    params_per_person: SolveParams,
    people: Sequence[str] | None = None,
    control: Control | None = None,
    jobs: int | None = None,
    direct: bool = True,
) -> N1Report:
    """N-1 for ``people`` (default: every active person), in the order of the program.

    ``params_per_person`` is used for each re-solve (keep its time limit short);
    ``jobs`` processes check people in parallel (default ``cores ÷ workers``; 1: in this
    process). ``control.should_abort`` is polled between people; an abort returns the
    entries done so far. ``direct=False`` skips the direct cover and re-solves every
    person (for comparison; slower)."""
    t0 = time.monotonic()
    params_per_person.check()
    control = control or Control()
    wanted = list(people) if people is not None else [p.id for p in data.people if p.active]
    unknown = [p for p in wanted if p not in data.person_by_id]
    if unknown:
        raise InvalidInput(
            [FieldError(f"people[{i}]", f"unknown person {p!r}") for i, p in enumerate(unknown)]
        )
    pairs = sorted({(a.person_id, a.slot_id) for a in assignments})
    if jobs is None:
        jobs = max(1, (os.cpu_count() or 1) // params_per_person.workers)
    jobs = max(1, min(jobs, len(wanted)))
    done: dict[str, N1Entry] = {}
    aborted = False
    if jobs == 1:
        shared = _Shared(data, pairs, params_per_person, control, direct=direct)
        for p in wanted:
            if control.should_abort():
                aborted = True
                break
            done[p] = shared.check(p)
    else:
        with ProcessPoolExecutor(
            max_workers=jobs,
            mp_context=_pool_context(),
            initializer=_init_worker,
            initargs=(data, pairs, params_per_person, direct),
        ) as pool:
            futures: dict[Future[N1Entry], str] = {pool.submit(_work, p): p for p in wanted}
            pending = set(futures)
            while pending:
                finished, pending = wait(
                    pending, timeout=control.poll_seconds, return_when=FIRST_COMPLETED
                )
                for f in finished:
                    done[futures[f]] = f.result()
                if control.should_abort():
                    aborted = True
                    for f in pending:
                        f.cancel()
                    break
    entries = tuple(done[p] for p in wanted if p in done)
    return N1Report(entries=entries, wall_seconds=time.monotonic() - t0, jobs=jobs, aborted=aborted)


__all__ = ["N1Entry", "N1Report", "n_minus_one"]
