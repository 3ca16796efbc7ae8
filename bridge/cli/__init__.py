"""The `bridge` command. Thin: parse, load settings, call the service, report.

A user mistake (a bad flag, invalid configuration, an outdated schema) is one line on
stderr and a non-zero exit status, never a traceback. Each command lives in its own
module here, which registers its parser.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import NoReturn

from bridge import settings as settings_module
from bridge.cli import connections, doctor, replay, run
from bridge.cli.common import Command, UserError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def parser() -> argparse.ArgumentParser:
    root = _Parser(
        prog="bridge", description=__doc__.splitlines()[0] if __doc__ else ""
    )
    commands = root.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (run, connections, replay, doctor):
        module.register(commands)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    handler: Command = args.handler
    try:
        settings = settings_module.load()
        from bridge import logs

        logs.configure(settings.log_level, settings.log_format)
        handler(settings, args)
    except (UserError, settings_module.ConfigError) as problem:
        print(f"bridge: {problem}", file=sys.stderr)  # noqa: T201
        return 1
    except KeyboardInterrupt:
        return 130
    return 0
