"""`make demo` runs to the end, and shows what it promises."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_demo_runs_in_under_a_minute() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "demo"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    for shown in (
        "bridge serve is up",
        "subscription renewed (connection 2)",
        "subscription recreated (connection 1)",
        "notification duplicate",
        "clientState mismatch",
        "state                    disconnected",
    ):
        assert shown in out, out
    # Two records after connecting, one after the disconnect.
    counts = [
        len(re.findall(r"^  record \d+:", part, re.M)) for part in out.split("==")
    ]
    assert [n for n in counts if n] == [2, 2, 1], out
