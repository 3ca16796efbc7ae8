"""A request's body must arrive within a deadline: 408 otherwise.

uvicorn waits for a body as long as the client keeps the connection open, so a client
that trickles its body a byte at a time (slowloris) would hold a request, its
connection and any shutdown waiting for it, for ever. Graph sends a notification in
one go and gives up on an answer after 10 s at most, so a body still arriving after
that is not Graph's: the request is answered 408 (Graph would retry it) and the
connection closed.

The deadline runs from the start of the request to the end of its body; once the body
is in, `receive` is the server's own again (waiting for a disconnect is not bounded).
Graph's own URLs do not pass through this middleware: their endpoint bounds its body
read itself, with `Deadlines` (web/notifications.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)


class _TooSlow(Exception):
    pass


class BodyDeadline:
    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.seconds
        body_in = False
        answered = False

        async def timed_receive() -> Message:
            nonlocal body_in
            if body_in:
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise _TooSlow from None
            if message["type"] != "http.request" or not message.get("more_body"):
                body_in = True
            return message

        async def watched_send(message: Message) -> None:
            nonlocal answered
            if message["type"] == "http.response.start":
                answered = True
            await send(message)

        try:
            await self.app(scope, timed_receive, watched_send)
        except _TooSlow:
            if answered:  # too late for a status: the connection just ends
                raise
            log.warning(
                "request body too slow: answered 408",
                extra={"path": scope["path"], "seconds": self.seconds},
            )
            await _answer_408(send, self.seconds)


class Deadlines:
    """The body deadlines of many requests, kept by one timer.

    `asyncio.timeout` arms and disarms a timer of the event loop for every request: on
    the ingest path that cost a quarter of the endpoint's time (docs/benchmarks.md).
    Here a request only notes when its deadline falls; one timer, set for the earliest
    deadline still pending, cancels the reads that outlive theirs.

        task = deadlines.start()
        try:
            body = await read_the_body()
        except asyncio.CancelledError:
            if not deadlines.expired(task):
                raise  # cancelled by someone else
            ...  # answer 408
        finally:
            deadlines.stop(task)
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        # Each deadline is its start plus `seconds`, so insertion order is deadline
        # order. The value: the deadline, and how often the task was being cancelled
        # already when it started (as `asyncio.timeout` keeps it).
        self._pending: dict[asyncio.Task[Any], tuple[float, int]] = {}
        # Reads cancelled for their deadline, with the same count.
        self._expired: dict[asyncio.Task[Any], int] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> asyncio.Task[Any]:
        """The deadline of the current task's read starts now."""
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("Deadlines.start() outside a task")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.seconds
        self._pending[task] = (deadline, task.cancelling())
        if self._timer is None or self._loop is not loop:
            self._loop = loop
            self._timer = loop.call_at(deadline, self._expire)
        return task

    def stop(self, task: asyncio.Task[Any]) -> None:
        """The read is over, however it ended."""
        self._pending.pop(task, None)
        self._expired.pop(task, None)

    def expired(self, task: asyncio.Task[Any]) -> bool:
        """Whether the CancelledError the read raised was its deadline's doing (and
        only that: any other cancellation must go on)."""
        cancelling = self._expired.pop(task, None)
        return cancelling is not None and task.uncancel() <= cancelling

    def _expire(self) -> None:
        self._timer = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        while self._pending:
            task, (deadline, cancelling) = next(iter(self._pending.items()))
            if deadline > now:
                self._timer = loop.call_at(deadline, self._expire)
                return
            del self._pending[task]
            self._expired[task] = cancelling
            task.cancel()


def too_slow(seconds: float) -> str:
    """The 408 answer's error message."""
    return f"the request body did not arrive within {seconds:g} s"


async def _answer_408(send: Send, seconds: float) -> None:
    body = json.dumps({"error": too_slow(seconds)}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 408,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                # What is still on its way of the body must not be read as a request.
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
