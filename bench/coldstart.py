"""Benchmark cold start: process start -> first validation handshake answered.

Graph gives the notification URL 10 s to echo a validation token, and a PaaS that
starts (or wakes) a process on the first request spends that budget on start-up.
Each run spawns `python -m bridge serve` on a free 127.0.0.1 port with no
configuration but its own SQLite database, and posts
`POST /graph/notifications?validationToken=...` every 5 ms until the token comes
back; the time is from just before the spawn to that answer. Two kinds of run:

- fresh: a new database, so the schema is created during the start (a first start);
- migrated: a database `bridge migrate` brought up to date beforehand (untimed), as
  on a PaaS, where the release phase migrates and every start only checks.

Baselines in the same run, interleaved with the bridge's runs so that noise hits
them alike: `python -c pass` (the interpreter alone) and `python -c "import
bridge.cli, bridge.app"` (the modules `bridge serve` loads; start to exit).

    python -m bench.coldstart [--runs 10] [--no-worker] [--json out.json]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

VALIDATION = "Validation: Testing client application reachability for subscription"
TARGET_SECONDS = 1.5
GIVE_UP_SECONDS = 30.0
POLL_SECONDS = 0.005
# Variables that would configure the spawned bridge from this machine's shell.
_PREFIXES = ("BRIDGE_", "GRAPH_", "NEXUDUS_")
_NAMES = ("DATABASE_URL", "PORT", "PROMETHEUS_MULTIPROC_DIR")


def clean_env(workdir: Path | None = None) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(_PREFIXES) and key not in _NAMES
    }
    if workdir is not None:
        env["DATABASE_URL"] = f"sqlite:///{workdir / 'bridge.db'}"
    return env


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def handshake(port: int) -> bool:
    """One validation request; True once the token came back."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request(
            "POST",
            f"/graph/notifications?validationToken={quote(VALIDATION)}",
            body=b"",
            headers={"Content-Type": "text/plain"},
        )
        answer = conn.getresponse()
        return answer.status == 200 and answer.read().decode() == VALIDATION
    except OSError:
        return False
    finally:
        conn.close()


def serve_run(workdir: Path, extra: list[str], *, migrated: bool) -> float:
    env = clean_env(workdir)
    if migrated:
        subprocess.run(
            [sys.executable, "-m", "bridge", "migrate"],
            cwd=workdir,
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
    port = free_port()
    command = [sys.executable, "-m", "bridge", "serve", "--host", "127.0.0.1"]
    started = time.perf_counter()
    process = subprocess.Popen(
        [*command, "--port", str(port), *extra],
        cwd=workdir,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while not handshake(port):
            if process.poll() is not None:
                raise RuntimeError(f"bridge serve exited with {process.returncode}")
            if time.perf_counter() - started > GIVE_UP_SECONDS:
                raise TimeoutError("no handshake answer")
            time.sleep(POLL_SECONDS)
        return time.perf_counter() - started
    finally:
        process.terminate()
        process.wait(timeout=30)


def python_run(workdir: Path, code: str) -> float:
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", code], check=True, env=clean_env(), cwd=workdir
    )
    return time.perf_counter() - started


def summary(times: list[float]) -> dict[str, float]:
    return {
        "min": min(times),
        "median": statistics.median(times),
        "max": max(times),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument(
        "--no-worker", action="store_true", help="time `bridge serve --no-worker`"
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    extra = ["--no-worker"] if args.no_worker else []
    serve = "bridge serve" + (" --no-worker" if args.no_worker else "")
    cases: dict[str, Callable[[Path], float]] = {
        "python -c pass": lambda work: python_run(work, "pass"),
        "import bridge.cli, bridge.app": lambda work: python_run(
            work, "import bridge.cli, bridge.app"
        ),
        f"{serve}, fresh db -> handshake": lambda work: serve_run(
            work, extra, migrated=False
        ),
        f"{serve}, migrated db -> handshake": lambda work: serve_run(
            work, extra, migrated=True
        ),
    }
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.runs):
        for name, run in cases.items():
            with tempfile.TemporaryDirectory(prefix="coldstart-") as work:
                times[name].append(run(Path(work)))
    figures = {name: summary(values) for name, values in times.items()}
    width = max(len(name) for name in figures)
    header = f"{'':<{width}}  {'min s':>6}  {'median s':>8}  {'max s':>6}"
    print(f"{header}  ({args.runs} runs each)")
    for name, row in figures.items():
        low, mid, high = row["min"], row["median"], row["max"]
        print(f"{name:<{width}}  {low:6.3f}  {mid:8.3f}  {high:6.3f}")
    slowest = max(row["max"] for name, row in figures.items() if "handshake" in name)
    verdict = "met" if slowest <= TARGET_SECONDS else "NOT met"
    print(f"target: every handshake within {TARGET_SECONDS} s of the start: {verdict}")
    if args.json:
        report = {"runs": args.runs, "no_worker": args.no_worker, "figures": figures}
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
