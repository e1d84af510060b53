#!/bin/bash
# validation runs at 4 epochs, batch 1000 (45k/5k, bf16): Muon lr 0.17 / 0.34 against the recipe's 0.24, paired by seed
exec "$(dirname "$0")/val88.sh" "mlr017|optim.muon_lr=0.17" "mlr034|optim.muon_lr=0.34"
