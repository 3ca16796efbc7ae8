"""The ingest process: parses the bodies Graph POSTs and stores their items, beside
the web process that answers Graph.

Why a process of its own: a thread that writes the inbox shares the GIL with the
event loop, and under load it spends most of each batch waiting for the loop to let
go of it; the loop pays too, with a futex wake each time it drops the GIL while the
thread waits (docs/benchmarks.md, session 5). A process has a GIL of its own. Parsing
goes with the write, so the loop does no more per request than read the body, hand it
over and answer.

Each web process starts one ingest process, on the first POST, and talks to it over a
socket pair in frames: a 4-byte big-endian length, then a pickle. First the web
process sends the configuration (`_Config`); then lists of (request number, body),
one frame per turn of its event loop; the ingest process answers with lists of
(request number, verdict), one frame per batch. Bodies that arrive while a batch is
being written gather into the next: the group commit of `bridge/store/writer.py`.

The ingest process ends when the web process closes its end (or dies): it writes what
it has read, answers, and exits. It ignores SIGINT and SIGTERM, which a terminal or a
PaaS sends the whole process group: the web process decides when it is done. If it
dies, what was waiting for it is answered 503 (Graph retries), and the next POST
starts another.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import pickle
import signal
import socket
import struct
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from bridge import metrics
from bridge.graph.notifications import (
    CHANGE_TYPES,
    LIFECYCLE_EVENTS,
    NotACollection,
    Received,
    parse,
)
from bridge.store.inbox import Incoming, Kind, Outcome
from bridge.store.writer import BatchWriter, Result

if TYPE_CHECKING:
    from bridge.settings import Settings

log = logging.getLogger(__name__)

_FRAME = struct.Struct("!I")
# Items in one batch (one request may pass it alone). A batch of 16 takes about
# 0.6 ms to commit on SQLite; each batch is answered as soon as it is committed, so
# the web process turns one batch's answers around while the next is written. Larger
# batches save little per item (the commit's cost is mostly per page, and each item
# dirties its own page of the dedupe index) and keep the web process waiting.
# docs/benchmarks.md, session 6.
BATCH_ITEMS = 16
# How long shutting down waits for the ingest process to write what it has: a batch
# takes milliseconds, but a PostgreSQL that has stopped answering takes the connect
# timeout (store/db.py) for each try.
CLOSE_SECONDS = 30.0


class Rejected(NamedTuple):
    """Not a notification collection (answered 400): why."""

    reason: str


class Summary(NamedTuple):
    """What the web process logs of an item."""

    kind: Kind
    subscription_id: str
    tenant_id: str | None
    change_type: str | None
    lifecycle_event: str | None


class Stored(NamedTuple):
    """Every item committed or deliberately dropped (answered 202)."""

    # What became of each item, in order, and its kind: what the metrics count.
    outcomes: list[Outcome]
    kinds: list[Kind]
    # The items worth a log line, by position: those not stored for action, and
    # those of a type the bridge does not know.
    notable: list[tuple[int, Summary]]


class _Failed(NamedTuple):
    error: str


Verdict = Rejected | Stored
# A Stored as it crosses the socket: plain tuples and lists, which pickle several
# times faster than named tuples (on the hot path: one per request).
_StoredWire = tuple[list[Outcome], list[Kind], list[tuple[int, Summary]]]
_Answer = Rejected | _Failed | _StoredWire


def _is_known(kind: Kind, change_type: str | None, event: str | None) -> bool:
    """Of a type the bridge acts on (others are stored, and logged)."""
    if kind == "lifecycle":
        return event in LIFECYCLE_EVENTS
    return change_type in CHANGE_TYPES


def _stored(items: list[Incoming], outcomes: list[Outcome]) -> _StoredWire:
    """A written request's answer, ready for the socket."""
    notable = [
        (
            n,
            Summary(
                i.kind, i.subscription_id, i.tenant_id, i.change_type, i.lifecycle_event
            ),
        )
        for n, (i, outcome) in enumerate(zip(items, outcomes, strict=True))
        if outcome is not Outcome.STORED
        or not _is_known(i.kind, i.change_type, i.lifecycle_event)
    ]
    return outcomes, [i.kind for i in items], notable


class IngestFailed(Exception):
    """The items could not be stored, or the ingest process is gone (answered 503)."""


