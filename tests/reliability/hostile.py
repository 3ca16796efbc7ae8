"""Hostile and malformed input for the notification URLs: a seeded fuzzer, and raw
HTTP for what a well-behaved client library will not send.

The fuzzer mutates a valid collection: values replaced by others of any JSON type,
keys dropped or added, the text's bytes flipped, cut, repeated or replaced. It is
seeded, so a run's bodies (and figures) are the same every time.

U+0000 in a string and timestamps whose UTC value falls outside years 1 to 9999 are
not generated here; test_hostile_input.py checks each of them answers 400.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections.abc import Iterator
from typing import Any

# Characters for random strings: ASCII, markup, quotes, escapes' targets, Latin,
# CJK, emoji, right-to-left, and the line and paragraph separators. Never U+0000.
ALPHABET = (
    "abcXYZ019 <>&\"'\\/{}[]:,;=%+-_.~`!?#@$^*()|\t\n\r"
    "\x01\x1f\x7féßøЖж中文字😀🚀\u202e\u2028\u2029\ufeff\ufffd"
)


def random_string(rng: random.Random, longest: int = 40) -> str:
    size = rng.choice([0, 1, 2, 8, longest, rng.randrange(longest + 1)])
    return "".join(rng.choice(ALPHABET) for _ in range(size))


def random_value(rng: random.Random, depth: int = 0) -> Any:
    """Any JSON value, of any type, now and then a large or a nested one."""
    kinds = ["null", "bool", "int", "float", "string", "list", "object"]
    kind = rng.choice(kinds if depth < 4 else kinds[:5])
    if kind == "null":
        return None
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "int":
        return rng.choice(
            [0, -1, 1, 2**31, -(2**63), 2**64, 10**30, rng.randint(-9, 9)]
        )
    if kind == "float":
        return rng.choice([0.5, -0.0, 1e308, -1e-308, 3.14])
    if kind == "string":
        return random_string(rng)
    if kind == "list":
        return [random_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {random_string(rng, 8): random_value(rng, depth + 1) for _ in range(3)}


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(value, dict):
        for key, child in value.items():
            yield from _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from _paths(child, (*prefix, index))


def _replace(document: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    parent = document
    for step in path[:-1]:
        parent = parent[step]
    parent[path[-1]] = new
    return document


def _structural(rng: random.Random, valid: dict[str, Any]) -> bytes:
    document = json.loads(json.dumps(valid))
    for _ in range(rng.randint(1, 3)):
        paths = list(_paths(document))
        path = rng.choice(paths)
        action = rng.choice(["replace", "replace", "drop", "add", "wrap"])
        if action == "drop" and path:
            parent = document
            for step in path[:-1]:
                parent = parent[step]
            del parent[path[-1]]
        elif action == "add":
            target = document
            for step in path:
                target = target[step]
            if isinstance(target, dict):
                target[random_string(rng, 12)] = random_value(rng)
            elif isinstance(target, list):
                target.append(random_value(rng))
        elif action == "wrap":
            document = _replace(document, path, [_at(document, path)])
        else:
            document = _replace(document, path, random_value(rng))
    return json.dumps(document, ensure_ascii=rng.random() < 0.5).encode()


def _at(document: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        document = document[step]
    return document


def _bytewise(rng: random.Random, valid: dict[str, Any]) -> bytes:
    text = bytearray(json.dumps(valid).encode())
    for _ in range(rng.randint(1, 4)):
        at = rng.randrange(len(text))
        action = rng.choice(["flip", "cut", "insert", "repeat", "truncate"])
        if action == "flip":
            text[at] = rng.choice([b for b in range(1, 256) if b != text[at]])
        elif action == "cut":
            del text[at : at + rng.randint(1, 20)]
        elif action == "insert":
            text[at:at] = rng.randbytes(rng.randint(1, 8)).replace(b"\x00", b"\x01")
        elif action == "repeat":
            text[at:at] = text[at : at + rng.randint(1, 40)]
        else:
            del text[at:]
        if not text:
            break
    return bytes(text)


def _whole(rng: random.Random) -> bytes:
    choice = rng.randrange(4)
    if choice == 0:
        return rng.randbytes(rng.randrange(200)).replace(b"\x00", b" ")
    if choice == 1:
        return json.dumps(random_value(rng)).encode()
    if choice == 2:
        return json.dumps({"value": random_value(rng)}).encode()
    return json.dumps({"value": [random_value(rng) for _ in range(3)]}).encode()


def fuzzed(valid: dict[str, Any], count: int, seed: int = 7) -> list[bytes]:
    """`count` bodies made from the `valid` collection, the same for a seed."""
    rng = random.Random(seed)
    makers = [_structural, _structural, _bytewise]
    bodies = []
    for n in range(count):
        if n % 10 == 9:
            bodies.append(_whole(rng))
        else:
            bodies.append(rng.choice(makers)(rng, valid))
    return bodies


# -- raw HTTP ------------------------------------------------------------------------


async def exchange(url: str, data: bytes, within: float = 10.0) -> str:
    """Send `data` as it is over a connection of its own; the answer's status, or
    "closed" when the server ended the connection without one."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(data)
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        async with asyncio.timeout(within):
            line = await reader.readline()
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    parts = line.split()
    return parts[1].decode() if len(parts) > 1 else "closed"


def request(
    body: bytes,
    *,
    path: str = "/graph/notifications",
    headers: dict[str, str] | None = None,
    method: str = "POST",
) -> bytes:
    """An HTTP/1.1 request with `body` (Content-Length unless headers say else).

    The connection is kept alive: a server closing it with part of the body unread
    would reset it, and the answer could be lost before it is read."""
    fields = {"Host": "127.0.0.1", **(headers or {})}
    if "Transfer-Encoding" not in fields and "Content-Length" not in fields:
        fields["Content-Length"] = str(len(body))
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(
        f"{name}: {value}\r\n" for name, value in fields.items()
    )
    return head.encode() + b"\r\n" + body


async def chunked_upload(url: str, total: int, chunk: int = 65536) -> str:
    """A body of `total` bytes sent chunked (no length given up front), for as long
    as the server reads; the answer's status, read while still sending."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    answer = asyncio.create_task(reader.readline())
    try:
        writer.write(request(b"", headers={"Transfer-Encoding": "chunked"}))
        sent = 0
        with contextlib.suppress(ConnectionError):
            while sent < total and not answer.done():
                writer.write(f"{chunk:x}\r\n".encode() + b"[" * chunk + b"\r\n")
                await writer.drain()
                sent += chunk
            if not answer.done():
                writer.write(b"0\r\n\r\n")
                await writer.drain()
        async with asyncio.timeout(10.0):
            line = await answer
    finally:
        answer.cancel()
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    parts = line.split()
    return parts[1].decode() if len(parts) > 1 else "closed"
