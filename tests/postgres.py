"""A throwaway PostgreSQL server for the test run.

    python -m tests.postgres COMMAND [ARG...]

finds PostgreSQL's server programs (on PATH, else the newest
/usr/lib/postgresql/*/bin), installs Debian's `postgresql` package when there are
none, starts a cluster in a temporary directory on a free 127.0.0.1 port, runs
COMMAND with `BRIDGE_TEST_DATABASE_URL` pointing at it, then stops the cluster and
removes the directory however COMMAND ended. It exits with COMMAND's status, or
non-zero with the reason when the server cannot be installed or started: a run
meant for PostgreSQL never passes without one.

The cluster is for tests only: trust authentication on 127.0.0.1, fsync off.
Benchmarks (bench/) start one with `cluster(durable=True)`: fsync, synchronous
commit and full page writes stay at PostgreSQL's defaults (on).
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

ENVIRONMENT_VARIABLE = "BRIDGE_TEST_DATABASE_URL"
SUPERUSER = "bridge"
PROGRAMS = ("initdb", "pg_ctl", "postgres")
DEBIAN_BINARIES = "/usr/lib/postgresql/*/bin"
START_SECONDS = 60
# Five processes of the scale-out test with their pools, the tests' own engines,
# and the per-test CREATE/DROP DATABASE connections.
MAX_CONNECTIONS = 300


class Unavailable(RuntimeError):
    """PostgreSQL cannot be found, installed or started; the message says why."""


def _say(message: str) -> None:
    print(f"tests.postgres: {message}", file=sys.stderr, flush=True)  # noqa: T201


def _version(folder: Path) -> tuple[int, ...]:
    # /usr/lib/postgresql/15/bin -> (15,): the newest major version wins.
    return tuple(int(part) for part in re.findall(r"\d+", folder.parent.name))


def find_binaries() -> Path | None:
    """The folder holding initdb, pg_ctl and postgres, or None."""
    on_path = shutil.which("pg_ctl")
    candidates = [Path(on_path).resolve().parent] if on_path else []
    debian = sorted(Path("/").glob(DEBIAN_BINARIES.lstrip("/")), key=_version)
    candidates += reversed(debian)
    for folder in candidates:
        if all((folder / program).is_file() for program in PROGRAMS):
            return folder
    return None


def install() -> Path:
    """Install PostgreSQL from the Debian packages; the folder of its programs."""
    if shutil.which("apt-get") is None:
        raise Unavailable("no PostgreSQL server programs found, and no apt-get")
    if os.geteuid() != 0:
        raise Unavailable(
            "no PostgreSQL server programs found; installing them needs root "
            "(apt-get install postgresql)"
        )
    _say("no PostgreSQL server programs found: installing Debian's postgresql")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (
        ["apt-get", "update"],
        ["apt-get", "install", "-y", "--no-install-recommends", "postgresql"],
    ):
        if subprocess.run(command, env=env, check=False).returncode != 0:
            raise Unavailable(f"`{' '.join(command)}` failed")
    found = find_binaries()
    if found is None:
        raise Unavailable("postgresql was installed but its programs were not found")
    return found


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass(frozen=True)
class _Account:
    """Who runs the server: PostgreSQL refuses to run as root."""

    user: str | None
    uid: int
    gid: int

    @classmethod
    def for_server(cls) -> _Account:
        if os.geteuid() != 0:
            return cls(None, os.geteuid(), os.getegid())
        # The Debian package creates `postgres`; `nobody` exists everywhere else.
        for name in ("postgres", "nobody"):
            try:
                entry = pwd.getpwnam(name)
            except KeyError:
                continue
            return cls(name, entry.pw_uid, entry.pw_gid)
        raise Unavailable("running as root, and no `postgres` or `nobody` account")

    def run(self, command: Sequence[str], log: Path) -> None:
        with log.open("ab") as out:
            try:
                result = subprocess.run(
                    command,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    user=self.uid if self.user else None,
                    group=self.gid if self.user else None,
                    extra_groups=[] if self.user else None,
                    # The server's user may not read the caller's working folder.
                    cwd="/",
                    check=False,
                )
            except OSError as error:  # not there, or not for the server's user
                raise Unavailable(f"cannot run {command[0]}: {error}") from None
        if result.returncode != 0:
            tail = log.read_text(errors="replace")[-2000:]
            raise Unavailable(f"`{' '.join(command)}` failed:\n{tail}")


@contextmanager
def cluster(binaries: Path | None = None, *, durable: bool = False) -> Iterator[str]:
    """A running throwaway cluster; yields a URL of its `postgres` database.

    `durable` keeps fsync and its kin on, as a production server has them.
    """
    binaries = binaries or find_binaries() or install()
    account = _Account.for_server()
    # A path without the caller's home in it, which the server's user can reach.
    root = Path(tempfile.mkdtemp(prefix="bridge-pg-", dir="/tmp"))
    data, log = root / "data", root / "server.log"
    try:
        os.chown(root, account.uid, account.gid)
        log.touch()
        os.chown(log, account.uid, account.gid)
        account.run(
            [
                str(binaries / "initdb"),
                "--pgdata",
                str(data),
                "--username",
                SUPERUSER,
                "--auth",
                "trust",
                "--encoding",
                "UTF8",
                "--no-locale",
                "--no-sync",
            ],
            log,
        )
        _configure(data, root, durable=durable)
        port = _start(binaries, account, data, log)
        try:
            yield f"postgresql://{SUPERUSER}@127.0.0.1:{port}/postgres"
        finally:
            account.run(
                [str(binaries / "pg_ctl"), "stop", "-D", str(data), "-m", "fast"], log
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _configure(data: Path, sockets: Path, *, durable: bool = False) -> None:
    settings = {
        "listen_addresses": "127.0.0.1",
        "unix_socket_directories": str(sockets),
        "max_connections": str(MAX_CONNECTIONS),
        # Not UTC, and not whole hours (POSIX form: no time zone files needed):
        # timestamps that leaned on the server's zone would show it.
        "timezone": "<+1345>-13:45",
    }
    if not durable:
        # A throwaway cluster: durability is not what is under test.
        for name in ("fsync", "synchronous_commit", "full_page_writes"):
            settings[name] = "off"
    with (data / "postgresql.conf").open("a") as conf:
        conf.write("\n# tests/postgres.py\n")
        conf.writelines(f"{name} = '{value}'\n" for name, value in settings.items())


def _start(binaries: Path, account: _Account, data: Path, log: Path) -> int:
    """Start the server on a free port; a port taken meanwhile is tried again."""
    for attempt in range(3):
        port = _free_port()
        command = [str(binaries / "pg_ctl"), "start", "-D", str(data), "-w"]
        command += ["-t", str(START_SECONDS), "-l", str(log), "-o", f"-p {port}"]
        try:
            account.run(command, log)
        except Unavailable:
            if attempt == 2:
                raise
            continue
        return port
    raise AssertionError("unreachable")


def _terminate(signum: int, _frame: FrameType | None) -> None:
    # SIGTERM (CI cancelling the job) unwinds like Ctrl-C: the cluster is stopped.
    raise SystemExit(128 + signum)


def main(argv: Sequence[str]) -> int:
    if not argv:
        _say("usage: python -m tests.postgres COMMAND [ARG...]")
        return 2
    previous = signal.signal(signal.SIGTERM, _terminate)
    started = time.monotonic()
    try:
        with cluster() as url:
            _say(f"PostgreSQL ready at {url} ({time.monotonic() - started:.1f} s)")
            return subprocess.run(
                list(argv), env={**os.environ, ENVIRONMENT_VARIABLE: url}, check=False
            ).returncode
    except Unavailable as error:
        _say(f"PostgreSQL is not available, so the PostgreSQL run FAILS: {error}")
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
