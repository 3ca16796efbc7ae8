"""Log lines: JSON or console, context bound per task, and no secret in any line."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import httpx
import pytest
import structlog

from bridge import logs
from bridge.logs import REDACTED, Redactor

SECRET = "graph-client-secret-value-1234"


@pytest.fixture
def configured() -> Iterator[None]:
    """The root logger as it was, after a test that configures logging."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        structlog.contextvars.clear_contextvars()


def lines(capsys: pytest.CaptureFixture[str]) -> list[dict[str, object]]:
    err = capsys.readouterr().err
    return [json.loads(line) for line in err.splitlines() if line.strip()]


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        (
            "Authorization: Bearer eyJ0eXAiOiJKV1Qi.eyJhdWQiOiJo.c2ln",
            "eyJ0eXAiOiJKV1Qi",
        ),
        ("headers={'Authorization': 'Bearer abc.def-ghi'}", "abc.def-ghi"),
        ("grant_type=password&username=u&password=hunter22&x=1", "hunter22"),
        ('{"clientState": "s3cr3t-client-state", "id": 1}', "s3cr3t-client-state"),
        ("{'client_state': 'abcdefgh12345'}", "abcdefgh12345"),
        ('{"access_token":"tok-123456","refresh_token":"ref-654321"}', "tok-123456"),
        ('{"access_token":"tok-123456","refresh_token":"ref-654321"}', "ref-654321"),
        ("POST /graph/notifications?validationToken=Validation%3A+x", "Validation"),
        ("client_secret=abc123def&scope=x", "abc123def"),
        (f"it failed: {SECRET} was refused", SECRET),
    ],
)
def test_the_redactor_blanks_secrets_out_of_text(text: str, secret: str) -> None:
    cleaned = Redactor([SECRET]).text(text)
    assert secret not in cleaned
    assert REDACTED in cleaned


def test_the_redactor_leaves_ordinary_text_alone() -> None:
    text = "Nexudus token obtained (password), valid 300s; missing bearer token"
    assert Redactor([SECRET, "short"]).text(text) == text


def test_the_redactor_cleans_fields_by_name_and_by_value() -> None:
    event = {
        "event": "calling",
        "password": "pw-not-in-any-pattern",
        "detail": {"clientState": "x" * 40, "nested": [f"a {SECRET} b"]},
        "attempts": 3,
    }
    cleaned = Redactor([SECRET])(None, "info", event)
    assert cleaned == {
        "event": "calling",
        "password": REDACTED,
        "detail": {"clientState": REDACTED, "nested": [f"a {REDACTED} b"]},
        "attempts": 3,
    }


def test_lines_are_json_with_the_bound_context_and_no_secret(
    configured: None, capsys: pytest.CaptureFixture[str]
) -> None:
    logs.keep_secret(SECRET)
    logs.configure("debug", "json")
    log = logging.getLogger("bridge.test")
    with structlog.contextvars.bound_contextvars(request_id="r-1"):
        log.info("with %s", "context", extra={"connection_id": 7})
    log.warning("without context")
    try:
        raise RuntimeError(f"login with {SECRET} refused")
    except RuntimeError:
        log.exception("failed")

    first, second, third = lines(capsys)
    assert first["event"] == "with context"
    assert first["request_id"] == "r-1"
    assert first["connection_id"] == 7
    assert first["level"] == "info"
    assert "request_id" not in second
    assert SECRET not in json.dumps(third)
    assert "RuntimeError" in str(third["exception"])


async def test_every_answer_has_a_request_id_that_labels_its_log_lines(
    configured: None,
    capsys: pytest.CaptureFixture[str],
    client: httpx.AsyncClient,
) -> None:
    logs.configure("info", "json")
    answer = await client.post("/graph/notifications", content=b"{}")
    generated = answer.headers["request-id"]
    assert len(generated) == 32
    int(generated, 16)
    rejected = [
        line for line in lines(capsys) if line["event"] == "notification body rejected"
    ]
    assert [line["request_id"] for line in rejected] == [generated]

    again = await client.get("/healthz")
    assert again.headers["request-id"] not in ("", generated)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"client-request-id": "7a4f-graph-id"}, "7a4f-graph-id"),
        ({"X-Request-ID": "heroku-router-id"}, "heroku-router-id"),
        ({"request-id": "mine", "client-request-id": "theirs"}, "mine"),
    ],
)
async def test_a_request_id_the_caller_sent_is_kept(
    client: httpx.AsyncClient, headers: dict[str, str], expected: str
) -> None:
    answer = await client.get("/healthz", headers=headers)
    assert answer.headers["request-id"] == expected


async def test_a_request_id_that_is_not_an_id_is_replaced(
    client: httpx.AsyncClient,
) -> None:
    answer = await client.get("/healthz", headers={"request-id": "<script>\x7f"})
    assert len(answer.headers["request-id"]) == 32
