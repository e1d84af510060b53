#!/usr/bin/env bash
# Issue 8's GPU measurements, in stages that each fit a 10-minute command on a lent GPU machine (no network
# there: the data and airbench travel in .gpu/, which .git/info/exclude keeps out of commits).
#
# Here, once (needs a checkout of github.com/KellerJordan/cifar10-airbench, e.g. fetched to /tmp/airbench):
#   benchmarks/gpu_session.sh prep /tmp/airbench   # .gpu/pack/part0, part1 (CIFAR-10, 44 MiB each), .gpu/airbench/
# The device tool carries at most 64 MiB a call, so the data travels in two calls (benchmarks/gpu_pack_data.py),
# and it removes between calls the ignored paths a call does not carry, so every stage keeps what arrived in
# /tmp/reglab-gpu on the machine and takes back from there what a later call did not bring:
#   call 1: carry .gpu/pack/part0 and .gpu/airbench, run `benchmarks/gpu_session.sh tests` (needs no data);
#   call 2, while the machine is warm: carry .gpu/pack/part1, run the stages that need data (muon graph ...).
# There, from the repository root (OUT is where results go; default ./gpu-out); several stages may follow:
#   benchmarks/gpu_session.sh tests      # tests/e2e/test_gpu.py, step throughput eager vs train.cuda_graph=true
#   benchmarks/gpu_session.sh muon       # airbench94 (25 runs) beside fast-gpu-94-muon (3 seeds)
#   benchmarks/gpu_session.sh graph      # airbench94 beside fast-gpu-94 with train.cuda_graph=true (2 seeds)
#   SEED=2 benchmarks/gpu_session.sh resnet18   # one more seed of fast-gpu-resnet18 (~3 min on an H200)
set -euo pipefail
cd "$(dirname "$0")/.."
stage=${1:?usage: benchmarks/gpu_session.sh prep AIRBENCH_CHECKOUT | STAGE... (tests, muon, graph, resnet18)}
OUT=${OUT:-gpu-out}
PY=${PY:-}  # default: python3 there (the image's torch); prep, here, prefers the project's venv (Pillow)
export PYTHONUNBUFFERED=1 PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD
KEEP=/tmp/reglab-gpu  # on the GPU machine: outlives the calls of one warm machine; the checkout's .gpu/ does not
DATA=$KEEP/data       # rebuilt and checked once per machine
if [ "$stage" != prep ]; then
  for s in "$@"; do
    case "$s" in tests|muon|graph|resnet18) ;;
      prep) echo "prep runs alone, here: benchmarks/gpu_session.sh prep AIRBENCH_CHECKOUT" >&2; exit 2 ;;
      *) echo "unknown stage '$s': tests, muon, graph or resnet18 (prep runs alone)" >&2; exit 2 ;;
    esac
  done
fi

if [ "$stage" = prep ]; then
  ab=${2:?give the airbench checkout: benchmarks/gpu_session.sh prep /tmp/airbench}
  grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo /.gpu/ >> .git/info/exclude
  mkdir -p .gpu/airbench/legacy
  cp "$ab/legacy/airbench94.py" .gpu/airbench/legacy/
  src=${REGLAB_DATA:-../shared/data}
  if [ -z "$PY" ]; then if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi; fi
  rm -rf .gpu/pack
  $PY benchmarks/gpu_pack_data.py pack "$src" .gpu/pack --parts 2
  du -sh .gpu/pack/* .gpu/airbench
  exit 0
fi

PY=${PY:-python3}
mkdir -p "$OUT" "$KEEP/pack" .gpu/pack
for p in .gpu/pack/part*; do if [ -d "$p" ]; then cp -r "$p" "$KEEP/pack/"; fi; done
if [ -d .gpu/airbench ]; then cp -r .gpu/airbench "$KEEP/"; fi
for p in "$KEEP"/pack/part*; do if [ -d "$p" ] && [ ! -e ".gpu/pack/${p##*/}" ]; then cp -r "$p" .gpu/pack/; fi; done
if [ ! -e .gpu/airbench ] && [ -d "$KEEP/airbench" ]; then cp -r "$KEEP/airbench" .gpu/; fi
if [ ! -f "$DATA/SHA256SUMS" ] && [ "$*" != tests ]; then  # unpack writes SHA256SUMS last, once every file matched
  compgen -G '.gpu/pack/part*' > /dev/null || { echo "no .gpu/pack/part*: run 'benchmarks/gpu_session.sh prep AIRBENCH' here first and carry its parts" >&2; exit 2; }
  $PY benchmarks/gpu_pack_data.py unpack .gpu/pack "$DATA"  # byte-identical to ../shared/data, or stop here
fi
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  $PY -c 'import torch, torchvision, sys; print(torch.__version__, torchvision.__version__, sys.version.split()[0])'
} | tee "$OUT/machine.txt"
for stage in "$@"; do
case "$stage" in
  tests)
    $PY -m pytest tests/e2e/test_gpu.py -q -p no:cacheprovider 2>&1 | tee "$OUT/test_gpu.txt" || failed="tests/e2e/test_gpu.py"
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
done
if [ -n "${failed:-}" ]; then echo "FAILED: $failed (the other stages ran)" >&2; exit 1; fi
