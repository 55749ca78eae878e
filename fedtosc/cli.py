"""The `fedtosc` command: each subcommand lives in its own module under fedtosc/commands/.

A user error (a bad key or value, a missing dataset, teacher weights or store) prints one line
naming what to fix and exits 2; `fedtosc --debug ...` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from fedtosc.launch import FederationLaunchError

__all__ = ["main"]

# Adding a subcommand is adding its module here.
COMMANDS = ("fedtosc.commands.run", "fedtosc.commands.deploy", "fedtosc.commands.data", "fedtosc.commands.knowledge", "fedtosc.commands.study", "fedtosc.commands.report", "fedtosc.commands.train", "fedtosc.commands.teacher")

# (module, class) of the errors whose message tells the user what to fix. Looked up only in
# modules already imported, so the CLI never loads torch to catch an error: a class whose module
# was never imported cannot have been raised.
USER_ERRORS = (
    ("fedtosc.config", "ConfigError"),
    ("fedtosc.data.catalog", "DatasetError"),
    ("fedtosc.models.teachers", "TeacherError"),
    ("fedtosc.knowledge.store", "KnowledgeStoreError"),
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fedtosc", description="Federated task-oriented semantic communication.")
    parser.add_argument("--debug", action="store_true", help="show the Python traceback of an error")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for module in COMMANDS:
        importlib.import_module(module).register(subparsers)
    return parser


def _is_user_error(error: Exception) -> bool:
    loaded = [getattr(sys.modules[module], name) for module, name in USER_ERRORS if module in sys.modules]
    return isinstance(error, tuple(loaded))


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        # Launchers clean up in `finally` blocks; finished rounds and knowledge chunks stay on disk.
        print("fedtosc: interrupted; every process it started has been stopped. Rerun to continue "
              "(`fedtosc run resume=<run dir>` for a federated run).", file=sys.stderr)
        return 130
    except FederationLaunchError as error:
        if args.debug:
            raise
        print(f"fedtosc: {error}", file=sys.stderr)
        return 1
    except Exception as error:
        if args.debug or not _is_user_error(error):
            raise
        # One line: a multi-line message (Hydra's) is joined, so the fix is on the line with the key.
        print("fedtosc: " + " ".join(line.strip() for line in str(error).splitlines() if line.strip()), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
