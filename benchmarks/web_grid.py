"""Server time of the schedule grid page: the ``large`` program's 28-day grid.

    .venv/bin/python benchmarks/web_grid.py                    # large, 20 requests
    .venv/bin/python benchmarks/web_grid.py --size medium --repeat 50 --json out.json

The program is generated, imported into a fresh SQLite database (a temp dir) and solved
once with the greedy solver; that schedule is stored as a draft. A coordinator signs in
through the login page and asks for the grid page (every person × 28 days, with the
breaches of a fresh validation) ``--repeat`` times after one warm-up request, then the
same as a resident (the active schedule, their own breaches). The server time is the
page's ``Server-Timing: app;dur=…`` header (form reading, session, services, validation
and rendering, measured inside the app); the wall time adds the in-process HTTP client.
Prints the median and p90 of each and the page size; the target is a median under 1 s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TARGET_MS = 1000.0


def _load() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def setup(size: str, seed: int, folder: Path) -> tuple[Any, str, str, dict[str, str]]:
    """A database with the program, a published greedy schedule and two users; the
    settings, program id, version id and the users' emails."""
    from rsched.config import Settings
    from rsched.crypto.fields import install_keys, new_key
    from rsched.db.base import make_engine, make_sessionmaker, transaction
    from rsched.db.mapping import load_program_data
    from rsched.domain import PersonKind
    from rsched.programfile.generator import generate_program
    from rsched.services import programs, publishing, schedules
    from rsched.services.access import Actor, Role
    from rsched.services.users import add_membership, create_user
    from rsched.solver.api import SolveParams, solve

    url = f"sqlite:///{folder / 'rsched.db'}"
    from rsched.db.migrate import upgrade

    upgrade(url)
    keys = [new_key()]
    install_keys(keys)
    engine = make_engine(url)
    factory = make_sessionmaker(engine)
    admin = Actor(user_id="benchmark", is_admin=True)
    with transaction(factory) as s:
        pid = programs.import_program(s, actor=admin, mapping=generate_program(size, seed))
    with factory() as s:
        data = load_program_data(s, pid)
    result = solve(data, SolveParams(algorithm="greedy", time_limit=60))
    with transaction(factory) as s:
        version = schedules.save_draft(
            s,
            actor=admin,
            program_id=pid,
            assignments=result.assignments,
            report_summary=result.summary(),
        )
        token, _ = publishing.create_publish_token(
            s, actor=admin, program_id=pid, version_id=version
        )

    class NoBackup:
        def ensure_recent(self, *, program_id: str, reason: str) -> str:
            return "benchmark"

    publishing.publish(
        factory, actor=admin, program_id=pid, version_id=version, token=token, backups=NoBackup()
    )
    password = secrets.token_urlsafe(12) + "-A1"
    emails = {"coordinator": "coordinator@example.org", "resident": "resident@example.org"}
    with transaction(factory) as s:
        resident = next(p.id for p in data.people if p.kind is PersonKind.RESIDENT)
        uid = create_user(s, email=emails["coordinator"], password=password)
        add_membership(s, user_id=uid, program_id=pid, role=Role.COORDINATOR)
        uid = create_user(s, email=emails["resident"], password=password)
        add_membership(s, user_id=uid, program_id=pid, role=Role.RESIDENT, person_id=resident)
    engine.dispose()
    settings = Settings(
        env="test",
        data_dir=folder,
        database_url=url,
        jwt_secret=secrets.token_urlsafe(48),
        encryption_keys=",".join(keys),
    )
    return settings, pid, version, {**emails, "password": password}


def measure(client: Any, path: str, repeat: int) -> dict[str, Any]:
    client.get(path)  # warm-up: templates compiled, caches filled
    server: list[float] = []
    wall: list[float] = []
    size = 0
    for _ in range(repeat):
        started = time.perf_counter()
        page = client.get(path)
        wall.append((time.perf_counter() - started) * 1000)
        if page.status_code != 200:
            raise SystemExit(f"GET {path}: {page.status_code}\n{page.text[:500]}")
        found = re.search(r"app;dur=([\d.]+)", page.headers.get("server-timing", ""))
        if found is None:
            raise SystemExit("no Server-Timing header on the page")
        server.append(float(found.group(1)))
        size = len(page.content)
    return {
        "server_ms_median": round(statistics.median(server), 1),
        "server_ms_p90": round(_quantile(server, 0.9), 1),
        "server_ms_min": round(min(server), 1),
        "wall_ms_median": round(statistics.median(wall), 1),
        "html_kib": round(size / 1024, 1),
        "rows": page.text.count('<th scope="row" class="person">'),
        "days": page.text.count("<abbr title="),
    }


def sign_in(client: Any, email: str, password: str) -> None:
    login = client.get("/login").text
    token = re.search(r'name="csrf" value="([^"]+)"', login)
    assert token is not None
    answer = client.post(
        "/login",
        data={"csrf": token.group(1), "email": email, "password": password, "next": "/app"},
        follow_redirects=False,
    )
    if answer.status_code != 303:
        raise SystemExit(f"sign-in failed: {answer.status_code}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="large", choices=["small", "medium", "large"])
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")

    from fastapi.testclient import TestClient

    from rsched.api.app import create_app

    with tempfile.TemporaryDirectory(prefix="rsched-web-bench-") as tmp:
        started = time.perf_counter()
        settings, pid, version, users = setup(args.size, args.seed, Path(tmp))
        prepared = time.perf_counter() - started
        rows: list[dict[str, Any]] = []
        app = create_app(settings)
        for who, query in (("coordinator", f"?version={version}"), ("resident", "")):
            with TestClient(app) as client:
                sign_in(client, users[who], users["password"])
                path = f"/app/p/{pid}/grid{query}"
                rows.append(
                    {"size": args.size, "viewer": who, **measure(client, path, args.repeat)}
                )

    print(
        f"grid page of the {args.size} program "
        f"({args.repeat} requests each; setup {prepared:.1f} s)"
    )
    header = ("viewer", "rows", "days", "server median ms", "p90", "min", "wall median", "KiB")
    print(" | ".join(header))
    for r in rows:
        print(
            " | ".join(
                str(x)
                for x in (
                    r["viewer"],
                    r["rows"],
                    r["days"],
                    r["server_ms_median"],
                    r["server_ms_p90"],
                    r["server_ms_min"],
                    r["wall_ms_median"],
                    r["html_kib"],
                )
            )
        )
    ok = all(r["server_ms_median"] < TARGET_MS for r in rows)
    print(f"target: median server time < {TARGET_MS:.0f} ms: {'met' if ok else 'NOT met'}")
    if args.json:
        doc = {
            "benchmark": "web_grid",
            "rows": rows,
            "target_ms": TARGET_MS,
            "met": ok,
            "machine": {
                "python": sys.version.split()[0],
                "platform": platform.platform(),
                "cpus": os.cpu_count(),
                "load": _load(),
            },
        }
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
