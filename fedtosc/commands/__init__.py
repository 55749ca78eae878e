"""Subcommands of `fedtosc`: one module each, with `register(subparsers)` setting `func`."""
