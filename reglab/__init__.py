"""reglab: train, regularize, tune and study ResNets on CIFAR-10/100.

The Python API (the same functions the ``reglab`` command line calls; details in :mod:`reglab.api`)::

    import reglab

    cfg = reglab.load_config("quick", ["train.epochs=1"])   # recipe + key=value overrides -> Config
    result = reglab.fit(cfg)                               # train: result.run_dir, .summary, .metrics
    rows = reglab.read_metrics(result.run_dir)             # per-epoch dicts; read_summary(dir) -> dict
    net = reglab.build_model("resnet20", num_classes=10)   # a zoo model; list_models() lists them
    res = reglab.run_study("seed004_regularizers", ["budget=cpu"])   # -> res.dir, res.outcomes
    reglab.write_report(res.dir, "out/report")

``run_study`` takes a study file's name (studies/NAME.yaml: here a baseline and one run per regularizer) or path.

Names are imported on first use (PEP 562), so ``import reglab`` does not import torch.
"""

__version__ = "0.1.0"

# public name -> module that defines it (imported on first access)
_LAZY = {
    "load_config": "reglab.api",
    "default_recipe": "reglab.api",
    "load_run_config": "reglab.api",
    "fit": "reglab.api",
    "read_metrics": "reglab.api",
    "read_summary": "reglab.api",
    "build_model": "reglab.api",
    "list_models": "reglab.api",
    "prepare_study": "reglab.api",
    "run_study": "reglab.api",
    "write_report": "reglab.api",
    "StudyResult": "reglab.api",
    "Config": "reglab.config",
    "UserError": "reglab.errors",
    "Result": "reglab.train.loop",
}
__all__ = [*_LAZY, "__version__"]


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'reglab' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
