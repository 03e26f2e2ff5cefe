"""Pre-solve check: contradictions found before any solving, and the model's size."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

from rsched.domain import ProgramData, Slot
from rsched.rules.access import blocking_absence, ineligibility
from rsched.rules.staffing import ratio_for
from rsched.solver.model import ModelSpec


@dataclass(frozen=True, slots=True, kw_only=True)
class PrecheckReport:
    errors: tuple[str, ...]
    """Contradictions: no schedule can exist while these stand."""
    warnings: tuple[str, ...]
    size: dict[str, object] = field(default_factory=dict)
    dominant_rules: tuple[tuple[str, int], ...] = ()

    @property
    def ok(self) -> bool:
        return not self.errors


def why_unavailable(data: ProgramData, person_id: str, slot: Slot) -> str | None:
    person = data.person_by_id[person_id]
    absence = blocking_absence(data, person_id, slot)
    if absence is not None:
        return f"{person_id} on leave"
    return ineligibility(data, person, slot)


def slot_shortfalls(spec: ModelSpec, limit: int = 20) -> list[str]:
    """Slots whose minimum exceeds the eligible, available headcount, with reasons."""
    data = spec.data
    out: list[str] = []
    for slot in data.slots:
        cands = spec.mctx.candidates_of_slot.get(slot.id, [])
        staff = [p for p in cands if data.person_by_id[p].kind is slot.staff_kind]
        day = slot.start.astimezone(data.tz).date()
        label = f"slot {slot.shift} {day} ({slot.id})"
        if len(staff) < slot.min_staff:
            reasons = [
                r
                for p in data.people
                if p.kind is slot.staff_kind
                and p.id not in staff
                and (r := why_unavailable(data, p.id, slot)) is not None
            ]
            shown = "; ".join(reasons[:6]) + (" …" if len(reasons) > 6 else "")
            avail = ", ".join(staff) if staff else "nobody"
            out.append(
                f"{label} needs {slot.min_staff} {slot.staff_kind}(s); only {len(staff)} "
                f"eligible and available ({avail}). Others: {shown or 'none exist'}"
            )
        for level, need in sorted(slot.pgy_min.items()):
            seniors = [p for p in staff if (data.person_by_id[p].pgy or 0) >= level]
            if len(seniors) < need:
                out.append(
                    f"{label} needs {need} PGY-{level}+ resident(s); only {len(seniors)} "
                    f"eligible and available"
                )
        if slot.supervision and slot.min_staff:
            residents = [p for p in staff if data.person_by_id[p].is_resident]
            found = (ratio_for(slot, data.person_by_id[p].pgy) for p in residents)
            ratios = sorted((r for r in found if r is not None), reverse=True)
            if ratios:
                # the most lenient possible crew: the min residents with the widest ratios
                crew = ratios[: slot.min_staff]
                lcm = math.lcm(*crew)
                need_fac = math.ceil(sum(lcm // r for r in crew) / lcm)
                fac = [p for p in cands if not data.person_by_id[p].is_resident]
                have = min(len(fac), slot.faculty_max)
                if have < need_fac:
                    out.append(
                        f"{label} needs at least {need_fac} supervising faculty for "
                        f"{slot.min_staff} resident(s); only {have} can be assigned "
                        f"(faculty_max {slot.faculty_max}, {len(fac)} available)"
                    )
        if len(out) >= limit:
            break
    return out


def precheck(spec: ModelSpec) -> PrecheckReport:
    data = spec.data
    errors = slot_shortfalls(spec)
    warnings: list[str] = []
    # rotations: per block headcount against min/max
    if data.rotation_assignments:
        counts = Counter((r.block, r.rotation_id) for r in data.rotation_assignments)
        in_horizon = [
            n
            for n, b in enumerate(data.blocks, start=1)
            if b.start <= data.end and b.end >= data.start
        ]
        for block in in_horizon:
            for rot in data.rotations:
                n = counts.get((block, rot.id), 0)
                if n < rot.min_residents:
                    errors.append(
                        f"rotation {rot.id} needs {rot.min_residents} resident(s) in block "
                        f"{block}; {n} assigned"
                    )
                elif n > rot.max_residents:
                    errors.append(
                        f"rotation {rot.id} allows {rot.max_residents} resident(s) in block "
                        f"{block}; {n} assigned"
                    )
        need = sum(r.min_residents for r in data.rotations)
        have = len(data.residents())
        if need > have:
            errors.append(
                f"rotations need {need} residents per block in all; the program has {have}"
            )
    weights = {k: v for k, v in data.program.settings.weights.to_dict().items() if v > 0}
    if weights and max(weights.values()) > 100 * min(weights.values()):
        hi = max(weights, key=lambda k: weights[k])
        lo = min(weights, key=lambda k: weights[k])
        warnings.append(
            f"soft weights differ by more than 100× ({hi}={weights[hi]}, {lo}={weights[lo]}): "
            "the smaller term will hardly count"
        )
    dominant = sorted(spec.constraints_by_rule.items(), key=lambda kv: -kv[1])[:5]
    return PrecheckReport(
        errors=tuple(errors),
        warnings=tuple(warnings),
        size=spec.size(),
        dominant_rules=tuple(dominant),
    )