class _Config(NamedTuple):
    database_url: str
    log_level: str
    log_format: Literal["json", "console"]
    secrets: list[str]


def incoming(received: Received) -> Incoming:
    item = received.notification
    return Incoming(
        subscription_id=item.subscription_id,
        client_state=item.client_state,
        kind="lifecycle" if item.is_lifecycle else "change",
        change_type=item.change_type,
        lifecycle_event=item.lifecycle_event,
        resource=item.resource,
        resource_id=item.resource_id,
        etag=item.etag,
        expires_at=item.subscription_expires_at,
        tenant_id=item.tenant_id,
        raw=received.raw,
    )


def _frame(value: object) -> bytes:
    payload = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    return _FRAME.pack(len(payload)) + payload


def _frames(buffer: bytearray) -> Iterator[Any]:
    """The complete frames at the start of `buffer`, taken out of it."""
    start = 0
    while len(buffer) - start >= _FRAME.size:
        (size,) = _FRAME.unpack_from(buffer, start)
        end = start + _FRAME.size + size
        if len(buffer) < end:
            break
        # Frames come only from the other end of our own socket pair.
        yield pickle.loads(buffer[start + _FRAME.size : end])  # noqa: S301
        start = end
    del buffer[:start]


# The web process's side.


class IngestProcess:
    def __init__(
        self,
        config: _Config,
        *,
        on_stored: Callable[[], None] | None = None,
    ) -> None:
        self._config = config
        self._on_stored = on_stored
        self._numbers = itertools.count()
        self._waiting: dict[int, asyncio.Future[Verdict]] = {}
        self._outbox: list[tuple[int, bytes]] = []
        self._transport: asyncio.Transport | None = None
        self._process: asyncio.subprocess.Process | None = None
        self._starting: asyncio.Task[None] | None = None
        self._closing = False

    @classmethod
    def for_settings(
        cls,
        settings: Settings,
        database_url: str,
        on_stored: Callable[[], None] | None,
    ) -> IngestProcess:
        config = _Config(
            database_url,
            settings.log_level,
            settings.log_format,
            [value for value in settings.secret_values() if value],
        )
        return cls(config, on_stored=on_stored)

    @property
    def pid(self) -> int | None:
        """The ingest process's, while it runs."""
        if self._process is None or self._transport is None:
            return None
        return self._process.pid

    async def ingest(self, body: bytes) -> Verdict:
        """Parse and store `body`; returns once its items are committed."""
        if self._closing:
            raise IngestFailed("the web process is shutting down")
        if self._transport is None:
            await self._start()
        loop = asyncio.get_running_loop()
        number = next(self._numbers)
        done: asyncio.Future[Verdict] = loop.create_future()
        self._waiting[number] = done
        if not self._outbox:
            loop.call_soon(self._send)
        self._outbox.append((number, body))
        return await done

    async def close(self) -> None:
        """Let the ingest process write what it has, then wait for it to end."""
        self._closing = True
        if self._starting is not None:
            await asyncio.gather(self._starting, return_exceptions=True)
        if self._transport is not None:
            self._send()
            self._transport.write_eof()
        if self._process is not None:
            try:
                await asyncio.wait_for(self._process.wait(), CLOSE_SECONDS)
            except TimeoutError:
                log.error("the ingest process did not finish; killed")
                self._process.kill()
                await self._process.wait()

    async def _start(self) -> None:
        # Requests that arrive while it starts wait for the same start.
        if self._starting is None or self._starting.done():
            self._starting = asyncio.create_task(self._spawn())
        await asyncio.shield(self._starting)
        if self._transport is None:
            raise IngestFailed("the ingest process did not start")

    async def _spawn(self) -> None:
        ours, theirs = socket.socketpair()
        try:
            self._process = await asyncio.create_subprocess_exec(
                sys.executable,
                # Not `-m`: this module must be itself, not __main__, for its
                # classes to pickle by the same name on both ends.
                "-c",
                "from bridge.web.ingest import main; main()",
                str(theirs.fileno()),
                pass_fds=[theirs.fileno()],
                stdin=subprocess.DEVNULL,
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        loop = asyncio.get_running_loop()
        transport, _ = await loop.connect_accepted_socket(lambda: _Answers(self), ours)
        transport.write(_frame(self._config))  # first, ahead of any body
        self._transport = transport

    def _send(self) -> None:
        if self._outbox and self._transport is not None:
            self._transport.write(_frame(self._outbox))
            self._outbox = []

    def _answered(self, verdicts: list[tuple[int, _Answer]]) -> None:
        metrics.INGEST_BATCHES.inc()
        stored = False
        for number, verdict in verdicts:
            done = self._waiting.pop(number, None)
            # A request whose client went away was still committed: at-least-once.
            if done is None or done.done():
                continue
            if isinstance(verdict, _Failed):
                done.set_exception(IngestFailed(verdict.error))
            elif isinstance(verdict, Rejected):
                done.set_result(verdict)
            else:
                done.set_result(Stored._make(verdict))
                stored = stored or Outcome.STORED in verdict[0]
        if stored and self._on_stored is not None:
            self._on_stored()

    def _gone(self) -> None:
        self._transport = None
        if not self._closing:
            log.error(
                "the ingest process stopped", extra={"waiting": len(self._waiting)}
            )
        waiting, self._waiting = self._waiting, {}
        self._outbox = []
        for done in waiting.values():
            if not done.done():
                done.set_exception(IngestFailed("the ingest process stopped"))


class _Answers(asyncio.Protocol):
    def __init__(self, owner: IngestProcess) -> None:
        self._owner = owner
        self._buffer = bytearray()

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        for verdicts in _frames(self._buffer):
            self._owner._answered(verdicts)

    def eof_received(self) -> bool:
        return False  # close our end too

    def connection_lost(self, exc: Exception | None) -> None:
        self._owner._gone()


# The ingest process's side.


def _judge(
    requests: Sequence[tuple[int, bytes]],
    write: Callable[[list[list[Incoming]]], list[Result]],
    answer: Callable[[list[tuple[int, _Answer]]], None],
) -> None:
    """Parse each request's body and write the items in batches with the other
    requests' (`write`); `answer` each verdict as soon as it is known: the 400s
    first, then each batch once committed."""
    rejected: list[tuple[int, _Answer]] = []
    parsed: list[tuple[int, list[Incoming]]] = []
    for number, body in requests:
        try:
            parsed.append((number, [incoming(item) for item in parse(body)]))
        except NotACollection as problem:
            rejected.append((number, Rejected(str(problem))))
        except Exception as error:
            # A body that breaks the parse must not take the process (and the
            # requests batched with it) down, again at each of Graph's retries.
            log.exception("notification body not parsed")
            rejected.append((number, _Failed(repr(error))))
    if rejected:
        answer(rejected)
    for batch in _batches(parsed):
        results = write([items for _, items in batch])
        verdicts: list[tuple[int, _Answer]] = []
        for (number, items), result in zip(batch, results, strict=True):
            if isinstance(result, Exception):
                verdicts.append((number, _Failed(repr(result))))
            else:
                verdicts.append((number, _stored(items, result)))
        answer(verdicts)


def _batches(
    parsed: list[tuple[int, list[Incoming]]],
) -> Iterator[list[tuple[int, list[Incoming]]]]:
    """Consecutive requests, up to the batch cap in items (one request may pass it)."""
    batch: list[tuple[int, list[Incoming]]] = []
    count = 0
    for request in parsed:
        if batch and count + len(request[1]) > BATCH_ITEMS:
            yield batch
            batch, count = [], 0
        batch.append(request)
        count += len(request[1])
    if batch:
        yield batch


def serve(connection: socket.socket) -> None:
    """Read, parse, write and answer until the web process closes its end."""
    buffer = bytearray()
    config: _Config | None = None
    writer: BatchWriter | None = None
    try:
        while True:
            data = connection.recv(1 << 20)
            if not data:
                return
            buffer += data
            requests: list[tuple[int, bytes]] = []
            for frame in _frames(buffer):
                if config is None:
                    config = frame
                    writer = _open(config)
                else:
                    requests.extend(frame)
            if requests and writer is not None:
                _judge(requests, writer.write, lambda v: connection.sendall(_frame(v)))
    finally:
        if writer is not None:
            writer.close()


def _open(config: _Config) -> BatchWriter:
    from bridge import logs
    from bridge.store import db

    logs.keep_secret(*config.secrets)
    logs.configure(config.log_level, config.log_format)
    return BatchWriter(db.create(config.database_url))


def main() -> None:
    # The web process decides when this one is done: it closes the socket.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    with socket.socket(fileno=int(sys.argv[1])) as connection:
        serve(connection)
