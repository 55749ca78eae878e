"""The `fedtosc` command: each subcommand lives in its own module under fedtosc/commands/."""

from __future__ import annotations

import argparse
import importlib
import sys

from fedtosc.config import ConfigError
from fedtosc.launch import FederationLaunchError

__all__ = ["main"]

# Adding a subcommand is adding its module here.
COMMANDS = ("fedtosc.commands.run", "fedtosc.commands.deploy", "fedtosc.commands.knowledge", "fedtosc.commands.study", "fedtosc.commands.report", "fedtosc.commands.train", "fedtosc.commands.teacher")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fedtosc", description="Federated task-oriented semantic communication.")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for module in COMMANDS:
        importlib.import_module(module).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as error:
        print(f"fedtosc: {error}", file=sys.stderr)
        return 2
    except FederationLaunchError as error:
        print(f"fedtosc: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        # Launchers clean up in `finally` blocks; finished rounds and knowledge chunks stay on disk.
        print("fedtosc: interrupted; every process it started has been stopped. Rerun to continue "
              "(`fedtosc run resume=<run dir>` for a federated run).", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
