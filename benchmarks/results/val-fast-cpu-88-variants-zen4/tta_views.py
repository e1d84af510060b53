"""Raw script of record experiment-tta-views-fast-cpu-88-zen4: each run's last checkpoint evaluated on its
validation split with 6, 2, 3 and 1 test-time views (accuracy and seconds). Usage, from the repository root:
PYTHONPATH=. python benchmarks/results/val-fast-cpu-88-variants-zen4/tta_views.py RUN_DIR..."""

import json
import sys
import time
from pathlib import Path

import torch

from reglab.analysis.common import load_run
from reglab.data import DeviceLoader
from reglab.train.device import autocast_for
from reglab.train.evaluate import evaluate

SH = [[-1, -1], [1, 1]]
SETS = {
    "6 views (flip x 3 shifts)": (True, SH),
    "2 views (flip)": (True, []),
    "3 views (shifts, no flip)": (False, SH),
    "1 view": (False, []),
}
out = {}
for d in sys.argv[1:]:
    r = load_run(d, "last", ["data.dir=../shared/data"])
    ac = autocast_for(r.amp, torch.device("cpu"))
    loader = DeviceLoader(r.data.val, 1000, r.meta["mean"], r.meta["std"], channels_last=r.channels_last)
    row = {}
    for name, (tta, sh) in SETS.items():
        t = time.perf_counter()
        res = evaluate(r.model, loader, tta=tta, shifts=sh, autocast=ac)
        dt = time.perf_counter() - t
        row[name] = {"acc": res.acc, "s": round(dt, 2)}
    summ = json.loads((Path(d) / "summary.json").read_text())
    row["final_val_acc_in_run"] = summ.get("final_val_acc")
    out[d] = row
    print(d, json.dumps(row), flush=True)
json.dump(out, open("tta_views.json", "w"), indent=1)
