"""`fedtosc knowledge build [key=value ...]` and `fedtosc knowledge inspect PATH`.

`build` prepares the experiment's teacher and its pre-stored knowledge (resumable: rerun it
after a kill and it continues); `inspect` says what a store is, from its header alone:
teacher, dataset fingerprint, codec and parameters, views per sample, size, and the fidelity
recorded at build.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from fedtosc.preflight import load_checked_config

__all__ = ["describe_store", "register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("knowledge", help="build or inspect a pre-stored knowledge store")
    actions = parser.add_subparsers(dest="action", required=True)
    build = actions.add_parser("build", help="run the teacher once over the distillation set and store its knowledge")
    build.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. teacher=clip knowledge=topk knowledge.k=3")
    build.set_defaults(func=_build)
    inspect = actions.add_parser("inspect", help="print what a knowledge store holds")
    inspect.add_argument("path", type=Path, help="a .safetensors knowledge store")
    inspect.add_argument("--json", action="store_true", help="print the description as JSON")
    inspect.set_defaults(func=_inspect)


def describe_store(store) -> dict:  # noqa: ANN001 - a KnowledgeStore
    """The facts `inspect` prints, as a JSON-able dict."""
    header = store.header
    return {
        "path": str(store.path),
        "teacher_id": header.teacher_id,
        "teacher": header.extra.get("teacher", {}),
        "dataset_fingerprint": header.dataset_fingerprint,
        "transform": header.transform,
        "codec": header.codec,
        "codec_params": header.codec_params,
        "error_bound": store.codec().error_bound(),
        "num_samples": header.num_samples,
        "num_classes": header.num_classes,
        "views": header.views,
        "view_seed": header.view_seed,
        "bytes_per_sample": store.bytes_per_sample,
        "file_bytes": store.path.stat().st_size,
        "fidelity": header.extra.get("fidelity", {}),
        "build_seconds": header.extra.get("build_seconds"),
        "format_version": header.format_version,
    }


def _build(args: argparse.Namespace) -> int:
    # The config is checked before torch loads: a bad one fails in well under a second.
    config = load_checked_config(args.overrides)
    if config.knowledge.mode != "prestored":
        print(f"fedtosc: knowledge.mode={config.knowledge.mode} uses no pre-stored knowledge; nothing to build",
              file=sys.stderr)
        return 2
    from fedtosc.experiment import prepare_experiment

    _, _, store = prepare_experiment(config)
    _print_description(describe_store(store))
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from fedtosc.knowledge.store import KnowledgeStore, KnowledgeStoreError

    try:
        store = KnowledgeStore.open(args.path)
    except KnowledgeStoreError as error:
        print(f"fedtosc: {error}", file=sys.stderr)
        return 1
    description = describe_store(store)
    if args.json:
        print(json.dumps(description, indent=2, sort_keys=True))
    else:
        _print_description(description)
    return 0


def _print_description(description: dict) -> None:
    teacher = description["teacher"]
    teacher_line = description["teacher_id"]
    if teacher:
        teacher_line += f" ({teacher.get('name')}, {teacher.get('params', 0):,} params, test accuracy {teacher.get('accuracy', float('nan')):.3f})"
    params = ", ".join(f"{key}={value}" for key, value in sorted(description["codec_params"].items()))
    fidelity = ", ".join(f"{key} {value:.4g}" for key, value in sorted(description["fidelity"].items())) or "not recorded"
    rows = [
        ("store", description["path"]),
        ("teacher", teacher_line),
        ("dataset fingerprint", description["dataset_fingerprint"]),
        ("transform", description["transform"]),
        ("codec", f"{description['codec']} ({params})"),
        ("error bound", description["error_bound"]),
        ("samples", f"{description['num_samples']:,} x {description['num_classes']} classes"),
        ("views per sample", _views_line(description["views"], description["view_seed"])),
        ("bytes per sample", f"{description['bytes_per_sample']:.1f} (file {description['file_bytes']:,} bytes)"),
        ("fidelity vs full soft labels", fidelity),
    ]
    if description["build_seconds"] is not None:
        rows.append(("build seconds", f"{description['build_seconds']:.1f}"))
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


def _views_line(views: int, view_seed: int) -> str:
    if views == 1:
        return "1 (the image as stored)"
    return f"{views} (view 0 as stored, then crop + flip views drawn with view_seed={view_seed}; params stored)"
