"""A TCP proxy in the test's event loop, between the bridge's processes and the
database server, that the test can cut: the database goes away for those processes
only, and the shared test server keeps running for everything else.

`up`: connections are passed through. `down`: the connections open are cut and new
ones closed at once, as when the server has gone (crashed, restarted, failed over).
`silent`: the connections open are cut and new ones accepted but never answered, as
a server that is overloaded or a network path that drops packets: only the client's
own connect timeout ends the wait.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Literal

Mode = Literal["up", "down", "silent"]


class Proxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.mode: Mode = "up"
        self.accepted = 0
        self.refused = 0
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()
        self._held: set[asyncio.StreamWriter] = set()  # silent's
        self._pipes: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        """Listen on a free 127.0.0.1 port; the port."""
        self._server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    def set(self, mode: Mode) -> None:
        """Pass connections through again (`up`), or cut them (`down`, `silent`)."""
        self.mode = mode
        cut = self._held | (self._open if mode != "up" else set())
        for writer in cut:
            writer.transport.abort()
        self._held.clear()
        if mode != "up":
            self._open.clear()

    async def close(self) -> None:
        self.set("down")
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._pipes):
            task.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)

    async def _client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        if self.mode == "down":
            self.refused += 1
            writer.transport.abort()
            return
        if self.mode == "silent":
            self._held.add(writer)  # never answered, until the mode changes
            return
        self._open.add(writer)
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(
                *self.target
            )
        except OSError:
            self._open.discard(writer)
            writer.transport.abort()
            return
        self.accepted += 1
        self._open.add(upstream_writer)
        for source, sink in ((reader, upstream_writer), (upstream_reader, writer)):
            task = asyncio.create_task(self._pipe(source, sink))
            self._pipes.add(task)
            task.add_done_callback(self._pipes.discard)

    async def _pipe(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter
    ) -> None:
        try:
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self._open.discard(sink)
            with contextlib.suppress(OSError):
                sink.transport.abort()
