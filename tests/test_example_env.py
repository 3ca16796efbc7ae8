from __future__ import annotations

from pathlib import Path

from bridge.settings import Settings

EXAMPLE = Path(__file__).parents[1] / "config" / "example.env"


def test_example_env_documents_every_variable_with_its_default() -> None:
    lines = [line for line in EXAMPLE.read_text().splitlines() if "=" in line]
    documented = dict(line.split("=", 1) for line in lines if not line.startswith("#"))
    fields = {field.alias: field for field in Settings.model_fields.values()}
    assert set(documented) == set(fields)
    for name, value in documented.items():
        default = fields[name].default
        assert value == ("" if default is None else str(default)), name
