"""Metrics across processes: `bridge worker`'s own endpoint, and several processes
on one machine adding up through PROMETHEUS_MULTIPROC_DIR."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.metrics_samples import value
from tests.processes import free_port, run_bridge

COUNT = (
    "from bridge import metrics\n"
    "metrics.ACTIONS.labels('done').inc()\n"
    "metrics.ACK_SECONDS.observe(0.002)\n"
)
SHOW = (
    "from prometheus_client import generate_latest\n"
    "from bridge import metrics\n"
    "print(generate_latest(metrics.exposition()).decode())\n"
)


def python(code: str, env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return done.stdout


def test_processes_sharing_a_multiprocess_directory_add_up(tmp_path: Path) -> None:
    shared = tmp_path / "prometheus"
    shared.mkdir()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(shared)}
    python(COUNT, env)
    python(COUNT, env)

    together = python(SHOW, env)
    alone = python(SHOW, {**os.environ, "PROMETHEUS_MULTIPROC_DIR": ""})

    assert value(together, "bridge_worker_actions_total", result="done") == 2
    assert value(together, "bridge_notification_ack_seconds_count") == 2
    assert value(alone, "bridge_worker_actions_total", result="done") is None


def test_the_worker_serves_metrics_on_its_own_port(tmp_path: Path) -> None:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "bridge", "worker"],
        cwd=tmp_path,
        env={**os.environ, "BRIDGE_METRICS_PORT": str(port)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        text = ""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not text:
            try:
                text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
            except httpx.TransportError:
                time.sleep(0.1)
        assert value(text, "bridge_database_up") == 1
        assert value(text, "bridge_inbox_items", state="pending") == 0
        assert value(text, "bridge_connections", state="active") == 0
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=25) == 0


def test_a_taken_metrics_port_is_one_clear_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))  # noqa: S104 (the worker binds all interfaces)
        taken.listen()
        port = taken.getsockname()[1]
        result = run_bridge(
            "worker", cwd=tmp_path, env={"BRIDGE_METRICS_PORT": str(port)}
        )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"bridge: cannot serve metrics on BRIDGE_METRICS_PORT={port}: "
        "Address already in use"
    ]
