#!/bin/bash
# validation runs at 4 epochs, batch 1000 (45k/5k, bf16): baseline vs cheaper variants, paired by seed.
# Arguments: variants as "NAME|OVERRIDES" (default: the three of record experiment-fast-cpu-88-variants-zen4).
[ $# -gt 0 ] || set -- "base|" "c32|model.channels=[32,192,192]" "ls01|train.label_smoothing=0.1"
cd /work/main
export REGLAB_DATA=/work/shared/data PYTHONDONTWRITEBYTECODE=1
for seed in 0 1; do
  for v in "$@"; do
    name=${v%%|*}; ov=${v#*|}
    d=/work/bench/val88/$name-s$seed
    /usr/bin/time -f "%e s wall" .venv/bin/python -m reglab train default data.val_size=5000 train.batch_size=1000 train.epochs=4 run.seed=$seed $ov run.dir=$d --quiet > $d.log 2>&1
    echo "$name seed $seed: $(tail -3 $d.log | tr '\n' ' ')"
  done
done
