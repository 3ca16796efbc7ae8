"""`bridge replay`: post recorded notification payloads to a running bridge.

For the on-call person: replay what Graph sent (or the fixtures) and see, per file,
what the bridge answered. Files are sent one at a time, in the order given (a
folder's `*.json` files in name order), each as one POST with the file's bytes.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from bridge.cli.common import UserError, connect_hint, connect_reason, one_line
from bridge.settings import Settings

if TYPE_CHECKING:
    import httpx

NOTIFICATIONS_PATH = "/graph/notifications"
# A non-2xx body in --json: scripts get more of it than the terminal's one line,
# but not a whole HTML error page.
BODY_KEPT = 4096
# RFC 9110 token characters: what a header name may be made of.
_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")


@dataclass
class Result:
    file: str
    status: int | None = None
    ms: int | None = None
    body: str | None = None  # the answer's body, for a non-2xx answer
    error: str | None = None  # why there is no answer (file unreadable, no connection)

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    def to_json(self) -> dict[str, Any]:
        shown: dict[str, Any] = {
            "file": self.file,
            "status": self.status,
            "ms": self.ms,
        }
        if self.body is not None:
            shown["body"] = self.body[:BODY_KEPT]
        if self.error is not None:
            shown["error"] = self.error
        return shown


def notification_url(value: str) -> str:
    """argparse type for --url: an absolute http(s) URL; a bare base URL (no path)
    gets /graph/notifications appended."""
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise argparse.ArgumentTypeError(
            f"expected an http(s) URL such as http://127.0.0.1:8000, got {value!r}"
        )
    if parts.path in ("", "/"):
        return parts._replace(path=NOTIFICATIONS_PATH).geturl()
    return parts.geturl()


def header(value: str) -> tuple[str, str]:
    """argparse type for --header 'Name: value'. The value is never echoed back:
    it may be a credential."""
    name, colon, rest = value.partition(":")
    name = name.strip()
    if not colon:
        raise argparse.ArgumentTypeError("expected 'Name: value' (no ':' found)")
    if not name:
        raise argparse.ArgumentTypeError("expected 'Name: value' (the name is empty)")
    if not _HEADER_NAME.match(name):
        raise argparse.ArgumentTypeError(
            f"{name!r} is not a valid header name (letters, digits and -)"
        )
    rest = rest.strip()
    if any(char in rest for char in "\r\n\0"):
        raise argparse.ArgumentTypeError(
            f"the value of {name} contains a line break or NUL"
        )
    return name, rest


def positive_seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = 0.0
    if not seconds > 0:
        raise argparse.ArgumentTypeError(f"expected seconds > 0, got {value!r}")
    return seconds


def payload_files(paths: list[str]) -> list[Path]:
    """The files to send, in order; a missing path stops everything before any is
    sent (a typo should not half-replay a batch)."""
    found: list[Path] = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            # Not directories named *.json; broken links are kept and reported.
            found.extend(p for p in sorted(path.glob("*.json")) if not p.is_dir())
        elif path.exists() or path.is_symlink():
            found.append(path)
        else:
            raise UserError(f"replay: no such file or folder: {given}")
    if not found:
        raise UserError(f"replay: no .json files found in {', '.join(paths)}")
    return found


def send(
    client: httpx.Client, url: str, path: Path, headers: list[tuple[str, str]]
) -> Result:
    import httpx

    result = Result(file=str(path))
    try:
        content = path.read_bytes()
    except OSError as error:
        result.error = f"cannot read the file: {error.strerror or error}"
        return result
    origin = "{0.scheme}://{0.netloc}".format(urlsplit(url))
    started = time.perf_counter()
    try:
        response = client.post(url, content=content, headers=headers)
    except httpx.ConnectError as error:
        reason = connect_reason(error)
        hint = connect_hint(reason) or f": is `bridge serve` running at {origin}?"
        result.error = f"could not connect: {reason}{hint}"
    except httpx.TimeoutException:
        result.error = f"no answer from {origin} within {client.timeout.read:g}s"
    except httpx.HTTPError as error:
        reason = one_line(str(error) or "no detail")
        result.error = f"request failed: {type(error).__name__}: {reason}"
    else:
        result.status = response.status_code
        if not result.ok:
            result.body = response.text
    result.ms = round((time.perf_counter() - started) * 1000)
    return result


def _line(result: Result, width: int) -> str:
    name = f"{result.file:<{width}}"
    if result.error is not None:
        return f"{name}  failed  {result.error}"
    line = f"{name}  {result.status}  {result.ms} ms"
    if result.body is not None:
        line += f"  {one_line(result.body) or '(empty body)'}"
    return line


def replay_command(settings: Settings, args: argparse.Namespace) -> None:
    import httpx

    from bridge.upstream import tls_verify

    if settings.log_level != "debug":
        # httpx logs every request at info; the lines printed here say it better.
        logging.getLogger("httpx").setLevel(logging.WARNING)
    files = payload_files(args.paths)
    headers = [("Content-Type", "application/json")]
    if any(name.lower() == "content-type" for name, _ in args.header):
        headers = []
    headers += args.header
    width = max(len(str(path)) for path in files)
    results: list[Result] = []
    with httpx.Client(
        verify=tls_verify(), timeout=args.timeout, follow_redirects=False
    ) as client:
        for path in files:
            result = send(client, args.url, path, headers)
            results.append(result)
            if not args.json:
                print(_line(result, width), flush=True)  # noqa: T201
    if args.json:
        json.dump([result.to_json() for result in results], sys.stdout, indent=2)
        print()  # noqa: T201
    failed = sum(1 for result in results if not result.ok)
    if failed:
        raise UserError(f"replay: {failed} of {len(results)} files failed")


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    replay = commands.add_parser(
        "replay",
        help="post recorded payload files to a running bridge and report each answer",
        description=(
            "Post each payload file to a running bridge, one request per file, and "
            "print one line per file: the file, the HTTP status, the time in ms and, "
            "for an answer other than 2xx, its body. Exits non-zero when any file "
            "failed (an answer other than 2xx, an unreadable file, no connection)."
        ),
    )
    replay.add_argument(
        "paths",
        nargs="+",
        metavar="PATH",
        help="a payload file (sent whatever its name), or a folder: its *.json "
        "files, in name order, not its subfolders",
    )
    replay.add_argument(
        "--url",
        required=True,
        type=notification_url,
        help="where to post: the full URL, e.g. "
        "http://127.0.0.1:8000/graph/notifications (or .../graph/lifecycle); a "
        "base URL without a path, e.g. http://127.0.0.1:8000, gets "
        f"{NOTIFICATIONS_PATH} appended",
    )
    replay.add_argument(
        "--header",
        action="append",
        default=[],
        type=header,
        metavar="'NAME: VALUE'",
        help="an extra request header (repeatable); Content-Type is "
        "application/json unless given here",
    )
    replay.add_argument(
        "--timeout",
        type=positive_seconds,
        default=10.0,
        metavar="SECONDS",
        help="how long to wait for each answer (default 10)",
    )
    replay.add_argument(
        "--json",
        action="store_true",
        help="print a JSON list of {file, status, ms, body (non-2xx), error "
        "(no answer)} instead of lines",
    )
    replay.set_defaults(handler=replay_command)
