"""`fedtosc deploy ...`: run fedtosc on real machines (SuperLink on a server box, SuperNodes on edge boxes).

certs / node-key make the TLS and SuperNode-auth material; superlink / supernode run the Flower
daemons in the foreground; register admits a node's public key; prepare / run start an experiment.
TLS and SuperNode authentication are on unless --insecure is given. Walkthrough: docs/deployment.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["prepare_run", "register"]

_STATE_ROOT = Path("~/.fedtosc/deploy")
_SUPERLINK_NAME = "fedtosc"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("deploy", help="deploy on real machines: certificates, SuperLink, SuperNodes, runs")
    actions = parser.add_subparsers(dest="action", required=True)

    certs = actions.add_parser("certs", help="create a CA and the SuperLink's TLS certificate")
    certs.add_argument("--out", type=Path, required=True, help="folder for ca.crt, ca.key, server.pem, server.key")
    certs.add_argument("--host", action="append", required=True, help="a name or IP edge boxes use to reach the SuperLink (repeatable)")
    certs.add_argument("--days", type=int, default=365)
    certs.set_defaults(func=_certs)

    node_key = actions.add_parser("node-key", help="create SuperNode key pairs (private key for the edge box, .pub to register)")
    node_key.add_argument("--out", type=Path, required=True)
    node_key.add_argument("names", nargs="+", help="one key pair per name, e.g. node0 node1 node2")
    node_key.set_defaults(func=_node_key)

    superlink = actions.add_parser("superlink", help="run flower-superlink on the server box (foreground)")
    superlink.add_argument("--certs", type=Path, help="folder from `fedtosc deploy certs` (required unless --insecure)")
    superlink.add_argument("--host", default="0.0.0.0", help="interface to listen on (default: all)")
    superlink.add_argument("--port", type=int, default=9091, help="the one HTTP port for Fleet, Control and Runtime APIs")
    superlink.add_argument("--state-dir", type=Path, default=_STATE_ROOT / "superlink",
                           help="FLWR_HOME and the SuperLink database (node registrations survive restarts)")
    _add_insecure(superlink)
    superlink.set_defaults(func=_superlink)

    supernode = actions.add_parser("supernode", help="run flower-supernode on an edge box (foreground)")
    supernode.add_argument("node_file", type=Path, help="a node file, see clients/deploy/node0.toml")
    supernode.add_argument("--state-dir", type=Path, help="FLWR_HOME for this node (default ~/.fedtosc/deploy/supernode-<node file name>)")
    _add_insecure(supernode)
    supernode.set_defaults(func=_supernode)

    for name, help_text, func in (
        ("register", "admit SuperNode public keys to the federation (run on the server box)", _register),
        ("run", "prepare the run dir on the server box, then `flwr run` it on the federation", _run),
    ):
        action = actions.add_parser(name, help=help_text)
        action.add_argument("--superlink", default="127.0.0.1:9091", help="host:port of the SuperLink")
        action.add_argument("--root-certificates", type=Path, help="ca.crt (required unless --insecure)")
        action.add_argument("--cli-home", type=Path, default=_STATE_ROOT / "cli", help="FLWR_HOME for the flwr CLI")
        _add_insecure(action)
        action.set_defaults(func=func)
    actions.choices["register"].add_argument("public_keys", nargs="+", type=Path, help="the nodes' .pub files")
    actions.choices["register"].add_argument("--wait-s", type=float, default=60.0,
                                             help="wait this long for the SuperLink to answer first (default 60)")
    actions.choices["run"].add_argument("overrides", nargs="*", help="Hydra overrides, as for `fedtosc run`")

    prepare = actions.add_parser("prepare", help="write the run dir's config.yaml and build teacher + knowledge (server box)")
    prepare.add_argument("overrides", nargs="*", help="Hydra overrides, as for `fedtosc run`")
    prepare.set_defaults(func=_prepare)


def _add_insecure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--insecure", action="store_true",
                        help="plain HTTP and no SuperNode authentication: trusted test networks only")


def _certs(args: argparse.Namespace) -> int:
    from fedtosc.deployment import make_certificates

    files = make_certificates(args.out, args.host, args.days)
    print(f"CA certificate (copy to every edge box): {files.ca_certificate}")
    print(f"SuperLink certificate and key: {files.server_certificate}, {files.server_key}")
    print(f"CA key (keep offline): {files.ca_key}")
    return 0


def _node_key(args: argparse.Namespace) -> int:
    from fedtosc.deployment import make_node_key

    for name in args.names:
        private_key, public_key = make_node_key(args.out, name)
        print(f"{name}: private key {private_key} (edge box only), public key {public_key} (register on the server)")
    return 0


def _superlink(args: argparse.Namespace) -> int:
    from fedtosc.deployment import run_foreground, superlink_command

    if not args.insecure and args.certs is None:
        raise SystemExit("fedtosc deploy superlink: --certs DIR is required (or --insecure for a trusted test network)")
    state_dir = args.state_dir.expanduser().resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    command = superlink_command(
        None if args.insecure else args.certs.expanduser().resolve(),
        host=args.host, port=args.port, node_auth=not args.insecure, database=str(state_dir / "superlink.db"),
    )
    return run_foreground(command, state_dir)


def _supernode(args: argparse.Namespace) -> int:
    from fedtosc.deployment import check_node_data, load_node_settings, run_foreground, supernode_command

    settings = load_node_settings(args.node_file, insecure=args.insecure)
    if summary := check_node_data(settings):  # bad data stops the box here, before it joins a round
        print(summary, flush=True)
    state_dir = args.state_dir or _STATE_ROOT / f"supernode-{args.node_file.stem}"
    return run_foreground(supernode_command(settings), state_dir.expanduser().resolve())


def _cli_home(args: argparse.Namespace) -> Path:
    from fedtosc.deployment import write_cli_config

    if not args.insecure and args.root_certificates is None:
        raise SystemExit("--root-certificates ca.crt is required (or --insecure for a trusted test network)")
    cli_home = args.cli_home.expanduser().resolve()
    write_cli_config(cli_home, _SUPERLINK_NAME, args.superlink, None if args.insecure else args.root_certificates)
    return cli_home


def _register(args: argparse.Namespace) -> int:
    from fedtosc.deployment import register_nodes
    from fedtosc.launch import wait_healthy

    cli_home = _cli_home(args)
    wait_healthy(args.superlink, args.wait_s, ca_certificate=None if args.insecure else args.root_certificates,
                 hint="is it running, on that port, with this CA?")
    for public_key, node_id in register_nodes(cli_home, _SUPERLINK_NAME, args.public_keys).items():
        print(f"registered {public_key} as node {node_id}")
    return 0


def _prepare(args: argparse.Namespace) -> int:
    run_dir, _ = prepare_run(args.overrides)
    print(f"run directory: {run_dir}")
    return 0


def prepare_run(overrides: list[str]) -> tuple[Path, bool]:
    """The server box's half of a run: resolved config, teacher and knowledge store, all local to it.

    Returns the run directory and whether the run resumes (`resume=<run dir>`, as in `fedtosc run`).
    """
    from fedtosc.deployment import deployment_overrides
    from fedtosc.experiment import prepare_experiment
    from fedtosc.run_dir import open_run, project_root

    config, run_dir, resuming = open_run(deployment_overrides(overrides), project_root())
    prepare_experiment(config)
    return run_dir, resuming


def _run(args: argparse.Namespace) -> int:
    from fedtosc.deployment import flwr_run
    from fedtosc.launch import FederationLaunchError
    from fedtosc.results import print_summary, read_results
    from fedtosc.run_dir import project_root
    from fedtosc.run_failure import describe_ended_run

    cli_home = _cli_home(args)
    run_dir, resuming = prepare_run(args.overrides)
    print(f"{'resuming run' if resuming else 'run directory'}: {run_dir}")
    exit_code = flwr_run(project_root(), cli_home, _SUPERLINK_NAME, run_dir, resume=resuming)
    if exit_code != 0 or not (run_dir / "results.json").is_file():
        log_hint = "the SuperLink's log"
        if exit_code != 0:  # what `flwr run` does when the SuperLink goes away mid-run
            log_hint += f"; `flwr run` exited with code {exit_code}: was the SuperLink stopped or restarted?"
        raise FederationLaunchError(describe_ended_run(run_dir, log_hint, "fedtosc deploy run"))
    print_summary(read_results(run_dir), run_dir)
    return 0
