"""The diff guard's arithmetic, at and around every documented threshold."""

from __future__ import annotations

import pytest

from rsched.services.publishing import PublishPolicy, compute_diff

POLICY = PublishPolicy()


def _pairs(n: int, person: str = "p", prefix: str = "s") -> set[tuple[str, str]]:
    return {(f"{person}{i % 10}", f"{prefix}{i}") for i in range(n)}


@pytest.mark.parametrize(("changed", "verdict"), [(19, "ok"), (20, "ok"), (21, "refuse")])
def test_global_churn_refuses_strictly_above_20_percent(changed: int, verdict: str) -> None:
    # 100 active assignments, 10 people with 10 each; each changed slot goes to a newcomer,
    # so nobody loses more than 3 of 10 and the per-person rule stays quiet
    old = {(f"p{i % 10}", f"s{i}") for i in range(100)}
    new = {(f"q{i % 10}" if i < changed else f"p{i % 10}", f"s{i}") for i in range(100)}
    report = compute_diff("d", ["a"], new, old, POLICY)
    assert report.churn == pytest.approx(changed / 100)
    assert (report.verdict == "refuse") == (verdict == "refuse")
    if verdict == "refuse":
        assert report.reasons[0].startswith("churn 21.0%")


def test_per_person_limits_refuse_above_10_changes_or_half_and_warn_above_30_percent() -> None:
    base = {("a", f"s{i}") for i in range(40)} | {("b", f"t{i}") for i in range(10)}
    base |= {(f"z{i}", f"u{i}") for i in range(400)}  # keep global churn low
    # a: 11 changes of 40 (27.5 %) → refused by count; b: 4 of 10 (40 %) → warning
    new = (base - {("a", f"s{i}") for i in range(11)}) | {("c", f"s{i}") for i in range(11)}
    new = (new - {("b", f"t{i}") for i in range(4)}) | {("d", f"t{i}") for i in range(4)}
    report = compute_diff("d", ["a"], new, base, POLICY)
    verdicts = {p.person: p.verdict for p in report.people}
    assert verdicts["a"] == "refuse" and verdicts["b"] == "warn"
    assert report.verdict == "refuse"
    assert any(r.startswith("a: 11 changed") for r in report.reasons)


def test_exactly_half_of_a_persons_assignments_passes() -> None:
    base = {("a", f"s{i}") for i in range(10)} | {(f"z{i}", f"u{i}") for i in range(100)}
    new = (base - {("a", f"s{i}") for i in range(5)}) | {("y", f"s{i}") for i in range(5)}
    report = compute_diff("d", [], new, base, POLICY)
    a = next(p for p in report.people if p.person == "a")
    assert a.fraction == 0.5 and a.verdict == "warn"  # 50 % is the limit: warn, not refuse


def test_first_publish_has_no_churn() -> None:
    report = compute_diff("d", [], _pairs(50), set(), POLICY)
    assert report.churn == 0 and report.verdict == "ok"


def test_policy_comes_from_program_settings() -> None:
    policy = PublishPolicy.of({"publish": {"churn_limit": 0.5, "min_coverage": 0.8}})
    assert policy.churn_limit == 0.5 and policy.min_coverage == 0.8
    assert policy.max_violations == 0
