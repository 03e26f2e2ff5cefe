"""``rsched serve --workers N``: N API processes on one port (PostgreSQL only), whose
``/metrics`` add up every process's counters through a shared directory."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from rsched.crypto.fields import new_key

SERVE = "import sys; from rsched.cli.main import main; sys.exit(main())"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(**extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "RSCHED_ENV": "test",
        "RSCHED_JWT_SECRET": secrets.token_urlsafe(48),
        "RSCHED_ENCRYPTION_KEYS": new_key(),
        **extra,
    }
    for name in ("RSCHED_REDIS_URL", "PROMETHEUS_MULTIPROC_DIR"):
        env.pop(name, None)
    return env


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def test_several_processes_serve_one_port_and_metrics_add_up(
    pg_url: str, tmp_path: Path
) -> None:
    port = _free_port()
    env = _env(RSCHED_DATABASE_URL=pg_url, RSCHED_DATA_DIR=str(tmp_path))
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        server = subprocess.Popen(
            [sys.executable, "-c", SERVE, "serve", "--port", str(port), "--workers", "2"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while len(_children(server.pid)) < 2 or not _healthy(base):
            assert server.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.3)
        for _ in range(20):  # new connections: the kernel spreads them over both
            assert _healthy(base)
        with urllib.request.urlopen(f"{base}/metrics", timeout=5) as answer:
            text = answer.read().decode()
        assert "scheduler_valid_publish_total 0.0" in text
        assert "process_cpu_seconds_total" not in text  # per-process: left out here
    finally:
        server.terminate()
        server.wait(30)
    assert server.returncode == 0, log.read_text()[-3000:]
    assert "Traceback" not in log.read_text()


def _healthy(base: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base}/health", timeout=2) as answer:
            return answer.status == 200
    except OSError:
        return False


def test_counters_of_every_process_are_summed_and_gauges_maxed(tmp_path: Path) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    for leader in (0, 1, 0):  # three processes, one of them the leader
        record = (
            "from rsched import metrics; metrics.VALID_PUBLISH.inc(); "
            f"metrics.ROLLBACK.labels(reason='gate').inc(2); metrics.set_leader({bool(leader)})"
        )
        subprocess.run([sys.executable, "-c", record], env=env, check=True, timeout=60)
    show = (
        "from prometheus_client import generate_latest; from rsched import metrics; "
        "print(generate_latest(metrics.exposition_registry()).decode())"
    )
    shown = subprocess.run(
        [sys.executable, "-c", show], env=env, check=True, timeout=60, capture_output=True
    )
    text = shown.stdout.decode()
    assert "scheduler_valid_publish_total 3.0" in text
    assert 'scheduler_rollback_total{reason="gate"} 6.0' in text
    assert "scheduler_leader 1.0" in text


def test_more_than_one_process_is_refused_on_the_embedded_default(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", SERVE, "serve", "--workers", "2"],
        env=_env(RSCHED_DATA_DIR=str(tmp_path)) | {"RSCHED_DATABASE_URL": ""},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "--workers" in done.stderr and "RSCHED_DATABASE_URL" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "rsched.db").exists()  # nothing was created


@pytest.mark.parametrize("bad", ["0", "65", "two"])
def test_a_bad_worker_count_is_named(bad: str, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", SERVE, "serve", "--workers", bad],
        env=_env(RSCHED_DATA_DIR=str(tmp_path)),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2 and "--workers" in done.stderr
