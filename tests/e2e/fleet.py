"""Several `bridge` processes on one database, as a deployment runs them (Procfile:
`bridge serve --no-worker` behind a load balancer, `bridge worker` beside them).

They share a harness's database, fakes and settings (`Bridge.env`). Each process has
a name and a log file of that name in the harness's folder; a process started again
under the same name appends to it. Everything that waits, waits asynchronously, so
the fakes in the test's event loop keep answering.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import time
from typing import Any

import httpx
from sqlalchemy.engine import make_url

from tests.e2e.harness import Bridge, eventually

START_SECONDS = 30.0
STOP_SECONDS = 30.0


def paas_url(url: str) -> str:
    """A PostgreSQL URL as PaaS hosts hand it out (`postgres://`)."""
    return (
        make_url(url).set(drivername="postgres").render_as_string(hide_password=False)
    )


class Fleet:
    """`bridge` processes sharing the harness's database, fakes and settings."""

    def __init__(self, bridge: Bridge) -> None:
        self.bridge = bridge
        self.processes: dict[str, asyncio.subprocess.Process] = {}
        self.webs: list[str] = []  # the URLs of the web processes started

    def log(self, name: str) -> str:
        return (self.bridge.workdir / f"{name}.log").read_text(errors="replace")

    def logs(self) -> str:
        return "\n".join(
            f"--- {name}\n{self.log(name)[-3000:]}" for name in self.processes
        )

    def logged(self, name: str, event: str) -> list[dict[str, Any]]:
        """The JSON log entries of one process for `event`."""
        entries = []
        for line in self.log(name).splitlines():
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if isinstance(entry, dict) and entry.get("event") == event:
                    entries.append(entry)
        return entries

    async def _spawn(
        self, name: str, *args: str, **env: str
    ) -> asyncio.subprocess.Process:
        running = self.processes.get(name)
        assert running is None or running.returncode is not None, f"{name} runs"
        with (self.bridge.workdir / f"{name}.log").open("ab") as out:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bridge",
                *args,
                cwd=self.bridge.workdir,
                env={**self.bridge.env, **env},
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
            )
        self.processes[name] = process
        return process

    async def web(
        self, name: str, port: int, *, worker: bool = False, **env: str
    ) -> str:
        """`bridge serve --no-worker` (or with its embedded worker) on `port`,
        once `/readyz` answers 200; its URL."""
        url = f"http://127.0.0.1:{port}"
        args = ["serve", "--host", "127.0.0.1", "--port", str(port)]
        process = await self._spawn(
            name, *args, *([] if worker else ["--no-worker"]), **env
        )

        async def ready() -> bool:
            assert process.returncode is None, self.log(name)
            with contextlib.suppress(httpx.TransportError):
                answer = await self.bridge.http.get(f"{url}/readyz", timeout=1.0)
                return answer.status_code == 200
            return False

        await eventually(ready, START_SECONDS, f"{name} ready")
        if url not in self.webs:
            self.webs.append(url)
        return url

    async def worker(self, name: str, **env: str) -> None:
        """`bridge worker`, once it says it has started."""
        before = (
            len(self.logged(name, "worker started")) if name in self.processes else 0
        )
        process = await self._spawn(name, "worker", **env)

        async def started() -> bool:
            assert process.returncode is None, self.log(name)
            return len(self.logged(name, "worker started")) > before

        await eventually(started, START_SECONDS, f"{name} started")

    async def stop(self, *names: str) -> None:
        """SIGTERM, as the platform stops a process; each must exit cleanly."""
        for name in names:
            self.processes[name].send_signal(signal.SIGTERM)
        for name in names:
            status = await asyncio.wait_for(self.processes[name].wait(), STOP_SECONDS)
            assert status == 0, f"{name} exited with {status}:\n{self.log(name)}"

    async def terminate(self, name: str) -> tuple[int, float]:
        """SIGTERM; the exit status and the seconds it took to exit."""
        process = self.processes[name]
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        status = await asyncio.wait_for(process.wait(), STOP_SECONDS)
        return status, time.monotonic() - started

    def kill(self, *names: str) -> None:
        """kill -9, without yielding to the event loop (so without letting the
        fakes answer anything more first); `exited` then waits for the end."""
        for name in names:
            self.processes[name].kill()

    async def exited(self, name: str) -> int:
        return await self.processes[name].wait()

    def running(self, name: str) -> bool:
        return self.processes[name].returncode is None

    async def kill_all(self) -> None:
        for process in self.processes.values():
            if process.returncode is None:
                process.kill()
                await process.wait()
