#!/usr/bin/env bash
# Create the federation CA and the SuperLink's TLS certificate (EC P-384).
# Usage: server/deploy/make_certificates.sh OUT_DIR HOST [HOST...]
#   HOST: each DNS name or IP that edge boxes use to reach the SuperLink (loopback is always added).
set -euo pipefail
if [[ $# -lt 2 ]]; then sed -n '3,4p' "$0" >&2; exit 2; fi
root="$(cd "$(dirname "$0")/../.." && pwd)"
fedtosc="$root/.venv/bin/fedtosc"; [[ -x "$fedtosc" ]] || fedtosc=fedtosc
out="$1"; shift
hosts=(); for host in "$@"; do hosts+=(--host "$host"); done
exec "$fedtosc" deploy certs --out "$out" "${hosts[@]}"
