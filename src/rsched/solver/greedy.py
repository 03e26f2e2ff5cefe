"""Greedy construction and local repair over the model IR: fast, never exact.

The solver knows nothing about the rules: it sees only the IR's ``Linear`` rows over
0/1 ``X`` pairs and integer ``Aux`` variables, and keeps the activity of every row.

* **Auxiliary variables of hard rows** (e.g. the day-off windows of DAY_OFF_1_IN_7:
  ``o + x ≤ 1`` per clashing slot, ``Σ o ≤ 1`` where windows overlap, ``Σ o ≥ need``) are
  free variables the solver sets itself. Auxes linked by rows holding several of them
  form a *group*; given the assignments, a group is solved by bounding each aux with
  its single-aux rows, then raising (lowering) auxes in order as far as every row allows
  to satisfy each ``≥`` row with as much slack as possible. For the day-off shape that
  picks the earliest free windows first, the most disjoint windows there are.
* **Auxiliary variables of soft rows** define penalties; they always take their best
  value for the current assignments (a ``max`` variable is the actual maximum …).
* **Construction** takes the rows that need more assignments (e.g. a slot's minimum)
  scarcest first — fewest candidates per missing unit — and adds the candidate that
  keeps every row within its bounds (a row another kind of candidate can still fix,
  such as a supervision ratio, may fall short for the moment), preferring a small
  marginal penalty and a low load.
* **Repair** works on the rows still violated: direct additions, then moves (eject up
  to ``MAX_EJECT`` assignments blocking a candidate, add it, refill what the ejections
  left short), each kept only if the total violation falls.
* **Improvement** (bounded passes, while time is left), each move kept only if it adds
  no violation and lowers the objective: give an assignment to another candidate of the
  same slot (ejecting what blocks them; a secondary Σ activity² over the rows of a spread
  breaks ties so that units flow from the fullest to the emptiest rows); add or drop an
  optional assignment; move every row at a spread's extreme by one unit at once.

A hard row the solver cannot satisfy is reported: ``claimed_violations`` counts the
violated hard rows, ``notes`` name them, and the status is ``UNKNOWN`` (never
``FEASIBLE``) with the partial schedule.
"""

from __future__ import annotations

import heapq
import math
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import pairwise

from rsched.domain import Assignment, AssignmentSource
from rsched.rules.base import Aux, Linear, X
from rsched.solver.control import Checkpoint, Control, Progress
from rsched.solver.model import ModelSpec
from rsched.solver.result import SolveResult, SolveStatus, StopReason

NEG = -(1 << 60)
POS = 1 << 60
MAX_NOTES = 50
MAX_EJECT = 3
"""Assignments a repair move may eject to make room for one addition."""

W_LOAD = 2.0
"""Score per assignment a person already has (fairness of the overall load)."""
W_DEBT = 8.0
"""Score per row an addition leaves short for another kind of candidate to fix."""
W_SPREAD = 0.05
"""Score per unit of the secondary spread measure (a tie-breaker)."""
W_HELP = 15.0
"""Score bonus per other short row the same addition helps."""


@dataclass(frozen=True, slots=True, kw_only=True)
class GreedyParams:
    time_limit: float = 60.0
    seed: int = 0
    max_passes: int = 20
    """Repair and improvement passes at most (each also ends at the time limit)."""
    move_candidates: int = 12
    """Candidates tried per violated row in a repair move."""
    improve: bool = True


class _Stop(Exception):
    """Raised inside the search when the caller aborts or time runs out."""


def _floor_div(a: int, b: int) -> int:
    return a // b


