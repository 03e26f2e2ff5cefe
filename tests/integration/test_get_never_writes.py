"""GET never writes: every GET route of the app (found from its route table), called with
real ids by an admin, a coordinator and a resident, leaves every table exactly as it was
(a checksum of each table's stored rows before and after). The checksum itself is shown
to notice a write."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient

from rsched.api.app import create_app
from rsched.config import Settings
from tests.integration.api_support import World, api_routes, fill, populated, table_checksums

GETS = [r for r in api_routes(create_app(Settings(env="test"))) if r.method == "GET"]
CALLERS = ("admin", "coordinator_a", "resident")
FILTERS = {
    "list_people": {"kind": "resident", "active": "true"},
    "list_absences": {"start": "2026-07-01", "end": "2027-12-31"},
    "list_requests": {"person_id": "r01"},
    "list_versions": {"status": "active"},
    "get_grid": {"start": "2026-07-03", "end": "2026-07-09"},
    "list_assignments": {"start": "2026-07-01", "end": "2026-07-05", "limit": "5"},
}
"""Query parameters some reads also get, so their filtered paths run too."""
NEEDED: dict[str, Callable[[World], dict[str, str]]] = {
    "swap_candidates": lambda world: world.swap_query("A"),
}
"""Query parameters a read cannot do without (sent on every call)."""
ANSWERS = {
    "list_backups": {200, 403},  # admins only: the coordinator is refused
    "get_backup": {200, 403},
    "swap_candidates": {422},  # the world's shifts have all started: none can be swapped
}
"""What admins and coordinators get from the reads that do not answer both 200."""


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[World, TestClient]]:
    url: str = request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url")
    with populated(url, tmp_path_factory.mktemp("reads")) as pair:
        yield pair


def test_every_get_route_leaves_every_table_unchanged(served: tuple[World, TestClient]) -> None:
    world, client = served
    engine = world.factory.kw["bind"]
    token = world.feed_token("A")
    base = {**world.path_values("A"), "token": token}
    versions = [world.programs["A"].active_version, world.programs["A"].draft_version]
    before = table_checksums(engine)

    answered: dict[str, set[int]] = {}
    for route in GETS:
        needed = NEEDED[route.name](world) if route.name in NEEDED else {}
        for version in versions if "{version_id}" in route.path else versions[:1]:
            path = fill(route.path, {**base, "version_id": version})
            for caller in CALLERS:
                for params in ({}, FILTERS.get(route.name, {})):
                    response = client.get(
                        path,
                        params={**needed, **params},
                        headers=world.principals[caller].headers(),
                    )
                    assert response.status_code < 500, f"GET {path}: {response.text[:300]}"
                    if caller != "resident":
                        answered.setdefault(route.name, set()).add(response.status_code)

    assert table_checksums(engine) == before
    assert {r.name for r in GETS} == set(answered)
    failing = {name: codes for name, codes in answered.items() if codes != ANSWERS.get(name, {200})}
    assert failing == {}, "admins and coordinators read every route with real ids"


def test_the_checksum_notices_a_write(served: tuple[World, TestClient]) -> None:
    world, client = served
    engine = world.factory.kw["bind"]
    before = table_checksums(engine)
    response = client.patch(
        f"/programs/{world.programs['A'].id}/requests/{world.programs['A'].request}",
        json={"weight": 7},
        headers=world.principals["coordinator_a"].headers(),
    )
    assert response.status_code == 200
    after = table_checksums(engine)
    assert [name for name in before if before[name] != after[name]] == ["requests"]
