#!/usr/bin/env bash
# Issue 8's GPU measurements, in stages that each fit a 10-minute command on a lent GPU machine (no network
# there: the data and airbench travel in .gpu/, which .git/info/exclude keeps out of commits).
#
# Here, once (needs a checkout of github.com/KellerJordan/cifar10-airbench, e.g. fetched to /tmp/airbench):
#   benchmarks/gpu_session.sh prep /tmp/airbench      # .gpu/cifar10.tar.xz + .gpu/airbench/
# There, from the repository root, with .gpu carried (OUT is where results go; default ./gpu-out):
#   benchmarks/gpu_session.sh tests      # tests/e2e/test_gpu.py, step throughput eager vs train.cuda_graph=true
#   benchmarks/gpu_session.sh muon       # airbench94 (25 runs) beside fast-gpu-94-muon (3 seeds)
#   benchmarks/gpu_session.sh graph      # airbench94 beside fast-gpu-94 with train.cuda_graph=true (2 seeds)
#   SEED=2 benchmarks/gpu_session.sh resnet18   # one more seed of fast-gpu-resnet18 (~4.5 min on an H100)
set -euo pipefail
cd "$(dirname "$0")/.."
stage=${1:?usage: benchmarks/gpu_session.sh prep AIRBENCH_CHECKOUT | tests | muon | graph | resnet18}
OUT=${OUT:-gpu-out}
PY=${PY:-python3}
export PYTHONUNBUFFERED=1 PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD
DATA=.gpu/data
case "$stage" in prep|tests|muon|graph|resnet18) ;;
  *) echo "unknown stage '$stage': prep, tests, muon, graph or resnet18" >&2; exit 2 ;;
esac

if [ "$stage" = prep ]; then
  ab=${2:?give the airbench checkout: benchmarks/gpu_session.sh prep /tmp/airbench}
  grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo /.gpu/ >> .git/info/exclude
  mkdir -p .gpu/airbench/legacy
  cp "$ab/legacy/airbench94.py" .gpu/airbench/legacy/
  src=${REGLAB_DATA:-../shared/data}
  tar -C "$src" -cJf .gpu/cifar10.tar.xz cifar-10-batches-py SHA256SUMS
  ls -l .gpu/cifar10.tar.xz
  exit 0
fi

mkdir -p "$OUT"
if [ ! -f "$DATA/SHA256SUMS" ]; then
  [ -f .gpu/cifar10.tar.xz ] || { echo "no .gpu/cifar10.tar.xz: run 'benchmarks/gpu_session.sh prep AIRBENCH' here first and carry .gpu" >&2; exit 2; }
  mkdir -p "$DATA" && tar -C "$DATA" -xJf .gpu/cifar10.tar.xz
  (cd "$DATA" && sha256sum -c --quiet SHA256SUMS)  # the same bytes as ../shared/data, or stop here
fi
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  $PY -c 'import torch, torchvision, sys; print(torch.__version__, torchvision.__version__, sys.version.split()[0])'
} | tee "$OUT/machine.txt"
case "$stage" in
  tests)
    $PY -m pytest tests/e2e/test_gpu.py -q -p no:cacheprovider 2>&1 | tee "$OUT/test_gpu.txt"
    for g in false true; do
      $PY benchmarks/train_throughput.py --recipe fast-gpu-94 --device cuda --seconds 1 --repeats 3 \
        --set train.cuda_graph=$g 2>&1 | tee "$OUT/throughput_cuda_graph_$g.txt"
    done ;;
  muon)
    $PY benchmarks/vs_airbench.py --airbench .gpu/airbench --recipe fast-gpu-94-muon --data-dir "$DATA" \
      --seeds 3 -o "$OUT/vs_airbench_muon.json" 2>&1 | tee "$OUT/vs_airbench_muon.txt" ;;
  graph)
    $PY benchmarks/vs_airbench.py --airbench .gpu/airbench --set train.cuda_graph=true --data-dir "$DATA" \
      --seeds 2 -o "$OUT/vs_airbench_graph.json" 2>&1 | tee "$OUT/vs_airbench_graph.txt" ;;
  resnet18)
    $PY benchmarks/time_to_accuracy.py fast-gpu-resnet18 --seeds 1 --first-seed "${SEED:-2}" --budget 300 \
      --data-dir "$DATA" -o "$OUT/fast-gpu-resnet18-seed${SEED:-2}.json" 2>&1 | tee "$OUT/resnet18.txt" ;;
esac
