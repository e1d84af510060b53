#!/bin/bash
# validation runs at 4 epochs, batch 1000 (45k/5k, bf16): Muon lr 0.17 / 0.34 against the recipe's 0.24, paired by seed
cd /work/main
export REGLAB_DATA=/work/shared/data PYTHONDONTWRITEBYTECODE=1
for seed in 0 1; do
  for v in "mlr017|optim.muon_lr=0.17" "mlr034|optim.muon_lr=0.34"; do
    name=${v%%|*}; ov=${v#*|}
    d=/work/bench/val88/$name-s$seed
    /usr/bin/time -f "%e s wall" .venv/bin/python -m reglab train default data.val_size=5000 train.batch_size=1000 train.epochs=4 run.seed=$seed $ov run.dir=$d --quiet > $d.log 2>&1
    echo "$name seed $seed: $(tail -3 $d.log | tr '\n' ' ')"
  done
done