def _ceil_div(a: int, b: int) -> int:
    return -((-a) // b)


def _viol(act: int, lb: int, ub: int) -> int:
    if act < lb:
        return lb - act
    if act > ub:
        return act - ub
    return 0


class _Engine:
    # ----------------------------------------------------------------- indexing

    def __init__(self, spec: ModelSpec, params: GreedyParams, control: Control, t0: float) -> None:
        self.spec = spec
        self.params = params
        self.control = control
        self.t0 = t0
        self.deadline = t0 + params.time_limit
        self.rng = random.Random(params.seed)
        self.aborted = False
        self.timed_out = False
        self.iterations = 0
        self.solutions = 0
        self.first_at: float | None = None
        self._last_poll = -math.inf
        self._last_progress = -math.inf
        self.phase = "construct"

        xs = spec.x_vars()
        self.xs = xs
        self.xid: dict[X, int] = {x: i for i, x in enumerate(xs)}
        persons: dict[str, int] = {}
        self.x_person = [persons.setdefault(x.person, len(persons)) for x in xs]
        self.load = [0] * len(persons)
        self.slot_xs: dict[str, list[int]] = {}
        for i, x in enumerate(xs):
            self.slot_xs.setdefault(x.slot, []).append(i)
        self.person_xs: list[list[int]] = [[] for _ in persons]
        for i, p in enumerate(self.x_person):
            self.person_xs[p].append(i)

        auxes = spec.aux_vars()
        self.auxes = auxes
        self.aid: dict[str, int] = {a.name: k for k, a in enumerate(auxes)}
        self.a_lb = [a.lb for a in auxes]
        self.a_ub = [a.ub for a in auxes]

        # hard rows
        self.h_lin: list[Linear] = []
        self.h_x: list[list[tuple[int, int]]] = []
        self.h_a: list[list[tuple[int, int]]] = []
        self.h_lb: list[int] = []
        self.h_ub: list[int] = []
        self.x_h: list[list[tuple[int, int]]] = [[] for _ in xs]
        self.a_h: list[list[tuple[int, int]]] = [[] for _ in auxes]
        for k, lin in enumerate(spec.hard):
            if k % 4096 == 0:
                self._check_stop()
            self._add_row(lin, hard=True)
        # soft rows
        self.s_x: list[list[tuple[int, int]]] = []
        self.s_a: list[list[tuple[int, int]]] = []
        self.s_lb: list[int] = []
        self.s_ub: list[int] = []
        self.x_s: list[list[tuple[int, int]]] = [[] for _ in xs]
        self.a_s: list[list[tuple[int, int]]] = [[] for _ in auxes]
        for k, lin in enumerate(spec.soft):
            if k % 4096 == 0:
                self._check_stop()
            self._add_row(lin, hard=False)
        nh = len(self.h_lb)
        self.h_pos = [any(c > 0 for _, c in self.h_x[r]) for r in range(nh)]
        self.h_neg = [any(c < 0 for _, c in self.h_x[r]) for r in range(nh)]
        self.h_single = [len(self.h_a[r]) == 1 for r in range(nh)]

        # penalties
        self.pen_x = [0] * len(xs)
        self.pen_a = [0] * len(auxes)
        self.pen_const = 0
        for pen in spec.penalties:
            self.pen_const += pen.weight * pen.constant
            for v, c in pen.terms:
                if isinstance(v, X):
                    i = self.xid.get(v, -1)
                    if i >= 0:
                        self.pen_x[i] += pen.weight * c
                else:
                    self.pen_a[self.aid[v.name]] += pen.weight * c

        # hard aux groups: auxes linked by rows holding several of them
        self.hard_aux = [bool(self.a_h[a]) for a in range(len(auxes))]
        parent = list(range(len(auxes)))

        def find(a: int) -> int:
            while parent[a] != a:
                parent[a] = parent[parent[a]]
                a = parent[a]
            return a

        for r in range(nh):
            terms = self.h_a[r]
            for (a, _), (b, _) in pairwise(terms):
                ra, rb = find(a), find(b)
                if ra != rb:
                    parent[max(ra, rb)] = min(ra, rb)
        gid: dict[int, int] = {}
        self.group_of = [-1] * len(auxes)
        self.groups: list[list[int]] = []
        for a in range(len(auxes)):
            if not self.hard_aux[a]:
                continue
            g = gid.setdefault(find(a), len(self.groups))
            if g == len(self.groups):
                self.groups.append([])
            self.groups[g].append(a)
            self.group_of[a] = g
        self.g_rows: list[list[int]] = [[] for _ in self.groups]
        self.g_multi: list[list[int]] = [[] for _ in self.groups]
        for r in range(nh):
            if self.h_a[r]:
                g = self.group_of[self.h_a[r][0][0]]
                self.g_rows[g].append(r)
                if len(self.h_a[r]) > 1:
                    self.g_multi[g].append(r)
        self.x_groups: list[tuple[int, ...]] = [
            tuple(sorted({self.group_of[self.h_a[r][0][0]] for r, _ in self.x_h[i] if self.h_a[r]}))
            for i in range(len(xs))
        ]
        self.a_multi: list[list[tuple[int, int]]] = [
            [(r, c) for r, c in self.a_h[a] if not self.h_single[r]] for a in range(len(auxes))
        ]
        # A single-aux row whose pairs can only push it towards its one finite bound
        # (e.g. ``o + x ≤ 1``) bounds its aux loosest at activity 0: read it once into a
        # base domain, and again only while some of its pairs are chosen.
        self.h_group = [self.group_of[self.h_a[r][0][0]] if self.h_a[r] else -1 for r in range(nh)]
        self.h_mono = [False] * nh
        self.base_lo = list(self.a_lb)
        self.base_hi = list(self.a_ub)
        self.g_always: list[list[int]] = [[] for _ in self.groups]
        self.g_active: list[set[int]] = [set() for _ in self.groups]
        for r in range(nh):
            if not self.h_single[r]:
                continue
            lb, ub = self.h_lb[r], self.h_ub[r]
            row_x = self.h_x[r]
            mono = not row_x or (
                (lb == NEG and all(c > 0 for _, c in row_x))
                or (ub == POS and all(c < 0 for _, c in row_x))
            )
            a, ca = self.h_a[r][0]
            if mono:
                self.h_mono[r] = True
                lo, hi = self._row_domain(ca, 0, lb, ub, self.base_lo[a], self.base_hi[a])
                self.base_lo[a], self.base_hi[a] = lo, hi
            else:
                self.g_always[self.h_group[r]].append(r)

        # Secondary measure for ties: a soft aux bounded by many rows is a max or min
        # over them (a spread); Σ weight·activity² over those rows falls whenever a unit
        # moves from a fuller row to an emptier one, even while the max and min stay.
        self.s_spread_w = [0.0] * len(self.s_lb)
        for a in range(len(auxes)):
            if not self.hard_aux[a] and len(self.a_s[a]) > 2:
                for s_row, _ in self.a_s[a]:
                    self.s_spread_w[s_row] += abs(self.pen_a[a]) / len(self.a_s[a])
        self.s_actx = [0] * len(self.s_lb)
        self.spread2 = 0.0

        # state
        self.x_val = [False] * len(xs)
        self.a_val = list(self.a_lb)
        self.h_actx = [0] * nh
        self.h_acta = [0] * nh
        self.s_act = [0] * len(self.s_lb)
        for a, value in enumerate(self.a_val):
            if value:
                for r, c in self.a_h[a]:
                    self.h_acta[r] += c * value
                for s, c in self.a_s[a]:
                    self.s_act[s] += c * value
        self.h_v = [_viol(self.h_acta[r], self.h_lb[r], self.h_ub[r]) for r in range(nh)]
        self.viol_total = sum(self.h_v)
        self.objective = float(self.pen_const) + sum(
            self.pen_a[a] * v for a, v in enumerate(self.a_val)
        )
        self.fixed: set[int] = {
            self.xid[X(p, s)] for p, s in spec.mctx.fixed if X(p, s) in self.xid
        }
        self.journal: list[tuple[int, int, int]] = []
        """(kind 0 = x / 1 = aux, index, old value) for rollback."""
        self.depth = 0
        """Open tentative changes (``mark`` without ``keep``/``rollback``)."""
        for a in range(len(auxes)):
            if not self.hard_aux[a]:
                self._refresh_soft(a)
        for g in range(len(self.groups)):
            self._resolve_group(g, force=True)

    def _add_row(self, lin: Linear, *, hard: bool) -> None:
        xs: dict[int, int] = {}
        aux: dict[int, int] = {}
        for v, c in lin.terms:
            if isinstance(v, X):
                i = self.xid.get(v, -1)
                if i >= 0:  # a pair that is no candidate is never chosen: it is 0
                    xs[i] = xs.get(i, 0) + c
            elif isinstance(v, Aux):
                a = self.aid[v.name]
                aux[a] = aux.get(a, 0) + c
        row_x = [(i, c) for i, c in xs.items() if c]
        row_a = [(a, c) for a, c in aux.items() if c]
        lb = NEG if lin.lb is None else lin.lb
        ub = POS if lin.ub is None else lin.ub
        if hard:
            r = len(self.h_lb)
            self.h_lin.append(lin)
            self.h_x.append(row_x)
            self.h_a.append(row_a)
            self.h_lb.append(lb)
            self.h_ub.append(ub)
            for i, c in row_x:
                self.x_h[i].append((r, c))
            for a, c in row_a:
                self.a_h[a].append((r, c))
        else:
            if lin.lb is None and lin.ub is None:
                return
            s = len(self.s_lb)
            self.s_x.append(row_x)
            self.s_a.append(row_a)
            self.s_lb.append(lb)
            self.s_ub.append(ub)
            for i, c in row_x:
                self.x_s[i].append((s, c))
            for a, c in row_a:
                self.a_s[a].append((s, c))

    # ------------------------------------------------------------ time & abort

    def _check_stop(self) -> None:
        if self.control.should_abort():
            self.aborted = True
        elif time.monotonic() >= self.deadline:
            self.timed_out = True
        if self.aborted or self.timed_out:
            raise _Stop

    def tick(self) -> None:
        self.iterations += 1
        now = time.monotonic()
        if now - self._last_poll >= min(self.control.poll_seconds, 0.2):
            self._last_poll = now
            if self.control.should_abort():
                self.aborted = True
            if now >= self.deadline:
                self.timed_out = True
            if self.control.on_progress is not None and now - self._last_progress >= 0.5:
                self._last_progress = now
                self.control.on_progress(
                    Progress(
                        elapsed=now - self.t0,
                        solutions=self.solutions,
                        objective=self.objective if self.viol_total == 0 else None,
                        bound=None,
                        iterations=self.iterations,
                        phase=self.phase,
                    )
                )
        if self.aborted or self.timed_out:
            raise _Stop

    # ---------------------------------------------------------- state changes

    def _set_hard_act(self, r: int) -> None:
        v = _viol(self.h_actx[r] + self.h_acta[r], self.h_lb[r], self.h_ub[r])
        self.viol_total += v - self.h_v[r]
        self.h_v[r] = v

    def set_x(self, i: int, value: bool) -> None:
        if self.x_val[i] == value:
            return
        if self.depth:
            self.journal.append((0, i, int(self.x_val[i])))
        self.x_val[i] = value
        d = 1 if value else -1
        for r, c in self.x_h[i]:
            self.h_actx[r] += c * d
            self._set_hard_act(r)
            if self.h_mono[r]:
                if self.h_actx[r]:
                    self.g_active[self.h_group[r]].add(r)
                else:
                    self.g_active[self.h_group[r]].discard(r)
        if self.x_s[i]:
            override = {s: c * d for s, c in self.x_s[i]}
            new_vals = {
                a: self._soft_value_changed(a, override)
                for s in override
                for a, _ in self.s_a[s]
                if not self.hard_aux[a]
            }
            for s, c in override.items():
                self.s_act[s] += c
                w = self.s_spread_w[s]
                if w:
                    t = self.s_actx[s]
                    self.spread2 += w * ((t + c) * (t + c) - t * t)
                self.s_actx[s] += c
            for a, v in new_vals.items():
                self._set_soft(a, v)
        self.objective += self.pen_x[i] * d
        self.load[self.x_person[i]] += d

    def set_aux(self, a: int, value: int) -> None:
        old = self.a_val[a]
        if old == value:
            return
        if self.depth:
            self.journal.append((1, a, old))
        self.a_val[a] = value
        d = value - old
        for r, c in self.a_h[a]:
            self.h_acta[r] += c * d
            self._set_hard_act(r)
        self.objective += self.pen_a[a] * d
        soft: set[int] = set()
        for s, c in self.a_s[a]:
            self.s_act[s] += c * d
            for b, _ in self.s_a[s]:
                if not self.hard_aux[b] and b != a:
                    soft.add(b)
        for b in soft:
            self._refresh_soft(b)

    def mark(self) -> int:
        """Start a tentative change; end it with exactly one ``keep`` or ``rollback``."""
        self.depth += 1
        return len(self.journal)

    def keep(self, mark: int) -> None:
        self.depth -= 1
        if self.depth == 0:
            self.journal.clear()

    def rollback(self, mark: int) -> None:
        self.depth -= 1
        depth, self.depth = self.depth, 0
        while len(self.journal) > mark:
            kind, idx, old = self.journal.pop()
            if kind == 0:
                self.set_x(idx, bool(old))
            else:
                self.set_aux(idx, old)
        self.depth = depth

    def abandon(self) -> None:
        """Undo every tentative change still open (the search was stopped inside one)."""
        self.depth = 1
        self.rollback(0)

    # ------------------------------------------------------------- soft auxes

    def _soft_value(self, a: int, override: dict[int, int] | None = None) -> int:
        """The best value of soft aux ``a`` for the current rows (changed by ``override``)."""
        lo, hi = self.a_lb[a], self.a_ub[a]
        for s, ca in self.a_s[a]:
            rest = self.s_act[s] - ca * self.a_val[a]
            if override is not None:
                rest += override.get(s, 0)
            lo, hi = self._row_domain(ca, rest, self.s_lb[s], self.s_ub[s], lo, hi)
        if self.pen_a[a] < 0:
            return max(min(hi, self.a_ub[a]), self.a_lb[a])
        return min(max(lo, self.a_lb[a]), self.a_ub[a])

    def _refresh_soft(self, a: int) -> None:
        self._set_soft(a, self._soft_value(a))

    def _set_soft(self, a: int, new: int, depth: int = 0) -> None:
        old = self.a_val[a]
        if new == old:
            return
        self.a_val[a] = new
        self.objective += self.pen_a[a] * (new - old)
        linked: set[int] = set()
        for s, c in self.a_s[a]:
            self.s_act[s] += c * (new - old)
            if len(self.s_a[s]) > 1:
                linked.update(b for b, _ in self.s_a[s] if b != a and not self.hard_aux[b])
        if depth < 3:  # rows linking soft auxes (e.g. ``max ≥ min``): re-read the others
            for b in linked:
                self._set_soft(b, self._soft_value(b), depth + 1)

    def delta_spread(self, i: int, d: int) -> float:
        """Change of the secondary (spread) measure if ``x[i]`` changes by ``d``."""
        delta = 0.0
        for s, c in self.x_s[i]:
            w = self.s_spread_w[s]
            if w:
                t = self.s_actx[s]
                delta += w * ((t + c * d) ** 2 - t * t)
        return delta

    def delta_objective(self, i: int, d: int) -> float:
        """Change of the objective if ``x[i]`` changes by ``d`` (soft penalties only)."""
        delta = float(self.pen_x[i] * d)
        override: dict[int, int] = {}
        touched: set[int] = set()
        for s, c in self.x_s[i]:
            override[s] = c * d
            for a, _ in self.s_a[s]:
                if not self.hard_aux[a]:
                    touched.add(a)
        for a in touched:
            delta += self.pen_a[a] * (self._soft_value_changed(a, override) - self.a_val[a])
        return delta

    def _soft_value_changed(self, a: int, override: dict[int, int]) -> int:
        """``_soft_value(a, override)``, reading only the changed row when it decides."""
        rows = self.a_s[a]
        if len(rows) <= 2:
            return self._soft_value(a, override)
        changed = [(s, ca) for s, ca in rows if s in override]
        if len(changed) != 1:
            return self._soft_value(a, override)
        s, ca = changed[0]
        cur = self.a_val[a]
        rest = self.s_act[s] - ca * cur
        lower = self.pen_a[a] >= 0
        old = self._soft_bound(ca, rest, self.s_lb[s], self.s_ub[s], lower)
        new = self._soft_bound(ca, rest + override[s], self.s_lb[s], self.s_ub[s], lower)
        if lower:
            if new is not None and new >= cur:
                return min(max(new, self.a_lb[a]), self.a_ub[a])
            if old is None or old < cur:
                return cur
        else:
            if new is not None and new <= cur:
                return max(min(new, self.a_ub[a]), self.a_lb[a])
            if old is None or old > cur:
                return cur
        return self._soft_value(a, override)

    @staticmethod
    def _soft_bound(ca: int, rest: int, lb: int, ub: int, lower: bool) -> int | None:
        """The lower (or upper) bound one soft row puts on its aux."""
        if lower:
            if ca > 0:
                return _ceil_div(lb - rest, ca) if lb > NEG else None
            return _ceil_div(ub - rest, ca) if ub < POS else None
        if ca > 0:
            return _floor_div(ub - rest, ca) if ub < POS else None
        return _floor_div(lb - rest, ca) if lb > NEG else None

    # --------------------------------------------------------------- groups

    @staticmethod
    def _row_domain(ca: int, rest: int, lb: int, ub: int, lo: int, hi: int) -> tuple[int, int]:
        """Narrow ``lo..hi`` of an aux with coefficient ``ca`` in ``lb ≤ rest + ca·v ≤ ub``."""
        if ca > 0:
            if lb > NEG:
                lo = max(lo, _ceil_div(lb - rest, ca))
            if ub < POS:
                hi = min(hi, _floor_div(ub - rest, ca))
        else:
            if lb > NEG:
                hi = min(hi, _floor_div(lb - rest, ca))
            if ub < POS:
                lo = max(lo, _ceil_div(ub - rest, ca))
        return lo, hi

    def _group_solve(self, g: int, dx: dict[int, int] | None = None) -> tuple[dict[int, int], bool]:
        """Best values of group ``g``'s auxes for the current assignments (plus ``dx``, a
        change of row activities); ``True`` when every row of the group then holds."""
        members = self.groups[g]
        lo = {a: self.base_lo[a] for a in members}
        hi = {a: self.base_hi[a] for a in members}
        rows: set[int] = set(self.g_active[g])
        rows.update(self.g_always[g])
        if dx:
            rows.update(r for r in dx if self.h_single[r])
        for r in rows:
            a, ca = self.h_a[r][0]
            rest = self.h_actx[r] + (dx.get(r, 0) if dx else 0)
            lo[a], hi[a] = self._row_domain(ca, rest, self.h_lb[r], self.h_ub[r], lo[a], hi[a])
        ok = True
        vals: dict[int, int] = {}
        for a in members:
            if lo[a] > hi[a]:
                ok = False
                lo[a] = hi[a] = min(max(lo[a], self.a_lb[a]), self.a_ub[a])
            vals[a] = lo[a]
        act: dict[int, int] = {}
        for r in self.g_multi[g]:
            act[r] = (
                self.h_actx[r]
                + (dx.get(r, 0) if dx else 0)
                + sum(c * vals[a] for a, c in self.h_a[r])
            )

        def step(a: int, d: int) -> bool:
            for r2, c2 in self.a_multi[a]:
                before = act[r2]
                after = before + c2 * d
                lb2, ub2 = self.h_lb[r2], self.h_ub[r2]
                if _viol(after, lb2, ub2) > _viol(before, lb2, ub2):
                    return False
            for r2, c2 in self.a_multi[a]:
                act[r2] += c2 * d
            vals[a] += d
            return True

        for r in self.g_multi[g]:
            lb, ub = self.h_lb[r], self.h_ub[r]
            if lb > NEG:  # as much slack as the other rows allow
                for a, ca in self.h_a[r]:
                    d = 1 if ca > 0 else -1
                    while lo[a] <= vals[a] + d <= hi[a] and step(a, d):
                        pass
            if act[r] > ub:
                for a, ca in self.h_a[r]:
                    d = -1 if ca > 0 else 1
                    while act[r] > ub and lo[a] <= vals[a] + d <= hi[a] and step(a, d):
                        pass
        if ok:
            ok = all(_viol(act[r], self.h_lb[r], self.h_ub[r]) == 0 for r in self.g_multi[g])
        return vals, ok

    def _resolve_group(self, g: int, *, force: bool = False) -> bool:
        vals, ok = self._group_solve(g)
        if ok or force:
            for a, v in vals.items():
                self.set_aux(a, v)
        return ok

    def _group_changes(self, i: int, g: int) -> dict[int, int] | None:
        """Aux changes in group ``g`` that make adding ``x[i]`` keep every group row,
        or None when no values do."""
        need: dict[int, tuple[int, int]] = {}
        full = False
        for r, c in self.x_h[i]:
            if not self.h_a[r] or self.group_of[self.h_a[r][0][0]] != g:
                continue
            new_act = self.h_actx[r] + c + self.h_acta[r]
            if _viol(new_act, self.h_lb[r], self.h_ub[r]) == 0:
                continue
            if not self.h_single[r]:
                full = True
                break
            a, ca = self.h_a[r][0]
            lo, hi = need.get(a, (self.a_lb[a], self.a_ub[a]))
            need[a] = self._row_domain(ca, self.h_actx[r] + c, self.h_lb[r], self.h_ub[r], lo, hi)
        if not full:
            changes: dict[int, int] = {}
            for a, (lo, hi) in need.items():
                if lo > hi:
                    full = True
                    break
                changes[a] = min(max(self.a_val[a], lo), hi)
            if not full:
                # the changed auxes' other rows must still hold
                delta: dict[int, int] = {}
                for a, v in changes.items():
                    for r, c in self.a_h[a]:
                        delta[r] = delta.get(r, 0) + c * (v - self.a_val[a])
                for r, c in self.x_h[i]:
                    if r in delta:
                        delta[r] += c
                if all(
                    _viol(self.h_actx[r] + self.h_acta[r] + d, self.h_lb[r], self.h_ub[r]) == 0
                    for r, d in delta.items()
                ):
                    return changes
        dx = {r: c for r, c in self.x_h[i] if self.h_a[r]}
        vals, ok = self._group_solve(g, dx)
        if not ok:
            return None
        return {a: v for a, v in vals.items() if v != self.a_val[a]}

    # ------------------------------------------------------------ additions

    def can_add(self, i: int) -> tuple[int, dict[int, int]] | None:
        """(rows left short for others to fix, aux changes) if ``x[i]`` may be added."""
        debt = 0
        for r, c in self.x_h[i]:
            if self.h_a[r]:
                continue
            act = self.h_actx[r] + self.h_acta[r]
            before = self.h_v[r]
            after = _viol(act + c, self.h_lb[r], self.h_ub[r])
            if after > before:
                fixable = self.h_pos[r] if act + c < self.h_lb[r] else self.h_neg[r]
                if not fixable:
                    return None
                debt += 1
        changes: dict[int, int] = {}
        for g in self.x_groups[i]:
            ch = self._group_changes(i, g)
            if ch is None:
                return None
            changes.update(ch)
        return debt, changes

    def add(self, i: int, changes: dict[int, int]) -> None:
        self.set_x(i, True)
        for a, v in changes.items():
            self.set_aux(a, v)
        for g in {self.group_of[a] for a in changes}:
            self._resolve_group(g)

    def remove(self, i: int) -> None:
        self.set_x(i, False)
        for g in self.x_groups[i]:
            if any(self.h_v[r] for r in self.g_rows[g]):
                self._resolve_group(g)

    def helps(self, i: int) -> int:
        n = 0
        for r, c in self.x_h[i]:
            v = self.h_v[r]
            if v and _viol(self.h_actx[r] + self.h_acta[r] + c, self.h_lb[r], self.h_ub[r]) < v:
                n += 1
        return n

    def fixers(self, r: int) -> list[int]:
        """Unassigned pairs whose addition moves violated row ``r`` towards its bounds."""
        act = self.h_actx[r] + self.h_acta[r]
        want = 1 if act < self.h_lb[r] else -1
        return [i for i, c in self.h_x[r] if not self.x_val[i] and c * want > 0]

    def score(self, i: int, debt: int) -> float:
        return (
            self.delta_objective(i, 1)
            + W_SPREAD * self.delta_spread(i, 1)
            + W_LOAD * self.load[self.x_person[i]]
            + W_DEBT * debt
            - W_HELP * (self.helps(i) - 1)
            + self.rng.random() * 1e-3
        )

    def best_additions(self, r: int) -> list[tuple[float, int, dict[int, int]]]:
        out: list[tuple[float, int, dict[int, int]]] = []
        for i in self.fixers(r):
            self.tick()
            got = self.can_add(i)
            if got is not None:
                debt, changes = got
                out.append((self.score(i, debt), i, changes))
        out.sort(key=lambda t: t[0])
        return out

    # ---------------------------------------------------------- construction

    def construct(self) -> None:
        self.phase = "construct"
        for i in sorted(self.fixed):
            self.set_x(i, True)
        for g in {g for i in self.fixed for g in self.x_groups[i]}:
            self._resolve_group(g, force=True)
        for p, s in sorted(self.control.hint):
            i = self.xid.get(X(p, s), -1)
            if i < 0 or self.x_val[i]:
                continue
            self.tick()
            got = self.can_add(i)
            if got is not None and got[0] == 0:
                self.add(i, got[1])
        heap: list[tuple[float, int]] = []
        for r in range(len(self.h_lb)):
            if self.h_v[r] and self.h_x[r]:
                heap.append((self._scarcity(r), r))
        heapq.heapify(heap)
        requeued: dict[int, int] = {}
        while heap:
            key, r = heapq.heappop(heap)
            if not self.h_v[r]:
                continue
            options = self.best_additions(r)
            # scarcity now: the row may have lost candidates since it was queued
            now_key = len(options) / self.h_v[r]
            if key >= 0 and heap and now_key > heap[0][0] + 1e-9 and requeued.get(r, 0) < 3:
                requeued[r] = requeued.get(r, 0) + 1
                heapq.heappush(heap, (now_key, r))
                continue
            while options:
                _, i, changes = options[0]
                self.add(i, changes)
                for r2, _ in self.x_h[i]:
                    if r2 != r and self.h_v[r2] and not self.h_a[r2]:
                        heapq.heappush(heap, (-1.0, r2))
                if not self.h_v[r]:
                    break
                options = self.best_additions(r)

    def _scarcity(self, r: int) -> float:
        return len(self.fixers(r)) / max(1, self.h_v[r])

    # ---------------------------------------------------------------- repair

    def violated(self) -> list[int]:
        return [r for r in range(len(self.h_lb)) if self.h_v[r]]

    def _fill(self, r: int, exclude: Iterable[int] = (), depth: int = 0) -> None:
        """Add the best candidates to row ``r`` while each addition (with what it takes to
        cover the rows it leaves short, e.g. a supervising faculty) lowers the total."""
        banned = set(exclude)
        while self.h_v[r]:
            for _, i, changes in self.best_additions(r):
                if i in banned:
                    continue
                before = self.viol_total
                m = self.mark()
                self.add(i, changes)
                if depth == 0:
                    for r2, _ in self.x_h[i]:
                        if r2 != r and self.h_v[r2] and self.h_x[r2]:
                            self._fill(r2, banned, depth + 1)
                if self.viol_total < before:
                    self.keep(m)
                    break
                self.rollback(m)
            else:
                return

    def _blockers(self, i: int) -> tuple[list[int], list[int]]:
        """Assigned pairs whose removal could let ``x[i]`` in: those sharing a row with it
        that the addition would break, and those sharing a group of auxes with it."""
        direct: dict[int, None] = {}
        for r, c in self.x_h[i]:
            if self.h_a[r]:
                continue
            act = self.h_actx[r] + self.h_acta[r]
            if _viol(act + c, self.h_lb[r], self.h_ub[r]) > self.h_v[r]:
                for j, cj in self.h_x[r]:
                    if self.x_val[j] and j != i and cj * c > 0 and j not in self.fixed:
                        direct[j] = None
        shared: list[int] = []
        if self.x_groups[i]:
            mine = set(self.x_groups[i])
            shared = [
                j
                for j in self.person_xs[self.x_person[i]]
                if self.x_val[j] and j not in self.fixed and mine.intersection(self.x_groups[j])
            ]
        return list(direct), shared

    def _try_move(self, r: int) -> bool:
        """Eject up to ``MAX_EJECT`` assignments that block a candidate of row ``r``, add
        it, refill what the ejections left short; keep it if the total violation fell."""
        cands = self.fixers(r)
        self.rng.shuffle(cands)
        cands.sort(key=lambda i: self.load[self.x_person[i]])
        for i in cands[: self.params.move_candidates]:
            for _attempt in range(3):
                self.tick()
                before = self.viol_total
                m = self.mark()
                ejected: list[int] = []
                got = self.can_add(i)
                while got is None and len(ejected) < MAX_EJECT:
                    direct, shared = self._blockers(i)
                    pool = direct or shared
                    if not pool:
                        break
                    b = self.rng.choice(pool)
                    self.remove(b)
                    ejected.append(b)
                    got = self.can_add(i)
                if got is not None and ejected:
                    self.add(i, got[1])
                    for b in ejected:
                        for r2, _ in self.x_h[b]:
                            if self.h_v[r2] and self.h_x[r2]:
                                self._fill(r2, exclude=ejected)
                    for r2, _ in self.x_h[i]:
                        if self.h_v[r2] and self.h_x[r2] and r2 != r:
                            self._fill(r2, exclude=ejected)
                    if self.viol_total < before:
                        self.keep(m)
                        return True
                self.rollback(m)
                if got is None and not ejected:
                    break
        return False

    def _try_group_release(self, r: int) -> bool:
        """A violated row of auxes only: drop an assignment that takes their room."""
        g = self.group_of[self.h_a[r][0][0]]
        held = sorted(
            {i for r2 in self.g_rows[g] for i, _ in self.h_x[r2] if self.x_val[i]} - self.fixed
        )
        self.rng.shuffle(held)
        for b in held:
            self.tick()
            before = self.viol_total
            m = self.mark()
            self.remove(b)
            self._resolve_group(g)
            for r2, _ in self.x_h[b]:
                if self.h_v[r2] and self.h_x[r2]:
                    self._fill(r2, exclude=(b,))
            if self.viol_total < before:
                self.keep(m)
                return True
            self.rollback(m)
        return False

    def repair(self) -> None:
        self.phase = "repair"
        for _ in range(self.params.max_passes):
            rows = self.violated()
            if not rows:
                return
            rows.sort(key=self._scarcity)
            progress = False
            for r in rows:
                if not self.h_v[r]:
                    continue
                before = self.viol_total
                if self.h_x[r]:
                    self._fill(r)
                    while self.h_v[r] and self._try_move(r):
                        pass
                elif self.h_a[r]:
                    while self.h_v[r] and self._try_group_release(r):
                        pass
                progress = progress or self.viol_total < before
            if not progress:
                return

    # ----------------------------------------------------------- improvement

    def improve(self) -> None:
        self.phase = "improve"
        for _ in range(self.params.max_passes):
            gained = False
            order = [i for i, v in enumerate(self.x_val) if v and i not in self.fixed]
            self.rng.shuffle(order)
            for i in order:
                if self.x_val[i]:
                    gained = self._improve_one(i) or gained
            gained = self._improve_add_drop() or gained
            gained = self._move_extremes() or gained
            if gained and self.viol_total == 0:
                self.checkpoint()
            if not gained:
                return

    def _improve_add_drop(self) -> bool:
        """Add an optional assignment, or drop one, where the objective falls (e.g. a
        second person on a slot whose maximum allows it, to even out weekends)."""
        gained = False
        order = list(range(len(self.xs)))
        self.rng.shuffle(order)
        for i in order:
            if i in self.fixed:
                continue
            self.tick()
            d = 1 if not self.x_val[i] else -1
            if self.delta_objective(i, d) >= 0:
                continue
            before_v, before_o = self.viol_total, self.objective
            m = self.mark()
            if d > 0:
                got = self.can_add(i)
                if got is None:
                    self.rollback(m)
                    continue
                self.add(i, got[1])
                for r, _ in self.x_h[i]:  # e.g. the faculty a supervision ratio now needs
                    if self.h_v[r] and self.h_x[r]:
                        self._fill(r)
            else:
                self.remove(i)
            if self.viol_total <= before_v and self.objective < before_o - 1e-9:
                self.keep(m)
                gained = True
            else:
                self.rollback(m)
        return gained

    def _move_extremes(self) -> bool:
        """A soft aux bounded by many rows is the maximum (or minimum) of a spread; when
        several rows share the extreme, no single change moves it. Move every row at the
        extreme by one unit at once; kept only if the objective then falls."""
        gained = False
        for a in range(len(self.auxes)):
            if self.hard_aux[a] or not self.pen_a[a] or len(self.a_s[a]) <= 2:
                continue
            lower = self.pen_a[a] > 0  # the aux is a maximum: its rows give lower bounds
            cur = self.a_val[a]
            if cur <= self.a_lb[a] if lower else cur >= self.a_ub[a]:
                continue
            binding = [
                (s, ca)
                for s, ca in self.a_s[a]
                if self._soft_bound(
                    ca, self.s_act[s] - ca * cur, self.s_lb[s], self.s_ub[s], lower=lower
                )
                == cur
            ]
            if not binding:
                continue
            self.tick()
            before_v, before_o = self.viol_total, self.objective
            m = self.mark()
            # the row's activity must fall (rise) for the bound on the aux to loosen
            if all(
                self._shift_row(s, (1 if ca > 0 else -1) if lower else (1 if ca < 0 else -1))
                for s, ca in binding
            ) and (self.viol_total <= before_v and self.objective < before_o - 1e-9):
                self.keep(m)
                gained = True
            else:
                self.rollback(m)
        return gained

    def _shift_row(self, s: int, want: int) -> bool:
        """Move soft row ``s``'s activity by one step in direction ``want`` (add or drop one
        pair, refilling what that leaves short) without a net hard violation."""
        options = [(i, 1) for i, c in self.s_x[s] if not self.x_val[i] and c * want > 0] + [
            (i, -1)
            for i, c in self.s_x[s]
            if self.x_val[i] and c * want < 0 and i not in self.fixed
        ]
        options.sort(
            key=lambda o: (self.delta_objective(o[0], o[1]), self.load[self.x_person[o[0]]])
        )
        for i, d in options[: self.params.move_candidates]:
            self.tick()
            before = self.viol_total
            m = self.mark()
            if d > 0:
                got = self.can_add(i)
                if got is None:
                    self.rollback(m)
                    continue
                self.add(i, got[1])
            else:
                self.remove(i)
            for r, _ in self.x_h[i]:
                if self.h_v[r] and self.h_x[r]:
                    self._fill(r, exclude=(i,))
            if self.viol_total <= before:
                self.keep(m)
                return True
            self.rollback(m)
        return False

    def _improve_one(self, i: int) -> bool:
        """Give ``x[i]``'s slot to another candidate (ejecting what blocks them and
        refilling it) when that lowers the objective without adding any violation."""
        self.tick()
        out_delta = self.delta_objective(i, -1)
        out_spread = self.delta_spread(i, -1)
        options: list[tuple[float, float, int]] = []
        for j in self.slot_xs[self.xs[i].slot]:
            if self.x_val[j] or self.x_person[j] == self.x_person[i]:
                continue
            est = out_delta + self.delta_objective(j, 1)
            est2 = out_spread + self.delta_spread(j, 1)
            if est < 0 or (est <= 0 and est2 < 0):
                options.append((est, est2, j))
        options.sort()
        for _, _, j in options[:4]:
            self.tick()
            before_v, before_o, before_s = self.viol_total, self.objective, self.spread2
            m = self.mark()
            self.remove(i)
            ejected: list[int] = []
            got = self.can_add(j)
            while got is None and len(ejected) < MAX_EJECT:
                direct, shared = self._blockers(j)
                pool = direct or shared
                if not pool:
                    break
                b = self.rng.choice(pool)
                self.remove(b)
                ejected.append(b)
                got = self.can_add(j)
            if got is not None:
                self.add(j, got[1])
                for b in ejected:
                    for r2, _ in self.x_h[b]:
                        if self.h_v[r2] and self.h_x[r2]:
                            self._fill(r2, exclude=ejected)
                if self.viol_total <= before_v and (
                    self.objective < before_o - 1e-9
                    or (self.objective <= before_o + 1e-9 and self.spread2 < before_s - 1e-9)
                ):
                    self.keep(m)
                    return True
            self.rollback(m)
        return False

    # ---------------------------------------------------------------- output

    def pairs(self) -> tuple[tuple[str, str], ...]:
        return tuple((self.xs[i].person, self.xs[i].slot) for i, v in enumerate(self.x_val) if v)

    def checkpoint(self) -> None:
        elapsed = time.monotonic() - self.t0
        self.solutions += 1
        if self.first_at is None:
            self.first_at = elapsed
        if self.control.on_checkpoint is not None:
            self.control.on_checkpoint(
                Checkpoint(pairs=self.pairs(), objective=self.objective, elapsed=elapsed)
            )
        if self.control.should_abort():
            self.aborted = True

    def penalties(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for pen in self.spec.penalties:
            total = pen.constant
            for v, c in pen.terms:
                if isinstance(v, X):
                    i = self.xid.get(v, -1)
                    total += c * int(i >= 0 and self.x_val[i])
                else:
                    total += c * self.a_val[self.aid[v.name]]
            out[pen.name] = out.get(pen.name, 0) + float(pen.weight * total)
        return out


def solve_greedy(spec: ModelSpec, params: GreedyParams, control: Control) -> SolveResult:
    t0 = time.monotonic()

    def nothing(stop: StopReason, note: str) -> SolveResult:
        return SolveResult(
            algorithm="greedy",
            status=SolveStatus.UNKNOWN,
            stop_reason=stop,
            assignments=(),
            objective=None,
            bound=None,
            time_to_first=None,
            solutions=0,
            wall_seconds=time.monotonic() - t0,
            notes=(note,),
            model_size=spec.size(),
        )

    if control.should_abort():
        return nothing(StopReason.ABORTED, "aborted before the construction started")
    try:
        eng = _Engine(spec, params, control, t0)
    except _Stop:
        if control.should_abort():
            return nothing(StopReason.ABORTED, "aborted before the construction started")
        return nothing(StopReason.TIME_LIMIT, "time limit reached before the construction")
    try:
        eng.tick()
        eng.construct()
        eng.repair()
        if eng.viol_total == 0:
            eng.checkpoint()
            if params.improve:
                eng.improve()
    except _Stop:
        eng.abandon()
    wall = time.monotonic() - t0

    short = eng.violated()
    if eng.aborted:
        stop = StopReason.ABORTED
    elif eng.timed_out:
        stop = StopReason.TIME_LIMIT
    else:
        stop = StopReason.COMPLETED
    notes: list[str] = []
    if short:
        notes.append(f"greedy left {len(short)} hard row(s) violated; the schedule is partial")
        for r in short[:MAX_NOTES]:
            lin = eng.h_lin[r]
            notes.append(f"{lin.rule}: {lin.name}")
        if len(short) > MAX_NOTES:
            notes.append(f"… and {len(short) - MAX_NOTES} more")
    feasible = not short
    return SolveResult(
        algorithm="greedy",
        status=SolveStatus.FEASIBLE if feasible else SolveStatus.UNKNOWN,
        stop_reason=stop,
        assignments=tuple(
            Assignment(person_id=p, slot_id=s, source=AssignmentSource.SOLVER)
            for p, s in sorted(eng.pairs())
        ),
        objective=math.fsum(eng.penalties().values()) if feasible else None,
        bound=None,
        time_to_first=(eng.first_at if eng.first_at is not None else wall) if feasible else None,
        solutions=eng.solutions,
        wall_seconds=wall,
        claimed_violations=len(short),
        penalties=eng.penalties() if feasible else {},
        notes=tuple(notes),
        model_size=spec.size(),
    )
