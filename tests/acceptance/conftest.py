"""Fixtures of the acceptance tests (the web pages).

- ``world``: a migrated SQLite database in a temp dir with a generated ``small`` program,
  its users (see ``support``), a published CP-SAT schedule and a greedy draft (one per
  module); ``client_for`` makes ``TestClient``s of an app on it (no browser), each with
  its own cookies, so a test starts signed out.
- ``chromium``: the Debian Chromium at ``/usr/bin/chromium`` (``RSCHED_CHROMIUM`` to use
  another). Missing, the browser tests skip locally and FAIL in CI (``CI=true``): a green
  CI run always includes them. No browser is ever downloaded.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from rsched.api.app import create_app
from rsched.config import Settings
from rsched.crypto.fields import KEYRING, install_keys, new_key
from rsched.db.base import make_engine, make_sessionmaker
from rsched.db.migrate import upgrade
from tests.acceptance.support import Site, populate, publish, settings_for, solve_and_save

ARTIFACTS = Path(__file__).parent / "artifacts"
CHROMIUM = os.environ.get("RSCHED_CHROMIUM", "/usr/bin/chromium")


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


@dataclass
class World:
    site: Site
    settings: Settings
    engine: Engine
    factory: sessionmaker[Session]
    data_dir: Path


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    saved = (KEYRING.multi, KEYRING.newest)
    data_dir = tmp_path_factory.mktemp("web")
    url = f"sqlite:///{data_dir / 'rsched.db'}"
    upgrade(url)
    engine = make_engine(url)
    keys = [new_key()]
    install_keys(keys)
    try:
        factory = make_sessionmaker(engine)
        site = populate(factory)
        assert site.draft is not None
        publish(factory, site.program_id, site.draft)  # residents read an active schedule
        site.draft = solve_and_save(factory, site.program_id, algorithm="greedy")
        yield World(site, settings_for(url, data_dir, keys), engine, factory, data_dir)
    finally:
        KEYRING.multi, KEYRING.newest = saved
        engine.dispose()


@pytest.fixture
def client_for(world: World) -> Iterator[Callable[[], TestClient]]:
    """Make clients of one app on the world's database (each with its own cookies)."""
    saved = (KEYRING.multi, KEYRING.newest)
    app = create_app(world.settings, engine=world.engine)
    opened: list[TestClient] = []

    def make() -> TestClient:
        client = TestClient(app, raise_server_exceptions=False, base_url="http://testserver")
        client.__enter__()
        opened.append(client)
        return client

    try:
        yield make
    finally:
        for client in opened:
            client.__exit__(None, None, None)
        KEYRING.multi, KEYRING.newest = saved


@pytest.fixture(scope="session")
def chromium() -> str:
    path = shutil.which(CHROMIUM) or (CHROMIUM if os.access(CHROMIUM, os.X_OK) else None)
    if path is None:
        if in_ci():
            pytest.fail(f"Chromium is required in CI: {CHROMIUM} not found", pytrace=False)
        pytest.skip(f"Chromium not installed ({CHROMIUM}); apt-get install chromium")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        if in_ci():
            pytest.fail("the playwright package is required in CI (pip install -e .[dev])")
        pytest.skip("the playwright package is not installed")
    return path


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
