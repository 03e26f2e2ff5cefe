"""API latency on PostgreSQL: the `large` program's 28-day grid and an ICS feed.

    .venv/bin/python benchmarks/api_latency.py [--requests 200] [--load-seconds 30]
        [--workers 2] [--json out.json]

1. In-process (FastAPI TestClient, no network): median and p99 of N requests each, after
   the heap is settled as ``rsched serve`` settles it (``rsched.api.app.settle_heap``).
2. Under load from a second process on loopback: ``rsched serve --workers N`` (default 2:
   one per core of the reference machine) and ``wrk`` (Debian package; 2 threads, 16
   connections) for ``--load-seconds`` against the ICS feed and the grid; requests/s and
   p99 as wrk reports them. wrk and PostgreSQL share the same cores.

The database is a fresh PostgreSQL database (dropped afterwards; planner statistics as
the publish leaves them: it refreshes those of the tables the feeds and grids read,
whether or not autovacuum runs). The schedule is solved
with CP-SAT and published through the real publishing path. The load average is printed
before and after: the figures are only as quiet as the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text

PG = "postgresql+psycopg://postgres@127.0.0.1:5432/"


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def setup(db: str, data_dir: Path) -> dict[str, Any]:
    from fastapi.testclient import TestClient

    from rsched.api.app import create_app
    from rsched.config import Settings
    from rsched.crypto.fields import install_keys, new_key
    from rsched.db.base import make_engine, make_sessionmaker
    from rsched.db.migrate import upgrade
    from rsched.programfile.generator import generate_program
    from rsched.programfile.loader import parse_program
    from rsched.services import feeds, programs, publishing, schedules, users
    from rsched.services.access import Actor
    from rsched.services.backups import service_for
    from rsched.solver.api import SolveParams, solve

    url = PG + db
    key = new_key()
    settings = Settings(
        env="test",
        data_dir=data_dir,
        database_url=url,
        jwt_secret=secrets.token_urlsafe(48),
        encryption_keys=key,
    )
    upgrade(url)
    install_keys([key])
    app = create_app(settings, engine=make_engine(url))
    factory = make_sessionmaker(make_engine(url))
    admin = Actor(user_id="bench", is_admin=True)
    mapping = generate_program("large", 1)
    with factory() as s, s.begin():
        pid = programs.import_program(s, actor=admin, mapping=mapping)
        uid = users.create_user(
            s, email="bench@example.org", password="bench-Password-123", is_admin=True
        )
    result = solve(parse_program(mapping), SolveParams(time_limit=30))
    assert result.report is not None and result.report.ok
    with factory() as s, s.begin():
        vid = schedules.save_draft(
            s, actor=admin, program_id=pid, assignments=result.assignments, report_summary={}
        )
    owner = Actor(user_id=uid, is_admin=True)
    with factory() as s, s.begin():
        token, _ = publishing.create_publish_token(s, actor=owner, program_id=pid, version_id=vid)
    publishing.publish(
        factory,
        actor=owner,
        program_id=pid,
        version_id=vid,
        token=token,
        backups=service_for(settings),
    )
    person = result.assignments[0].person_id
    with factory() as s, s.begin():
        feed = feeds.create_feed_token(s, actor=owner, program_id=pid, person_id=person)
    return {
        "url": url,
        "key": key,
        "settings": settings,
        "app": app,
        "pid": pid,
        "vid": vid,
        "feed": feed,
        "client": TestClient(app),
        "secret": settings.jwt_secret,
    }


def in_process(ctx: dict[str, Any], n: int) -> list[dict[str, Any]]:
    from rsched.api.app import settle_heap

    client = ctx["client"]
    r = client.post(
        "/auth/login", json={"email": "bench@example.org", "password": "bench-Password-123"}
    )
    r.raise_for_status()
    auth = {"Authorization": f"Bearer {r.json()['access_token']}"}
    targets = {
        "grid (28 days, large)": (f"/programs/{ctx['pid']}/schedules/{ctx['vid']}/grid", auth),
        "ICS feed": (f"/feeds/{ctx['feed']}.ics", {}),
    }
    rows = []
    settle_heap()
    for name, (path, headers) in targets.items():
        client.get(path, headers=headers).raise_for_status()  # warm up
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            client.get(path, headers=headers).raise_for_status()
            times.append((time.perf_counter() - t0) * 1000)
        rows.append(
            {
                "target": name,
                "mode": "in-process",
                "requests": n,
                "median_ms": round(statistics.median(times), 2),
                "p99_ms": round(_quantile(times, 0.99), 2),
            }
        )
    ctx["auth"] = auth
    return rows


def under_load(ctx: dict[str, Any], seconds: int, workers: int) -> list[dict[str, Any]]:
    wrk = shutil.which("wrk")
    if wrk is None:
        return [
            {"target": "load", "mode": "wrk", "error": "wrk not installed (apt-get install wrk)"}
        ]
    port = 18000 + os.getpid() % 1000
    env = dict(
        os.environ,
        RSCHED_ENV="test",
        RSCHED_DATABASE_URL=ctx["url"],
        RSCHED_ENCRYPTION_KEYS=ctx["key"],
        RSCHED_JWT_SECRET=ctx["secret"],
        RSCHED_DATA_DIR=str(ctx["settings"].data_dir),
    )
    server_log = (ctx["settings"].data_dir / "server.log").open("w")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rsched.cli.main",
            "serve",
            "--port",
            str(port),
            "--no-worker",
            "--workers",
            str(workers),
            "--log-level",
            "warning",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=server_log,  # a file: a pipe nobody reads would stall the server once full
    )
    rows = []
    try:
        import httpx

        for _ in range(100):
            try:
                httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        targets = {
            "ICS feed": (f"/feeds/{ctx['feed']}.ics", []),
            "grid (28 days, large)": (
                f"/programs/{ctx['pid']}/schedules/{ctx['vid']}/grid",
                ["-H", f"Authorization: {ctx['auth']['Authorization']}"],
            ),
        }
        for name, (path, extra) in targets.items():
            out = subprocess.run(
                [
                    wrk,
                    "-t2",
                    "-c16",
                    f"-d{seconds}s",
                    "--latency",
                    *extra,
                    f"http://127.0.0.1:{port}{path}",
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            rps = re.search(r"Requests/sec:\s+([\d.]+)", out.stdout)
            p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out.stdout)
            non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out.stdout)
            scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}
            rows.append(
                {
                    "target": name,
                    "mode": f"wrk {seconds}s, 16 connections, {workers} API processes",
                    "requests_per_s": float(rps.group(1)) if rps else None,
                    "p99_ms": float(p99.group(1)) * scale[p99.group(2)] if p99 else None,
                    "non_2xx": int(non2xx.group(1)) if non2xx else 0,
                }
            )
    finally:
        server.terminate()
        server.wait(10)
        server_log.close()
        problems = [
            line
            for line in Path(server_log.name).read_text().splitlines()
            if '"level": "error"' in line or "Traceback" in line
        ]
        if problems:
            rows.append({"target": "server log", "mode": "errors", "error": problems[0][:200]})
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--load-seconds", type=int, default=30)
    ap.add_argument("--workers", type=int, default=2, help="API processes under load")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    load_before = os.getloadavg()
    db = f"rsched_bench_{os.getpid()}"
    admin = create_engine(PG + "postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{db}"'))
    rows: list[dict[str, Any]] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            ctx = setup(db, Path(tmp))
            rows += in_process(ctx, args.requests)
            rows += under_load(ctx, args.load_seconds, args.workers)
            ctx["client"].close()
    finally:
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))
    load = {
        "load_average_before": load_before[0],
        "load_average_after": os.getloadavg()[0],
    }
    print(table(rows))
    print(
        f"load average (1 min): {load['load_average_before']:.2f} before, "
        f"{load['load_average_after']:.2f} after, on {os.cpu_count()} cores"
    )
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, **load}, indent=2) + "\n")
    return 0


def table(rows: list[dict[str, Any]]) -> str:
    head = ("target", "mode", "median ms", "p99 ms", "req/s", "non-2xx")
    lines = [
        (
            r["target"],
            r["mode"],
            _cell(r.get("median_ms")),
            _cell(r.get("p99_ms")),
            _cell(r.get("requests_per_s")),
            _cell(r.get("non_2xx")) if "requests_per_s" in r else r.get("error", ""),
        )
        for r in rows
    ]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *lines, strict=True)]
    return "\n".join(
        "  ".join(str(x).ljust(w) for x, w in zip(line, widths, strict=True))
        for line in (head, tuple("-" * w for w in widths), *lines)
    )


def _cell(value: Any) -> str:
    return "" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


if __name__ == "__main__":
    sys.exit(main())
