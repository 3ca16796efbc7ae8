"""`bridge doctor`: check configuration, database, both upstream logins and the
public URL, and say exactly what is wrong.

Invalid values never get here: `settings.load()` stops the process first with one
line naming the variable. Doctor changes nothing: it creates no database, no
subscription and no record (it does sign in to Nexudus and Graph, which is what it
checks). Secrets are never printed; every detail is also scrubbed of them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import secrets
import sys
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from bridge.cli.common import UserError, connect_hint, connect_reason, one_line
from bridge.settings import Capability, Settings

if TYPE_CHECKING:
    import httpx
    from sqlalchemy import Engine

# Graph waits this long for the validation answer; the upstream checks use it too.
TIMEOUT_SECONDS = 10.0
_WHAT: dict[Capability, str] = {
    "nexudus": "Nexudus",
    "graph": "Graph",
    "public_url": "the public URL",
}


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


def _not_checked(settings: Settings, name: str, capability: Capability) -> Check:
    missing = ", ".join(settings.missing(capability))
    return Check(name, False, f"not checked: set {missing}")


# Configuration


def configuration_check(settings: Settings) -> Check:
    parts = [
        f"{_WHAT[capability]} needs {', '.join(missing)}"
        for capability in ("nexudus", "graph", "public_url")
        if (missing := settings.missing(capability))
    ]
    if parts:
        where = "in the environment or in .env"
        return Check("configuration", False, f"{'; '.join(parts)}: set them {where}")
    detail = "complete"
    if settings.bridge_admin_token is None:
        detail += " (BRIDGE_ADMIN_TOKEN unset: the admin API answers 503)"
    return Check("configuration", True, detail)


# Database


def database_check(settings: Settings) -> Check:
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    shown = make_url(settings.database_url).render_as_string(hide_password=True)
    # Doctor does not create the SQLite file (nor its folder, as `db.create` would).
    # On a fresh machine the default var/bridge.db does not exist yet; an empty file
    # made here would pass for "the database" and hide the likelier mistake: doctor
    # run from another working directory, or DATABASE_URL not what `bridge serve`
    # uses. The absolute path says which file was looked for; `bridge migrate` (or
    # `bridge serve`, which migrates SQLite itself) creates it.
    path = settings.sqlite_path
    if path is not None and not path.exists():
        return Check(
            "database",
            False,
            f"no database at {path.resolve()} yet: run `bridge migrate` (or start "
            "`bridge serve`, which creates it); check DATABASE_URL and the working "
            "directory if it should exist",
        )
    try:
        if path is not None or settings.database_url.startswith("sqlite"):
            engine = create_engine(settings.database_url)
        else:
            engine = create_engine(
                settings.database_url,
                connect_args={"connect_timeout": int(TIMEOUT_SECONDS)},
            )
    except Exception as error:  # e.g. the PostgreSQL driver is not installed
        return Check("database", False, f"{shown}: {_error_line(error)}")
    try:
        return _schema_check(engine, shown)
    finally:
        engine.dispose()


def _schema_check(engine: Engine, shown: str) -> Check:
    from sqlalchemy import text

    from bridge.store import migrate

    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        current = migrate.current(engine)
    except Exception as error:
        return Check(
            "database",
            False,
            f"{shown}: cannot connect or read it: {_error_line(error)}",
        )
    head = migrate.head()
    if current is None:
        return Check("database", False, f"{shown}: no schema yet: run `bridge migrate`")
    if current != head:
        return Check(
            "database",
            False,
            f"{shown}: schema at revision {current}, this version needs {head}: "
            "run `bridge migrate`",
        )
    return Check("database", True, f"{shown}: schema up to date (revision {head})")


def _error_line(error: Exception) -> str:
    from sqlalchemy.exc import DBAPIError

    cause: BaseException = error
    if isinstance(error, DBAPIError) and error.orig is not None:
        cause = error.orig
    text = str(cause).strip().splitlines()
    return one_line(f"{type(cause).__name__}: {text[0] if text else ''}")


# Upstreams


async def nexudus_check(settings: Settings) -> Check:
    from bridge.nexudus import (
        ConnectionFailed,
        NexudusClient,
        NexudusError,
        Throttled,
        Unauthorized,
        Unavailable,
    )

    user, password = settings.nexudus_username, settings.nexudus_password
    if user is None or password is None:
        return _not_checked(settings, "nexudus", "nexudus")
    url = settings.nexudus_api_url
    try:
        async with NexudusClient(
            url,
            user,
            password.get_secret_value(),
            settings.nexudus_client_id,
            timeout=TIMEOUT_SECONDS,
        ) as client:
            await client.check_login()
    except Unauthorized as error:
        fix = "check NEXUDUS_USERNAME and NEXUDUS_PASSWORD (an account without 2FA)"
        return Check("nexudus", False, f"{error}: {fix}")
    except ConnectionFailed as error:
        reason = connect_reason(error)
        fix = connect_hint(reason) or ": check NEXUDUS_API_URL"
        return Check("nexudus", False, f"could not connect to {url}: {reason}{fix}")
    except (Throttled, Unavailable) as error:
        return Check("nexudus", False, f"{error}: Nexudus is busy; try again later")
    except NexudusError as error:
        return Check("nexudus", False, f"{error}: check NEXUDUS_API_URL ({url})")
    return Check("nexudus", True, f"logged in to {url} as {user}")


async def graph_check(settings: Settings) -> Check:
    from bridge.graph._errors import GraphError, TransportFailure
    from bridge.graph.tokens import GraphTokens

    tenant, client_id = settings.graph_tenant_id, settings.graph_client_id
    secret = settings.graph_client_secret
    if tenant is None or client_id is None or secret is None:
        return _not_checked(settings, "graph", "graph")
    tokens = GraphTokens(
        tenant,
        client_id,
        secret.get_secret_value(),
        settings.graph_authority_url,
        settings.graph_scope,
        timeout=TIMEOUT_SECONDS,
    )
    try:
        await tokens.token()
    except TransportFailure as error:
        fix = f": check GRAPH_AUTHORITY_URL ({settings.graph_authority_url})"
        return Check(
            "graph",
            False,
            str(error) if "SSL_CERT_FILE" in str(error) else f"{error}{fix}",
        )
    except GraphError as error:
        return Check("graph", False, str(error))
    finally:
        tokens.close()
    authority = f"{settings.graph_authority_url}/{tenant}"
    return Check(
        "graph", True, f"token for {settings.graph_scope} issued by {authority}"
    )


# The public URL: what Graph does first when a subscription is created.


async def handshake_check(settings: Settings) -> Check:
    import httpx

    from bridge.upstream import tls_verify

    public = settings.bridge_public_url
    if public is None:
        return Check(
            "handshake",
            False,
            "not checked: set BRIDGE_PUBLIC_URL (the https base URL Graph reaches "
            "the bridge at)",
        )
    # Graph's own tokens have spaces and colons: this one checks the decoding too.
    token = f"bridge doctor: {secrets.token_urlsafe(12)}"
    async with httpx.AsyncClient(
        verify=tls_verify(), timeout=TIMEOUT_SECONDS, follow_redirects=False
    ) as client:
        # Graph validates both URLs when a subscription is created.
        for path in ("/graph/notifications", "/graph/lifecycle"):
            problem = await _handshake(client, public + path, token, public)
            if problem is not None:
                return Check("handshake", False, problem)
    return Check(
        "handshake",
        True,
        f"{public}/graph/notifications and /graph/lifecycle echo the validation token",
    )


async def _handshake(
    client: httpx.AsyncClient, url: str, token: str, public: str
) -> str | None:
    """None when `url` answers the validation handshake as Graph wants, else why."""
    import httpx

    where = f"POST {url}?validationToken=…"
    started = time.perf_counter()
    try:
        response = await client.post(url, params={"validationToken": token})
    except httpx.ConnectError as error:
        reason = connect_reason(error)
        hint = connect_hint(reason) or (
            ": check BRIDGE_PUBLIC_URL"
            if reason.startswith("cannot resolve")
            else f": is `bridge serve` running and reachable at {public}?"
        )
        return f"{where}: could not connect: {reason}{hint}"
    except httpx.TimeoutException:
        return f"{where}: no answer within {TIMEOUT_SECONDS:g}s (Graph gives up then)"
    except httpx.HTTPError as error:
        return f"{where}: {type(error).__name__}: {one_line(str(error))}"
    ms = round((time.perf_counter() - started) * 1000)
    status = response.status_code
    media = response.headers.get("content-type", "").split(";")[0].strip()
    answer = f"{where} answered {status} {media or '(no content type)'} in {ms} ms"
    if 300 <= status < 400:
        location = response.headers.get("location", "?")
        return (
            f"{answer}, redirecting to {location}: Graph does not follow redirects, "
            "set BRIDGE_PUBLIC_URL to the final base URL"
        )
    if status != 200:
        hint = ""
        if status == 404:
            hint = (
                ": is BRIDGE_PUBLIC_URL the bridge's base URL (without "
                "/graph/notifications), and is it the bridge that answers there?"
            )
        return f"{answer}: {one_line(response.text) or '(empty body)'}{hint}"
    if media != "text/plain":
        return f"{answer}: Graph needs text/plain"
    if response.text != token:
        return (
            f"{answer} but not with the token: {one_line(response.text)!r} "
            f"instead of {token!r}"
        )
    return None


# The command


def run_checks(settings: Settings) -> list[Check]:
    checks = [configuration_check(settings), database_check(settings)]

    async def upstreams() -> list[Check]:
        # Concurrently: a dead upstream costs one timeout, not three.
        return list(
            await asyncio.gather(
                nexudus_check(settings),
                graph_check(settings),
                handshake_check(settings),
            )
        )

    checks += asyncio.run(upstreams())
    hidden = _secrets(settings)
    for check in checks:
        check.detail = _scrub(check.detail, hidden)
    return checks


def _secrets(settings: Settings) -> list[str]:
    from sqlalchemy.engine import make_url

    values = [
        secret.get_secret_value()
        for secret in (
            settings.graph_client_secret,
            settings.nexudus_password,
            settings.bridge_admin_token,
        )
        if secret is not None
    ]
    try:
        password = make_url(settings.database_url).password
    except Exception:  # validated by the settings already; be safe anyway
        password = None
    if password:
        values.append(str(password))
    # Very short values would blank out ordinary words; they are not secrets anyway.
    return [value for value in values if len(value) >= 4]


def _scrub(text: str, hidden: Iterable[str]) -> str:
    for value in hidden:
        text = text.replace(value, "[secret]")
    return text


def _marks() -> tuple[str, str]:
    """✓ and ✗, or plain words where stdout cannot encode them."""
    try:
        "✓✗".encode(sys.stdout.encoding or "ascii")
    except (UnicodeEncodeError, LookupError):
        return "ok", "FAIL"
    return "✓", "✗"


def doctor_command(settings: Settings, args: argparse.Namespace) -> None:
    if settings.log_level != "debug":
        # The clients narrate token fetches at info; the check lines say it better.
        logging.getLogger().setLevel(logging.WARNING)
    checks = run_checks(settings)
    failed = [check for check in checks if not check.ok]
    if args.json:
        shown = {"ok": not failed, "checks": [asdict(check) for check in checks]}
        print(json.dumps(shown, indent=2))  # noqa: T201
    else:
        good, bad = _marks()
        width = max(len(check.name) for check in checks)
        for check in checks:
            mark = good if check.ok else bad
            print(f"{mark} {check.name:<{width}}  {check.detail}")  # noqa: T201
    if failed:
        names = ", ".join(check.name for check in failed)
        raise UserError(
            f"doctor: {len(failed)} of {len(checks)} checks failed ({names})"
        )


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    doctor = commands.add_parser(
        "doctor",
        help="check configuration, database, both upstream logins and the public URL",
        description=(
            "Check, one line each: the configuration (what is missing), the database "
            "(reachable, schema up to date; a missing SQLite file is reported, not "
            "created), the Nexudus login, a Graph token, and Graph's validation "
            "handshake against BRIDGE_PUBLIC_URL (from this machine: a firewall in "
            "front of Graph is not seen). Exits 0 only when every check passes."
        ),
    )
    doctor.add_argument(
        "--json",
        action="store_true",
        help='print {"ok": bool, "checks": [{"name", "ok", "detail"}]}',
    )
    doctor.set_defaults(handler=doctor_command)
