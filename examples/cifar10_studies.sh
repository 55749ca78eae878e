#!/usr/bin/env bash
# The four federated CIFAR-10 studies at the committed budget (issue "Evidence"), one command each.
# Each is resumable: a rerun skips finished cells, so run them in parts and commit what landed.
#
#   bash examples/cifar10_studies.sh data-efficiency     # or snr-mismatch | bandwidth | knowledge-rate | rate-price | all
#   bash examples/cifar10_studies.sh data-efficiency seed=0   # extra overrides narrow the grid: one seed first
#   bash examples/cifar10_studies.sh data-efficiency --no-run # summarize the cells that have landed, run none
#
# The budget, the same for every cell of every study:
#   - the shipped ResNet-20 teacher (teachers/resnet20-cifar10.safetensors, trained on the whole
#     training split); no server share (server_fraction=0), so one knowledge store serves every seed;
#   - 4 clients, Dirichlet(0.5) over 4,000 training images (about 1,000 each), 2,000 test images,
#     both drawn once from fixed seeds (the same images for every seed and arm);
#   - 10 rounds of 2 local epochs, batch 32;
#   - a price of RATE nats per symbol sent (loss.rate_weight), 0.02 unless RATE is set: the highest
#     price that cost no accuracy in the rate-price study (results/studies/rate-price). Studies
#     at another price write to <study>-rate<RATE>/; at 0.2 (the default of LossConfig, set on
#     digits, where these studies were first run) to <study>/. The bandwidth study sets its own.
set -euo pipefail
cd "$(dirname "$0")/.."
FEDTOSC=${FEDTOSC:-.venv/bin/fedtosc}
BUDGET=(
  dataset=cifar10_folder "dataset.root=${CIFAR10_ROOT:-$HOME/.cache/fedtosc/cifar10}" teacher=resnet_cifar
  dataset.server_fraction=0 dataset.max_train_samples=4000 dataset.max_test_samples=2000
  federation.num_clients=4 federation.partitioner=dirichlet federation.dirichlet_alpha=0.5
  federation.rounds=10 train.local_epochs=2
)
OUT=results/studies
RATE=${RATE:-0.02}
if [ "$RATE" = 0.2 ]; then PRICED=(); TAG=""; else PRICED=("loss.rate_weight=$RATE"); TAG="-rate$RATE"; fi

study() {  # study <name> [extra overrides...]
  local name=$1
  shift
  "$FEDTOSC" study "$name" "${BUDGET[@]}" "$@" --output "$OUT/$name${SUFFIX:-}"
}

what=${1:-all}
shift || true
case "$what" in
  data-efficiency)
    SUFFIX=$TAG study data-efficiency "${PRICED[@]}" "$@"
    SUFFIX=-online-kd$TAG study data-efficiency method=online_kd dataset.label_fraction=0.1 "${PRICED[@]}" "$@" ;;
  snr-mismatch) SUFFIX=$TAG study snr-mismatch "${PRICED[@]}" "$@" ;;
  bandwidth)
    study bandwidth "$@"
    # The same grid where the receiver knows h: without CSI nothing crossed 0 dB block fading at
    # this budget (chance accuracy at every width), which left the rate question unanswered.
    SUFFIX=-csi study bandwidth channel.clients=rayleigh:0 "channel.eval_channels=[rayleigh]" "$@" --channel rayleigh ;;
  knowledge-rate) SUFFIX=$TAG study knowledge-rate "${PRICED[@]}" "$@" ;;
  rate-price) study rate-price "$@" ;;
  all)
    for name in rate-price data-efficiency snr-mismatch bandwidth knowledge-rate; do bash "$0" "$name" "$@"; done ;;
  *) echo "unknown study '$what': data-efficiency | snr-mismatch | bandwidth | knowledge-rate | rate-price | all" >&2; exit 2 ;;
esac
