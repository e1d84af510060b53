#!/usr/bin/env bash
# `make setup` (what `make train` does before training) on fresh clones of two commits, alternating, so the set-up
# time is compared inside one run on a shared machine. Cold caches for both installers each time (pip's wheel cache
# off, uv's cache lives in the venv and is removed). Prints each wall time and the first `import reglab, torch`.
#   bash benchmarks/setup_ab.sh OLD_REV NEW_REV [REPEATS=2] > benchmarks/results/setup-ab/NAME.txt
set -euo pipefail
old=${1:?old revision}; new=${2:?new revision}; repeats=${3:-2}
repo=$(cd "$(dirname "$0")/.." && pwd)
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores; old=$(git -C "$repo" rev-parse --short "$old") new=$(git -C "$repo" rev-parse --short "$new")"
for rep in $(seq "$repeats"); do
  for side in old new; do
    rev=${!side}; dir=$(mktemp -d /tmp/setup-ab-XXXX)
    git clone -q "$repo" "$dir" && git -C "$dir" checkout -q "$rev"
    start=$(date +%s.%N)
    PIP_NO_CACHE_DIR=1 make -s -C "$dir" setup >/dev/null 2>&1
    end=$(date +%s.%N)
    echo "$side rep$rep setup $(echo "$end - $start" | bc) s (load $(cut -d' ' -f1 /proc/loadavg))"
    start=$(date +%s.%N)
    "$dir/.venv/bin/python" -c "import reglab, torch"
    echo "$side rep$rep first import $(echo "$(date +%s.%N) - $start" | bc) s"
    rm -rf "$dir"
  done
done
echo finished
