"""Benchmark the ingest path: `bridge serve` against a bare starlette endpoint.

Both run in turn, in the same minute, under the same uvicorn settings, driven by wrk
with 32 connections posting one-item notifications for a known connection. Reports
req/s, p50, p99, non-2xx, the bridge's peak RSS (its ingest process's included) and the
ratio bridge/bare, and checks that every acknowledged item was stored.

`--database postgres` runs the bridge on a throwaway PostgreSQL cluster with fsync on
(bench/database.py) instead of a SQLite file. `--web N` starts N processes of each
(bare and bridge; the bridge's on one database), each driven by a wrk of its own at
the same time: req/s are summed, p50 and p99 are the worst process's.

    python -m bench.ingest [--database sqlite|postgres] [--web 1] [--duration 10]
                           [--connections 32] [--json out.json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from sqlalchemy import func, select

from bench import database
from bridge.store import db
from bridge.store.schema import inbox
from tests.processes import free_port, wait_until_listening
from tests.seeds import seed_fixture_connections

HERE = Path(__file__).parent
UVICORN_FLAGS = ["--loop", "uvloop", "--http", "httptools", "--no-access-log"]
WARM_UP_SECONDS = 2
# Each wrk run's etags carry a number of their own (bench/post.lua).
_TAGS = itertools.count(1)


@dataclass
class Run:
    name: str
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    errors: int
    peak_rss_mb: float
    # Answered with 2xx, the warm-up included: what the server acknowledged.
    acknowledged: int = 0
    # One run per process when there are several; the figures above combine them.
    processes: list[Run] = field(default_factory=list)


def _find(pattern: str, text: str) -> str:
    found = re.search(pattern, text, re.MULTILINE)
    if found is None:
        raise ValueError(f"no {pattern!r} in wrk's output:\n{text}")
    return found.group(1)


def _ms(value: str) -> float:
    number = _find(r"^([\d.]+)(?:us|ms|s)$", value)
    unit = value.removeprefix(number)
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def _non_2xx(output: str) -> int:
    found = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    return int(found.group(1)) if found else 0


def acknowledged(output: str) -> int:
    """Requests wrk saw answered with 2xx (each bench request gets a 202 or worse)."""
    return int(_find(r"(\d+) requests in ", output)) - _non_2xx(output)


def parse_wrk(name: str, output: str, peak_rss_mb: float) -> Run:
    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    return Run(
        name=name,
        requests_per_second=float(_find(r"Requests/sec:\s+([\d.]+)", output)),
        p50_ms=_ms(_find(r"^\s+50%\s+(\S+)", output)),
        p99_ms=_ms(_find(r"^\s+99%\s+(\S+)", output)),
        non_2xx=_non_2xx(output),
        errors=sum(int(n) for n in errors.groups()) if errors else 0,
        peak_rss_mb=peak_rss_mb,
        acknowledged=acknowledged(output),
    )


def combine(name: str, runs: list[Run]) -> Run:
    """Processes driven at the same time: throughput and counts add up; latency and
    memory are the worst process's (wrk's histograms cannot be merged)."""
    if len(runs) == 1:
        return Run(**{**asdict(runs[0]), "name": name, "processes": []})
    return Run(
        name=name,
        requests_per_second=sum(run.requests_per_second for run in runs),
        p50_ms=max(run.p50_ms for run in runs),
        p99_ms=max(run.p99_ms for run in runs),
        non_2xx=sum(run.non_2xx for run in runs),
        errors=sum(run.errors for run in runs),
        peak_rss_mb=max(run.peak_rss_mb for run in runs),
        acknowledged=sum(run.acknowledged for run in runs),
        processes=runs,
    )


def peak_rss_mb(pid: int) -> float:
    """The peak RSS of `pid` and of its children (the bridge's ingest process),
    added up: an upper bound of what they held at once."""
    status = Path(f"/proc/{pid}/status").read_text()
    own = int(_find(r"VmHWM:\s+(\d+) kB", status)) / 1024
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return own + sum(peak_rss_mb(int(child)) for child in children)


def wrk(base: str, connections: int, seconds: int) -> subprocess.Popen[str]:
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency"]
    command += ["-s", str(HERE / "post.lua"), base, "--", str(next(_TAGS))]
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def finish(process: subprocess.Popen[str]) -> str:
    output, errors = process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"wrk exited with {process.returncode}: {errors}")
    return output


def drive(
    name: str,
    commands: list[tuple[list[str], int]],
    cwd: Path,
    env: dict[str, str],
    args: argparse.Namespace,
) -> Run:
    """Start every (command, port), then drive each with a wrk of its own, all at
    once: a warm-up, then the measured run."""
    servers = [
        subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for command, _port in commands
    ]
    bases = [f"http://127.0.0.1:{port}" for _command, port in commands]
    try:
        for base, server in zip(bases, servers, strict=True):
            wait_until_listening(base, server)
        warm_up = [wrk(b, args.connections, WARM_UP_SECONDS) for b in bases]
        warmed = [acknowledged(finish(process)) for process in warm_up]
        measured = [wrk(b, args.connections, args.duration) for b in bases]
        outputs = [finish(process) for process in measured]
        runs = []
        for n, (output, server) in enumerate(zip(outputs, servers, strict=True)):
            run = parse_wrk(f"{name} {n + 1}", output, peak_rss_mb(server.pid))
            run.acknowledged += warmed[n]
            runs.append(run)
        return combine(name, runs)
    finally:
        for server in servers:
            server.terminate()
        for server in servers:
            server.wait(timeout=30)
            if server.stderr is not None:
                server.stderr.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", choices=database.CHOICES, default="sqlite")
    parser.add_argument(
        "--web", type=int, default=1, help="processes of each, one wrk per process"
    )
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument(
        "--connections", type=int, default=32, help="wrk connections per process"
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    if args.web < 1:
        parser.error("--web must be at least 1")
    if shutil.which("wrk") is None:
        sys.exit("bench: wrk is not installed (apt-get install wrk)")

    workdir = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    try:
        with database.fresh(args.database, workdir) as fresh:
            seed_fixture_connections(fresh.engine)
            bare, bridge = measure(args, fresh.url, workdir)
            with db.reading(fresh.engine) as conn:
                query = select(func.count()).select_from(inbox)
                stored = int(conn.execute(query).scalar_one())
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    ratio = bridge.requests_per_second / bare.requests_per_second
    header = ("req/s", "p50 ms", "p99 ms", "non-2xx", "errors", "RSS MB")
    print(f"{'':18}" + "".join(f"{title:>9}" for title in header))
    runs = [bare, *bare.processes, bridge, *bridge.processes]
    for run in runs:
        figures = (
            f"{run.requests_per_second:.0f}",
            f"{run.p50_ms:.2f}",
            f"{run.p99_ms:.2f}",
            str(run.non_2xx),
            str(run.errors),
            f"{run.peak_rss_mb:.1f}",
        )
        print(f"{run.name:18}" + "".join(f"{figure:>9}" for figure in figures))
    # Requests still in flight when wrk stops may be stored but not counted by it.
    lost = max(0, bridge.acknowledged - stored)
    print(
        f"database {args.database}, {args.web} process(es) of each; "
        f"ratio bridge/bare: {ratio:.2f}; acknowledged (2xx, warm-up included) "
        f"{bridge.acknowledged}, items stored {stored}, lost {lost}"
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "database": args.database,
                    "web": args.web,
                    "bare": asdict(bare),
                    "bridge": asdict(bridge),
                    "ratio": ratio,
                    "stored": stored,
                    "lost": lost,
                    "at": time.time(),
                },
                indent=2,
            )
        )
    return 1 if lost else 0


def measure(args: argparse.Namespace, url: str, workdir: Path) -> tuple[Run, Run]:
    """The bare endpoint, then the bridge on `url`, `--web` processes of each."""
    repo = HERE.parent
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "BRIDGE_LOG_LEVEL": "warning",
        "PYTHONPATH": str(repo),
    }
    bare: list[tuple[list[str], int]] = []
    for port in (free_port() for _ in range(args.web)):
        command = [sys.executable, "-m", "uvicorn", "bench.bare:app"]
        command += ["--host", "127.0.0.1", "--port", str(port)]
        bare.append(([*command, "--log-level", "warning", *UVICORN_FLAGS], port))
    bridge: list[tuple[list[str], int]] = []
    for port in (free_port() for _ in range(args.web)):
        command = [sys.executable, "-m", "bridge", "serve", "--no-worker"]
        bridge.append(([*command, "--host", "127.0.0.1", "--port", str(port)], port))
    return (
        drive("bare starlette", bare, repo, env, args),
        drive("bridge serve", bridge, workdir, env, args),
    )


if __name__ == "__main__":
    sys.exit(main())
