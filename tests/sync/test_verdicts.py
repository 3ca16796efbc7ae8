"""What a failed action means for its items: Retry, Wait or Dead, by error class."""

from __future__ import annotations

import pytest

from bridge import nexudus
from bridge.graph import _errors as graph
from bridge.nexudus import _errors as nexudus_errors
from bridge.sync.upstreams import Unconfigured
from bridge.sync.verdicts import WAIT_SECONDS, Dead, Retry, Verdict, Wait, verdict

CASES: list[tuple[BaseException, type[Verdict]]] = [
    # Nexudus
    (nexudus.NexudusError("odd"), Retry),
    (nexudus.RetryLater("later"), Retry),
    (nexudus.Throttled("slow down", retry_after=12.5), Retry),
    (nexudus.Unavailable("503 Service Unavailable", status_code=503), Retry),
    (nexudus.TransportFailure("reset"), Retry),
    (nexudus.TimedOut("no answer in 30 s"), Retry),
    (nexudus.ConnectionFailed("DNS failure"), Retry),
    (nexudus.GiveUp("no"), Dead),
    (nexudus.ValidationFailed("refused", field_errors=[("Name", "required")]), Dead),
    (nexudus.ValidationFailed("WasSuccessful: false"), Dead),
    (nexudus.Unauthorized("login refused", status_code=401), Wait),
    (nexudus.NotFound("no record 5", status_code=404), Dead),
    (nexudus.UnexpectedResponse("HTML instead of JSON", excerpt="<html>"), Dead),
    # Graph
    (graph.GraphError("odd"), Retry),
    (graph.RetryLater("later"), Retry),
    (graph.Throttled("429", retry_after=30.0, status_code=429), Retry),
    (graph.Unavailable("502", status_code=502), Retry),
    (graph.TransportFailure("timed out"), Retry),
    (graph.GiveUp("no"), Dead),
    (graph.NotFound("no such subscription", status_code=404), Dead),
    (graph.Conflict("exists", status_code=409), Dead),
    (graph.BadRequest("bad", status_code=400), Dead),
    (graph.ExpirationTooFar("too far", max_minutes=4230, status_code=400), Dead),
    # The handshake with our notification URL failed: our side, it passes.
    (graph.ValidationFailed("validation request failed", status_code=400), Retry),
    # Consent revoked: the connection is marked unauthorized and retried.
    (graph.Unauthorized("token refused", status_code=401), Retry),
    (graph.Forbidden("consent revoked", status_code=403), Retry),
    (graph.SubscriptionLimitReached("1000 subscriptions", status_code=403), Dead),
    (graph.TokenError(7000215, "Invalid client secret provided."), Wait),
    # Ours
    (Unconfigured("graph", ["GRAPH_CLIENT_SECRET"]), Wait),
    (TimeoutError(), Retry),
    (RuntimeError("a bug"), Retry),
]


@pytest.mark.parametrize(
    ("error", "expected"), CASES, ids=[f"{type(e).__module__}.{e!r}" for e, _ in CASES]
)
def test_each_error_class_gets_its_verdict(
    error: BaseException, expected: type[Verdict]
) -> None:
    outcome = verdict(error)
    assert type(outcome) is expected
    assert outcome.reason


def test_every_error_class_is_covered() -> None:
    covered = {type(error) for error, _ in CASES}
    for module in (nexudus_errors, graph):
        for name in module.__all__:
            assert getattr(module, name) in covered, name


@pytest.mark.parametrize(
    ("error", "upstream"),
    [
        (nexudus.Unavailable("503 from Nexudus"), "Nexudus: "),
        (nexudus.NotFound("no record 5"), "Nexudus: "),
        (nexudus.Unauthorized("login refused"), "Nexudus: "),
        (graph.Unavailable("502 from Graph"), "Graph: "),
        (graph.Conflict("exists"), "Graph: "),
        (graph.Forbidden("consent revoked"), "Graph: "),
    ],
)
def test_the_reason_names_the_upstream_and_keeps_its_message(
    error: Exception, upstream: str
) -> None:
    assert verdict(error).reason == f"{upstream}{error}"


def test_nexudus_field_errors_are_in_the_dead_reason() -> None:
    error = nexudus.ValidationFailed(
        "The record was not saved",
        field_errors=[("Name", "is required"), ("ResourceId", "unknown resource")],
        status_code=400,
    )
    outcome = verdict(error)
    assert isinstance(outcome, Dead)
    assert "Name: is required" in outcome.reason
    assert "ResourceId: unknown resource" in outcome.reason


@pytest.mark.parametrize(
    "error",
    [
        nexudus.Throttled("slow down", retry_after=12.5),
        graph.Throttled("429", retry_after=12.5),
    ],
)
def test_throttling_carries_retry_after(error: Exception) -> None:
    assert verdict(error) == Retry(verdict(error).reason, retry_after=12.5)


def test_other_retries_carry_no_retry_after() -> None:
    for error in (nexudus.Unavailable("503"), graph.Unavailable("503"), OSError()):
        outcome = verdict(error)
        assert isinstance(outcome, Retry)
        assert outcome.retry_after is None


def test_unconfigured_waits_naming_what_to_set() -> None:
    outcome = verdict(Unconfigured("nexudus", ["NEXUDUS_USERNAME", "NEXUDUS_PASSWORD"]))
    assert isinstance(outcome, Wait)
    assert outcome.seconds == WAIT_SECONDS
    assert "NEXUDUS_USERNAME" in outcome.reason
    assert "NEXUDUS_PASSWORD" in outcome.reason


def test_a_refused_graph_sign_in_waits_with_the_fix() -> None:
    outcome = verdict(graph.TokenError(7000222, "The secret expired."))
    assert isinstance(outcome, Wait)
    assert "GRAPH_CLIENT_SECRET" in outcome.reason


def test_an_unexpected_error_is_retried_and_named() -> None:
    outcome = verdict(KeyError("SubscriptionId"))
    assert isinstance(outcome, Retry)
    assert outcome.reason.startswith("unexpected error")
    assert "KeyError" in outcome.reason
