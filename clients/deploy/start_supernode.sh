#!/usr/bin/env bash
# Run this edge box's SuperNode from its node file (Ctrl-C stops it and its children).
# Usage: clients/deploy/start_supernode.sh NODE_FILE [--state-dir DIR]   (e.g. clients/deploy/node0.toml)
#   TLS and SuperNode authentication are on; --insecure (plain HTTP, no node key) must be asked for.
set -euo pipefail
if [[ $# -lt 1 ]]; then sed -n '3,4p' "$0" >&2; exit 2; fi
root="$(cd "$(dirname "$0")/../.." && pwd)"
fedtosc="$root/.venv/bin/fedtosc"; [[ -x "$fedtosc" ]] || fedtosc=fedtosc
exec "$fedtosc" deploy supernode "$@"
