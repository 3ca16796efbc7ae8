"""Benchmark the ingest path: `bridge serve` (SQLite) against a bare starlette endpoint.

Both run in turn, in the same minute, under the same uvicorn settings, driven by wrk
with 32 connections posting one-item notifications for a known connection. Reports
req/s, p50, p99, non-2xx, the bridge's peak RSS and the ratio bridge/bare.

    python -m bench.ingest [--duration 10] [--connections 32] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from sqlalchemy import func, select

from bridge.store import db, migrate
from bridge.store.schema import inbox
from tests.processes import free_port, wait_until_listening
from tests.seeds import seed_fixture_connections

HERE = Path(__file__).parent
UVICORN_FLAGS = ["--loop", "uvloop", "--http", "httptools", "--no-access-log"]


@dataclass
class Run:
    name: str
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    errors: int
    peak_rss_mb: float


def _find(pattern: str, text: str) -> str:
    found = re.search(pattern, text, re.MULTILINE)
    if found is None:
        raise ValueError(f"no {pattern!r} in wrk's output:\n{text}")
    return found.group(1)


def _ms(value: str) -> float:
    number = _find(r"^([\d.]+)(?:us|ms|s)$", value)
    unit = value.removeprefix(number)
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def parse_wrk(name: str, output: str, peak_rss_mb: float) -> Run:
    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    return Run(
        name=name,
        requests_per_second=float(_find(r"Requests/sec:\s+([\d.]+)", output)),
        p50_ms=_ms(_find(r"^\s+50%\s+(\S+)", output)),
        p99_ms=_ms(_find(r"^\s+99%\s+(\S+)", output)),
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        errors=sum(int(n) for n in errors.groups()) if errors else 0,
        peak_rss_mb=peak_rss_mb,
    )


def peak_rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(_find(r"VmHWM:\s+(\d+) kB", status)) / 1024


def drive(
    name: str,
    command: list[str],
    cwd: Path,
    env: dict[str, str],
    port: int,
    args: argparse.Namespace,
) -> Run:
    server = subprocess.Popen(
        command,
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_listening(base, server)
        wrk = [
            "wrk",
            "-t1",
            f"-c{args.connections}",
            f"-d{args.duration}s",
            "--latency",
            "-s",
            str(HERE / "post.lua"),
            base,
        ]
        subprocess.run(
            [*wrk[:4], "-d2s", *wrk[5:]], check=True, capture_output=True
        )  # warm-up
        output = subprocess.run(wrk, check=True, capture_output=True, text=True).stdout
        return parse_wrk(name, output, peak_rss_mb(server.pid))
    finally:
        server.terminate()
        server.wait(timeout=30)
        if server.stderr is not None:
            server.stderr.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("bench: wrk is not installed (apt-get install wrk)")

    workdir = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    database = workdir / "bridge.db"
    engine = db.create(f"sqlite:///{database}")
    migrate.upgrade(engine)
    seed_fixture_connections(engine)

    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{database}",
        "BRIDGE_LOG_LEVEL": "warning",
    }
    repo = str(HERE.parent)
    env["PYTHONPATH"] = repo
    port = free_port()
    bare = drive(
        "bare starlette",
        [
            sys.executable,
            "-m",
            "uvicorn",
            "bench.bare:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
            *UVICORN_FLAGS,
        ],
        Path(repo),
        env,
        port,
        args,
    )
    port = free_port()
    bridge = drive(
        "bridge serve",
        [
            sys.executable,
            "-m",
            "bridge",
            "serve",
            "--no-worker",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        workdir,
        env,
        port,
        args,
    )
    with db.reading(engine) as conn:
        stored = conn.execute(select(func.count()).select_from(inbox)).scalar_one()
    engine.dispose()
    shutil.rmtree(workdir)

    ratio = bridge.requests_per_second / bare.requests_per_second
    header = ("req/s", "p50 ms", "p99 ms", "non-2xx", "errors", "RSS MB")
    print(f"{'':16}" + "".join(f"{title:>9}" for title in header))
    for run in (bare, bridge):
        figures = (
            f"{run.requests_per_second:.0f}",
            f"{run.p50_ms:.2f}",
            f"{run.p99_ms:.2f}",
            str(run.non_2xx),
            str(run.errors),
            f"{run.peak_rss_mb:.1f}",
        )
        print(f"{run.name:16}" + "".join(f"{figure:>9}" for figure in figures))
    print(f"ratio bridge/bare: {ratio:.2f}; items stored by the bridge: {stored}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "bare": asdict(bare),
                    "bridge": asdict(bridge),
                    "ratio": ratio,
                    "stored": stored,
                    "at": time.time(),
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
