"""Fixtures of the acceptance tests (the web pages).

- ``world``: a migrated SQLite database in a temp dir with a generated ``small`` program,
  its users (see ``support``), a published CP-SAT schedule, a greedy draft and a draft
  that breaks rules on purpose (one per module); ``client_for`` makes ``TestClient``s of
  an app on it (no browser), each with its own cookies, so a test starts signed out.
- ``live_server``: ``rsched serve`` in a subprocess (uvicorn on a free port of 127.0.0.1,
  with the worker it runs in-process on the embedded default) on a fresh SQLite database
  in a temp dir holding the program, its users and a draft that breaks rules; its log goes to
  ``artifacts/server.log``.
- ``browser``: Playwright driving that Chromium, headless.
- ``chromium``: the Debian Chromium at ``/usr/bin/chromium`` (``RSCHED_CHROMIUM`` to use
  another). Missing, the browser tests skip locally and FAIL in CI (``CI=true``): a green
  CI run always includes them. No browser is ever downloaded.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from rsched.api.app import create_app
from rsched.config import Settings
from rsched.crypto.fields import KEYRING, install_keys, new_key
from rsched.db.base import make_engine, make_sessionmaker
from rsched.db.migrate import upgrade
from tests.acceptance.support import (
    Site,
    populate,
    publish,
    save_broken_draft,
    settings_for,
    solve_and_save,
)

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
        site.broken = save_broken_draft(factory, site.program_id, site.resident)
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


# ------------------------------------------------------------------- a real server


@dataclass
class LiveServer:
    url: str
    site: Site
    data_dir: Path
    log: Path


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def live_server(
    chromium: str, tmp_path_factory: pytest.TempPathFactory, artifacts: Path
) -> Iterator[LiveServer]:
    """``rsched serve`` on 127.0.0.1 (a free port) with its in-process worker, on a fresh
    SQLite database (the embedded default in a temp dir) holding the ``small`` program and
    its users (no schedule yet)."""
    saved = (KEYRING.multi, KEYRING.newest)
    data_dir = tmp_path_factory.mktemp("live")
    url = f"sqlite:///{data_dir / 'rsched.db'}"  # where the embedded default keeps it
    upgrade(url)
    keys = [new_key()]
    install_keys(keys)
    engine = make_engine(url)
    try:
        factory = make_sessionmaker(engine)
        site = populate(factory, solve_draft=False)
        site.broken = save_broken_draft(factory, site.program_id, site.resident)
    finally:
        engine.dispose()
        KEYRING.multi, KEYRING.newest = saved
    port = _free_port()
    env = {
        **os.environ,
        "RSCHED_ENV": "test",
        "RSCHED_DATA_DIR": str(data_dir),
        "RSCHED_JWT_SECRET": secrets.token_urlsafe(48),
        "RSCHED_ENCRYPTION_KEYS": ",".join(keys),
        "PYTHONUNBUFFERED": "1",
    }
    for name in ("RSCHED_DATABASE_URL", "RSCHED_REDIS_URL"):  # the embedded default
        env.pop(name, None)
    log = artifacts / "server.log"
    serve = "import sys; from rsched.cli.main import main; sys.exit(main())"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-c", serve, "serve", "--host", "127.0.0.1", "--port", str(port)],
            cwd=data_dir,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            _wait_healthy(base, process, log)
            yield LiveServer(url=base, site=site, data_dir=data_dir, log=log)
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


def _wait_healthy(base: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the server exited ({process.returncode}):\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    pytest.fail(f"the server did not become healthy:\n{log.read_text()[-3000:]}")


CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def browser(chromium: str) -> Iterator[Any]:
    """Headless Debian Chromium driven by Playwright (never a downloaded browser)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        instance = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=True)
        try:
            yield instance
        finally:
            instance.close()
