#!/usr/bin/env bash
# docs/deployment.md's walkthrough on one machine, as one script: TLS certificates and node keys, each
# box's own folder from `fedtosc data split`, a SuperLink, three SuperNodes (a folder each, no
# partition-id) and one `fedtosc deploy run`, all on 127.0.0.1. tests/test_deployment_node_data.py
# runs it, and checks that docs/deployment.md shows exactly the lines between the walkthrough markers.
# Usage: examples/deploy_loopback.sh WORK_DIR [OVERRIDE...]
#   WORK_DIR  receives everything: certs/ keys/ nodes/ (the boxes' data) node<i>.toml, daemon state,
#             logs (*.log), the boxes' caches (cache/) and the run directory WORK_DIR/run
#   OVERRIDE  more Hydra overrides for `fedtosc deploy run`, e.g. federation.rounds=2
#   PORT, RUNTIME_PORT (environment): the SuperLink's port (9091); box i's runtime-port is RUNTIME_PORT+i (9094+i)
set -euo pipefail
if [[ $# -lt 1 ]]; then sed -n '6,10p' "$0" >&2; exit 2; fi
cd "$(dirname "$0")/.."
if [[ -x .venv/bin/fedtosc ]]; then PATH="$PWD/.venv/bin:$PATH"; fi
mkdir -p "$1"; work="$(cd "$1" && pwd)"; shift
port="${PORT:-9091}"; runtime_port="${RUNTIME_PORT:-9094}"
daemons=()
# However the script ends: each `fedtosc deploy` daemon stops everything it started.
trap 'kill "${daemons[@]}" 2>/dev/null || true; wait' EXIT

# >>> walkthrough: docs/deployment.md shows exactly these lines
# 1. The CA and the SuperLink's certificate (for 127.0.0.1), and a key pair per box
server/deploy/make_certificates.sh "$work/certs" 127.0.0.1
fedtosc deploy node-key --out "$work/keys" node0 node1 node2

# 2. Each box's own data: the clients' shares of the run's dataset (different class mixes, 10% labelled),
#    split with the run's own overrides, so no box holds a sample of the server's transfer set
run=(federation.num_clients=3 federation.partitioner=dirichlet "channel.clients='awgn:5,rayleigh:10,rician:15'")
fedtosc data split --out "$work/nodes" "${run[@]}"

# 3. The SuperLink (in the background, its log in $work/superlink.log), then the boxes' keys
server/deploy/start_superlink.sh "$work/certs" --host 127.0.0.1 --port "$port" \
    --state-dir "$work/superlink" > "$work/superlink.log" 2>&1 &
daemons+=($!)
fedtosc deploy register --superlink "127.0.0.1:$port" --root-certificates "$work/certs/ca.crt" \
    --cli-home "$work/cli" "$work"/keys/node{0,1,2}.pub

# 4. A node file per box (paths relative to the file; a distinct runtime-port each), then its SuperNode
channels=(awgn:5 rayleigh:10 rician:15)
for i in 0 1 2; do
  cat > "$work/node$i.toml" <<EOF
superlink = "127.0.0.1:$port"
root-certificates = "certs/ca.crt"
private-key = "keys/node$i"
runtime-port = $((runtime_port + i))

[node-config]
data-path = "nodes/node$i"
channel = "${channels[i]}"
cache-dir = "cache/node$i"
EOF
done
echo 'share-class-counts = true' >> "$work/node0.toml"  # box 0 lets the server see its class counts
for i in 0 1 2; do
  clients/deploy/start_supernode.sh "$work/node$i.toml" --state-dir "$work/state/node$i" > "$work/node$i.log" 2>&1 &
  daemons+=($!)
done

# 5. The run: teacher and transfer-set knowledge on the server box, then the rounds; results in $work/run
fedtosc deploy run --superlink "127.0.0.1:$port" --root-certificates "$work/certs/ca.crt" --cli-home "$work/cli" \
    "${run[@]}" output_dir="$work/run" "$@"
# <<< walkthrough
