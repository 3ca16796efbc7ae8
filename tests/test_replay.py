"""`bridge replay`, through the real entry point, against a real `bridge serve`."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from tests.databases import Databases
from tests.fakes.server import serve
from tests.processes import free_port, run_bridge, serving

FIXTURES = Path(__file__).parent / "fixtures" / "graph"
VALID = sorted(FIXTURES.glob("*.json"))
MALFORMED = sorted((FIXTURES / "malformed").iterdir())


def _one_stderr_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


@pytest.fixture(scope="module")
def bridge(
    tmp_path_factory: pytest.TempPathFactory, databases: Databases
) -> Iterator[str]:
    """One `bridge serve` for the module: replaying only adds ignored items."""
    workdir = tmp_path_factory.mktemp("bridge")
    url = databases.fresh(workdir)
    try:
        with serving(workdir, {"DATABASE_URL": url}, "--no-worker") as (base, _):
            yield base
    finally:
        databases.discard(url)


def test_fixtures_get_the_endpoint_answers_and_failures_show_the_body(
    bridge: str, tmp_path: Path
) -> None:
    files = [*VALID, *MALFORMED]
    result = run_bridge(
        "replay",
        *map(str, files),
        "--url",
        f"{bridge}/graph/notifications",
        cwd=tmp_path,
    )

    assert result.returncode == 1
    summary = _one_stderr_line(result.stderr)
    assert f"replay: {len(MALFORMED)} of {len(files)} files failed" in summary
    lines = result.stdout.splitlines()
    assert len(lines) == len(files)
    for path, line in zip(files, lines, strict=True):
        name, status, ms, unit, *body = line.split()
        assert name == str(path)
        assert ms.isdigit()
        assert unit == "ms"
        if path in VALID:
            # Unknown subscriptions and wrong secrets are stored or dropped: 202.
            assert status == "202", line
            assert body == []
        else:
            assert status == "400", line
            assert '{"error":' in line


def test_a_folder_is_its_json_files_in_order_and_a_base_url_is_completed(
    bridge: str, tmp_path: Path
) -> None:
    result = run_bridge("replay", str(FIXTURES), "--url", bridge, cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    sent = [line.split()[0] for line in result.stdout.splitlines()]
    assert sent == [str(path) for path in VALID]  # not malformed/, not README.md
    assert all(line.split()[1] == "202" for line in result.stdout.splitlines())


def test_json_output(bridge: str, tmp_path: Path) -> None:
    created = FIXTURES / "event-created.json"
    empty = FIXTURES / "malformed" / "empty-object.json"
    result = run_bridge(
        "replay", str(created), str(empty), "--url", bridge, "--json", cwd=tmp_path
    )

    assert result.returncode == 1
    shown = json.loads(result.stdout)
    assert [item["file"] for item in shown] == [str(created), str(empty)]
    assert [item["status"] for item in shown] == [202, 400]
    assert all(isinstance(item["ms"], int) for item in shown)
    assert "body" not in shown[0]
    assert json.loads(shown[1]["body"])["error"].startswith("not a notification")


class Recorder:
    """A stand-in bridge that keeps what it was sent; /fail answers an HTML 500."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str], bytes]] = []

    @property
    def app(self) -> Starlette:
        async def record(request: Request) -> Response:
            body = await request.body()
            self.requests.append((request.url.path, dict(request.headers), body))
            if request.url.path == "/fail":
                page = "<html>\n<body>\n" + "Internal error. " * 100 + "\n</body>"
                return HTMLResponse(page, status_code=500)
            return Response(status_code=202)

        return Starlette(
            routes=[
                Route("/graph/notifications", record, methods=["POST"]),
                Route("/fail", record, methods=["POST"]),
            ]
        )


async def test_headers_are_sent_and_a_long_body_is_one_short_line(
    tmp_path: Path,
) -> None:
    recorder = Recorder()
    created = FIXTURES / "event-created.json"
    async with serve(recorder.app) as base:
        sent = await asyncio.to_thread(
            run_bridge,
            "replay",
            str(created),
            "--url",
            f"{base}/",
            "--header",
            "Authorization: Bearer abc",
            "--header",
            "X-Trace:  one two ",
            cwd=tmp_path,
        )
        failed = await asyncio.to_thread(
            run_bridge, "replay", str(created), "--url", f"{base}/fail", cwd=tmp_path
        )

    assert sent.returncode == 0, sent.stderr
    path, headers, body = recorder.requests[0]
    assert path == "/graph/notifications"
    assert headers["authorization"] == "Bearer abc"
    assert headers["x-trace"] == "one two"
    assert headers["content-type"] == "application/json"
    assert body == created.read_bytes()

    assert failed.returncode == 1
    (line,) = failed.stdout.splitlines()
    assert " 500 " in line
    shown = line.split(" ms  ", 1)[1]
    assert shown.startswith("<html> <body> Internal error.")
    assert shown.endswith("…")
    assert len(shown) <= 200


def test_connection_refused_and_an_unreadable_file_are_a_line_each(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "payloads"
    folder.mkdir()
    (folder / "a-broken.json").symlink_to(tmp_path / "gone.json")
    (folder / "b-created.json").write_bytes(
        (FIXTURES / "event-created.json").read_bytes()
    )
    url = f"http://127.0.0.1:{free_port()}"

    result = run_bridge("replay", str(folder), "--url", url, cwd=tmp_path)

    assert result.returncode == 1
    assert "replay: 2 of 2 files failed" in _one_stderr_line(result.stderr)
    broken, created = result.stdout.splitlines()
    assert "a-broken.json" in broken
    assert "failed  cannot read the file: No such file or directory" in broken
    assert "b-created.json" in created
    assert "could not connect: Connection refused" in created
    assert f"is `bridge serve` running at {url}?" in created


# Nothing listens here: a request sent would show up as a failed line on stdout.
NOWHERE = "http://127.0.0.1:9"


@pytest.mark.parametrize(
    ("args", "says", "status"),
    [
        # A missing path stops the batch before the good file before it is sent.
        ([str(FIXTURES / "event-created.json"), "gone.json"], "folder: gone.json", 1),
        (["empty"], "no .json files found in empty", 1),
        ([str(FIXTURES), "--header", "Authorization Bearer s3cret"], "no ':'", 2),
        ([str(FIXTURES), "--header", ": v"], "the name is empty", 2),
        ([str(FIXTURES), "--header", "X Y: v"], "not a valid header name", 2),
        ([str(FIXTURES), "--header", "X-Y: a\r\nb"], "line break", 2),
        ([str(FIXTURES), "--timeout", "0"], "argument --timeout", 2),
        ([str(FIXTURES), "--url", "ftp://bridge.example"], "argument --url", 2),
        ([str(FIXTURES), "--url", "127.0.0.1:8000"], "argument --url", 2),
    ],
)
def test_a_mistake_is_one_line_and_nothing_is_sent(
    tmp_path: Path, args: list[str], says: str, status: int
) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("not a payload")

    result = run_bridge("replay", "--url", NOWHERE, *args, cwd=tmp_path)

    assert result.returncode == status
    line = _one_stderr_line(result.stderr)
    assert says in line
    assert "s3cret" not in line
    assert result.stdout == ""


def test_help_says_how_the_url_is_read(tmp_path: Path) -> None:
    result = run_bridge("replay", "--help", cwd=tmp_path)

    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    assert "gets /graph/notifications appended" in text
