#!/usr/bin/env bash
# The knowledge build on Ray with a GPU actor, against the local CPU build of the same store.
# Run on a machine with a GPU and this project installed (Ray included):
#
#   bash benchmarks/gpu_ray_build.sh <CIFAR-10 image folders> [train images, default 1000]
#
# It starts a one-node Ray (4 CPUs, 1 GPU) on 127.0.0.1:6390, builds the top-5 store of the shipped
# ResNet-20 teacher locally on the CPU and then on Ray with device=cuda (one GPU actor: Ray Data's
# log shows the GPU requested), and compares the two stores tensor by tensor. Stops its Ray after.
set -euo pipefail
root=$(cd "$1" && pwd)
images=${2:-1000}
work=$(mktemp -d)
common=(dataset=cifar10_folder "dataset.root=$root" "dataset.cache_dir=$work/datasets" dataset.server_fraction=0
        "dataset.max_train_samples=$images" dataset.max_test_samples=500 teacher=resnet_cifar)
python -m fedtosc.cli knowledge build "${common[@]}" device=cpu "knowledge.cache_dir=$work/local"
ray start --head --node-ip-address=127.0.0.1 --port=6390 --num-cpus=4 --num-gpus=1 --include-dashboard=false --disable-usage-stats
trap 'ray stop --force >/dev/null 2>&1' EXIT
python -m fedtosc.cli knowledge build "${common[@]}" device=cuda ray.address=127.0.0.1:6390 "knowledge.cache_dir=$work/ray" 2>&1 \
  | grep -E "GPU|store |build seconds"
python - "$work" <<'PY'
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from fedtosc.knowledge.store import KnowledgeStore

work = Path(sys.argv[1])
[local], [on_ray] = (list((work / name).glob("*.safetensors")) for name in ("local", "ray"))
first, second = KnowledgeStore.open(local), KnowledgeStore.open(on_ray)
p, q = first.decode(first.index).probs, second.decode(second.index).probs
a, b = load_file(str(local)), load_file(str(on_ray))
print(f"same store name: {local.name == on_ray.name}; bit-equal tensors: {all(torch.equal(a[k], b[k]) for k in a)}; "
      f"largest soft-label difference {float((p - q).abs().max()):.2e}; rows equal {float((p == q).all(1).float().mean()):.4f}; "
      f"argmax agreement {float((p.argmax(1) == q.argmax(1)).float().mean()):.4f}")
PY
