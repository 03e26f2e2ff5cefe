"""Fuzzing: schemathesis generates requests for every operation of the app's own OpenAPI
document (valid and invalid data, a bounded number of examples per operation) and sends
them as an admin, on SQLite and PostgreSQL. No answer may be a server error, and every
answer must match the schema the API publishes for it (problem details included)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis import checks

from rsched.api.app import create_app
from rsched.config import Settings
from tests.integration.api_support import World, populated

MAX_EXAMPLES = 20
"""Per operation; CI stays within about a minute per database."""


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[World, TestClient]]:
    url: str = request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url")
    with populated(url, tmp_path_factory.mktemp("fuzz")) as (world, client):
        REAL.clear()
        REAL.update(world.path_values("A"), token=world.feed_token("A"))
        yield world, client


schema = schemathesis.openapi.from_dict(create_app(Settings(env="test")).openapi())
"""The published document (it depends on no database); each call goes to the app that
serves the populated database (``app=`` below)."""
REAL: dict[str, str] = {}
"""Ids that exist in the served database (set by the ``served`` fixture)."""


@schema.hook
def flatmap_path_parameters(
    _context: schemathesis.HookContext, path_parameters: dict[str, Any] | None
) -> st.SearchStrategy[dict[str, Any] | None]:
    """Generated ids only ever find nothing; mix in real ones (the program alone, or every
    id) so the services behind the 404 are fuzzed too."""
    if not path_parameters:
        return st.just(path_parameters)
    real = {k: REAL[k] for k in path_parameters if k in REAL}
    in_program = {**path_parameters, **{k: v for k, v in real.items() if k == "program_id"}}
    return st.sampled_from([path_parameters, in_program, {**path_parameters, **real}])


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.data_too_large,
    ],
)
def test_no_server_error_and_every_answer_matches_the_schema(
    case: schemathesis.Case[Any], served: tuple[World, TestClient]
) -> None:
    world, client = served
    case.call_and_validate(
        app=client.app,
        headers=world.principals["admin"].headers(),
        checks=[checks.not_a_server_error, checks.response_schema_conformance],
    )
