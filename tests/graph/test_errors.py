"""The error tree: a caller can tell retry-later from give-up by class alone."""

from __future__ import annotations

import httpx
import pytest

from bridge.graph._errors import (
    BadRequest,
    Conflict,
    ExpirationTooFar,
    Forbidden,
    GiveUp,
    GraphError,
    NotFound,
    RetryLater,
    SubscriptionLimitReached,
    Throttled,
    TokenError,
    TransportFailure,
    Unauthorized,
    Unavailable,
    ValidationFailed,
)
from bridge.graph._responses import error_for


@pytest.mark.parametrize(
    ("error", "parent"),
    [
        (Throttled, RetryLater),
        (Unavailable, RetryLater),
        (TransportFailure, RetryLater),
        (NotFound, GiveUp),
        (Conflict, GiveUp),
        (ExpirationTooFar, BadRequest),
        (ValidationFailed, BadRequest),
        (BadRequest, GiveUp),
        (Unauthorized, GiveUp),
        (SubscriptionLimitReached, Forbidden),
        (Forbidden, GiveUp),
        (TokenError, GiveUp),
        (RetryLater, GraphError),
        (GiveUp, GraphError),
    ],
)
def test_tree(error: type[GraphError], parent: type[GraphError]) -> None:
    assert issubclass(error, parent)


def test_retry_later_and_give_up_do_not_overlap() -> None:
    leaves = [Throttled, Unavailable, TransportFailure]
    assert not any(issubclass(leaf, GiveUp) for leaf in leaves)


@pytest.mark.parametrize(
    ("code", "variable"),
    [
        (7000215, "GRAPH_CLIENT_SECRET"),
        (7000222, "GRAPH_CLIENT_SECRET"),
        (7000218, "GRAPH_CLIENT_SECRET"),
        (90002, "GRAPH_TENANT_ID"),
        (900023, "GRAPH_TENANT_ID"),
        (700016, "GRAPH_CLIENT_ID"),
        (65001, "Calendars.Read"),
        (500011, "GRAPH_API_URL"),
        (None, "GRAPH_CLIENT_SECRET"),
        (12345, "GRAPH_TENANT_ID"),
    ],
)
def test_token_error_says_what_to_fix(code: int | None, variable: str) -> None:
    error = TokenError(code, "what the authority said")

    assert variable in str(error)
    assert "what the authority said" in str(error)
    assert error.aadsts_code == code


def answer(status: int, message: str = "", **headers: str) -> httpx.Response:
    body = {"error": {"code": "X", "message": message}}
    return httpx.Response(status, json=body, headers=headers)


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (answer(400, "Subscription validation request failed."), ValidationFailed),
        (answer(400, "Subscription validation request timed out."), ValidationFailed),
        (
            answer(400, "Subscription expiration can only be 4230 minutes"),
            ExpirationTooFar,
        ),
        (answer(400, "Invalid resource"), BadRequest),
        (answer(401), Unauthorized),
        (answer(403, "Access is denied."), Forbidden),
        (
            answer(403, "The maximum number of subscriptions has been reached"),
            SubscriptionLimitReached,
        ),
        (answer(404), NotFound),
        (answer(409), Conflict),
        (answer(410), BadRequest),
        (answer(429), Throttled),
        (answer(503, **{"Retry-After": "3"}), Throttled),
        (answer(503), Unavailable),
        (answer(500), Unavailable),
        (httpx.Response(502, text="<html>bad gateway</html>"), Unavailable),
        (httpx.Response(302), GiveUp),
    ],
)
def test_status_mapping(response: httpx.Response, expected: type[GraphError]) -> None:
    error = error_for(response, "do something")

    assert type(error) is expected
    assert str(error).startswith("do something: Graph answered")


def test_request_id_from_header_or_inner_error() -> None:
    from_header = httpx.Response(404, headers={"request-id": "abc"})
    inner = {"error": {"code": "C", "message": "m", "innerError": {"request-id": "d"}}}

    assert error_for(from_header, "x").request_id == "abc"
    assert error_for(httpx.Response(404, json=inner), "x").request_id == "d"


def test_expiration_limit_is_read_from_the_message() -> None:
    error = error_for(answer(400, "expiration can only be 1440 minutes ahead"), "x")

    assert isinstance(error, ExpirationTooFar)
    assert error.max_minutes == 1440
