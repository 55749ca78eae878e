#!/usr/bin/env bash
# Run the SuperLink on the server box, with TLS and SuperNode authentication (Ctrl-C stops it and its children).
# Usage: server/deploy/start_superlink.sh CERTS_DIR [--port 9091] [--host 0.0.0.0] [--state-dir DIR]
#   CERTS_DIR: from make_certificates.sh. Insecure mode needs an explicit --insecure instead of CERTS_DIR.
set -euo pipefail
if [[ $# -lt 1 ]]; then sed -n '3,4p' "$0" >&2; exit 2; fi
root="$(cd "$(dirname "$0")/../.." && pwd)"
fedtosc="$root/.venv/bin/fedtosc"; [[ -x "$fedtosc" ]] || fedtosc=fedtosc
if [[ "$1" == --insecure ]]; then exec "$fedtosc" deploy superlink "$@"; fi
certs="$1"; shift
exec "$fedtosc" deploy superlink --certs "$certs" "$@"
