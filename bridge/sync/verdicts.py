"""What a failed action means for its items: try again, wait, or give up.

- Retry: the upstream may recover by itself (throttling, outages, timeouts), or the
  failure is ours and a fix may ship (an unexpected exception). Backoff, then dead
  once out of attempts.
- Wait: the work needs configuration or credentials that are missing or refused;
  nothing will change until the operator acts, and nothing should be lost meanwhile.
  The item goes back to pending without using up an attempt.
- Dead: the upstream refused this very request (a Nexudus field message, a Graph
  400): the same request will be refused again. Kept with the reason for an operator.
"""

from __future__ import annotations

from dataclasses import dataclass

from bridge import nexudus
from bridge.graph import _errors as graph_errors
from bridge.sync.upstreams import Unconfigured

# How long refused credentials wait before they are tried again.
WAIT_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class Retry:
    reason: str
    retry_after: float | None = None


@dataclass(frozen=True, slots=True)
class Wait:
    reason: str
    seconds: float = WAIT_SECONDS


@dataclass(frozen=True, slots=True)
class Dead:
    reason: str


Verdict = Retry | Wait | Dead


def _said(upstream: str, error: BaseException) -> str:
    """The error's message, naming the upstream once."""
    text = str(error)
    return text if text.startswith(upstream) else f"{upstream}: {text}"


def verdict(error: BaseException) -> Verdict:
    match error:
        case Unconfigured():
            return Wait(f"waiting for configuration: {error}")
        case graph_errors.TokenError():
            return Wait(str(error))
        case nexudus.Unauthorized():
            return Wait(_said("Nexudus", error))
        case nexudus.Throttled(retry_after=seconds):
            return Retry(_said("Nexudus", error), seconds)
        case nexudus.RetryLater():
            return Retry(_said("Nexudus", error))
        case nexudus.ValidationFailed(field_errors=fields) if fields:
            detail = "; ".join(f"{name}: {message}" for name, message in fields)
            return Dead(f"Nexudus refused the record: {detail}")
        case nexudus.GiveUp():
            return Dead(_said("Nexudus", error))
        case graph_errors.Throttled(retry_after=seconds):
            return Retry(_said("Graph", error), seconds)
        case graph_errors.RetryLater():
            return Retry(_said("Graph", error))
        # Graph could not reach our notification URL during the handshake: a
        # deploy in progress or a network problem on our side, which passes.
        case graph_errors.ValidationFailed():
            return Retry(_said("Graph", error))
        # Consent revoked: the connection is marked `unauthorized`, and retried
        # with backoff in case consent is granted again.
        case graph_errors.SubscriptionLimitReached():
            return Dead(_said("Graph", error))
        case graph_errors.Unauthorized() | graph_errors.Forbidden():
            return Retry(_said("Graph", error))
        case graph_errors.GiveUp():
            return Dead(_said("Graph", error))
        case TimeoutError():
            return Retry("the action did not finish within its lease")
        case _:
            return Retry(f"unexpected error: {error!r}")
