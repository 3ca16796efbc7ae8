"""What `bridge serve` imports before it listens: nothing it can do without.

Graph gives a notification URL 10 s to answer its first validation request, and a
PaaS cold start spends that budget; bench/coldstart.py measures it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.processes import run_bridge

# Everything `bridge serve` does before uvicorn listens.
SERVE_PATH = """
import sys
import bridge.cli
from bridge.app import create_app
from bridge.cli.common import open_database
from bridge.settings import load
from bridge.sync.upstreams import Upstreams

settings = load()
engine = open_database(settings)
create_app(settings, engine, Upstreams.from_settings(settings))
print(" ".join(sorted(name for name in {NAMES} if name in sys.modules)))
"""
# Needed later, or for other commands: the first token request, `bridge migrate`.
LATER = ("alembic", "msal")


def test_a_start_on_a_migrated_database_imports_neither_alembic_nor_msal(
    tmp_path: Path,
) -> None:
    assert run_bridge("migrate", cwd=tmp_path).returncode == 0
    env = {
        **os.environ,
        # Configured, so that the upstream clients are built as in production.
        "GRAPH_TENANT_ID": "tenant",
        "GRAPH_CLIENT_ID": "client",
        "GRAPH_CLIENT_SECRET": "secret",
        "NEXUDUS_USERNAME": "user",
        "NEXUDUS_PASSWORD": "password",
    }
    loaded = subprocess.run(
        [sys.executable, "-c", SERVE_PATH.replace("{NAMES}", repr(LATER))],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert loaded.stdout.split() == []
