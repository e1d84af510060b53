"""Hyperparameter sweeps with Optuna: a base recipe plus a typed search space (:mod:`.spec`, :mod:`.space`), worker
processes sharing one study (:mod:`.runner`, :mod:`.workers`), the analysis, report and figures (:mod:`.analysis`,
:mod:`.report`, :mod:`.plots`) and the retrain of the best config on train+val (:mod:`.best`). See docs/sweeps.md.

In this package ``study`` is always Optuna's :class:`optuna.study.Study` (the trials of one sweep in its
storage), never a reglab study (:mod:`reglab.study`: a named set of runs over seeds)."""

from .space import Param
from .spec import Sweep, load_sweep, parse_sweep

__all__ = ["Param", "Sweep", "load_sweep", "parse_sweep"]
