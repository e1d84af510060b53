"""The Python API: what the ``reglab`` command line does, as functions for notebooks and scripts.

Every name here is also available from the package root (``import reglab; reglab.fit(...)``), imported on
first use so that ``import reglab`` stays cheap (no torch). The CLI (:mod:`reglab.cli`,
:mod:`reglab.commands`) calls these same functions, so a notebook and a shell get the same configs, run
directories and reports. A user's mistake raises :class:`reglab.UserError` with the message the CLI prints.

```python
import reglab

cfg = reglab.load_config("quick", ["train.epochs=1", "model.name=resnet20"])
result = reglab.fit(cfg)                      # trains; result.run_dir, result.summary, result.metrics
rows = reglab.read_metrics(result.run_dir)    # one dict per epoch
net = reglab.build_model("resnet20", num_classes=10)
```
Training is ``fit`` rather than ``train``: ``reglab.train`` is the training subpackage.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from .config import Config
from .errors import UserError

if TYPE_CHECKING:  # heavy modules, imported inside the functions
    import torch.nn as nn

    from .study import Outcome, Study
    from .train.loop import Result

PathLike = str | os.PathLike
PROGRESS = (None, "bar", "lines")


def _budget_shorthand(items: Sequence[str] | str) -> list[str]:
    """The overrides as a list (one string is one override); ``budget=NAME`` is short for ``run.budget=NAME``."""
    items = [items] if isinstance(items, str) else list(items)
    return [f"run.{item}" if item.startswith("budget=") else item for item in items]


def _data_dir(data_dir: PathLike | None) -> list[str]:
    return [f"data.dir={data_dir}"] if data_dir else []


def load_config(
    recipe: PathLike | None = "default", overrides: Sequence[str] = (), *, data_dir: PathLike | None = None
) -> Config:
    """A validated :class:`~reglab.config.Config`: a recipe (a name in ``recipes/`` or a YAML path, by default
    ``"default"``, the bf16 one: :func:`default_recipe` says which ``reglab train`` picks here; ``None``: the
    built-in defaults, no recipe) plus ``section.key=value`` overrides, as ``reglab train RECIPE KEY=VALUE``.

    Override values are YAML (``"model.channels=[32,64,128]"``); ``"budget=cpu"`` picks one of the recipe's
    budgets; ``data_dir`` is the same as ``"data.dir=..."``. Unknown keys and bad values raise
    :class:`reglab.UserError`.

    >>> cfg = reglab.load_config("quick", ["optim.lr=0.05", "train.epochs=2"])
    >>> cfg.optim.lr, cfg.train.epochs
    (0.05, 2)
    """
    from .config import load_config as _load

    return _load(recipe, [*_budget_shorthand(overrides), *_data_dir(data_dir)])


def default_recipe(overrides: Sequence[str] = (), *, data_dir: PathLike | None = None) -> str:
    """The recipe ``reglab train`` runs when none is named: ``"default"`` where the run would train in bf16
    autocast (``train.amp=auto`` on a CPU with AVX512-BF16 or AMX, an Ampere or later GPU), ``"default-fp32"``
    where it would train in fp32 (an AVX2-only CPU, an older GPU, or ``train.amp=off``). Each is the most accurate
    recipe measured to fit a 10-minute ``make train`` on a 2-core CPU of its kind (see their headers).
    Only ``train.amp`` and ``run.device`` among ``overrides`` count; a device that is not there (``run.device=cuda``
    on a CPU machine) gives ``"default"``, and training then says what is missing. Under torchrun across machines
    of different kinds, name the recipe: each rank picks for its own machine. :func:`load_config` with no recipe
    loads ``"default"`` whatever the machine.

    >>> reglab.default_recipe()   # on an AVX2-only laptop
    'default-fp32'
    """
    from .config import DEFAULT_FP32_RECIPE, DEFAULT_RECIPE
    from .train.device import autocast_for, select_device
    from .typedyaml import parse_override

    deciding = [o for o in _budget_shorthand(overrides) if parse_override(o)[0] in ("train.amp", "run.device")]
    cfg = load_config(DEFAULT_RECIPE, deciding, data_dir=data_dir)
    try:
        device = select_device(cfg.run.device)
    except UserError:
        return DEFAULT_RECIPE
    return DEFAULT_RECIPE if autocast_for(cfg.train.amp, device) is not None else DEFAULT_FP32_RECIPE


def load_run_config(
    run_dir: PathLike, overrides: Sequence[str] = (), *, data_dir: PathLike | None = None
) -> Config:
    """The saved config of a run directory, with overrides (e.g. ``train.epochs=N``), ready to continue with
    ``fit(cfg, resume=True)`` (``run.dir`` is set to ``run_dir``), as ``reglab train --resume RUN_DIR``.

    >>> cfg = reglab.load_run_config("runs/quick-20261122-141500", ["train.epochs=8"])
    >>> result = reglab.fit(cfg, resume=True)
    """
    from .train.rundir import load_run_config as _load

    cfg = _load(Path(run_dir), [*_budget_shorthand(overrides), *_data_dir(data_dir)])
    cfg.run.dir = str(run_dir)
    return cfg


def fit(
    config: Config,
    *,
    callbacks: Sequence[Any] = (),
    resume: bool = False,
    overwrite: bool = False,
    progress: str | None = None,
) -> "Result":
    """Train the run ``config`` describes (what ``reglab train`` does) and return a
    :class:`~reglab.train.loop.Result`: ``run_dir``, ``summary`` (the dict of summary.json) and ``metrics``
    (one dict per epoch).

    The run directory is ``config.run.dir`` (default ``runs/<name>-<timestamp>``); ``curves.png`` and the
    loggers of ``run.loggers`` are written as by the CLI. ``callbacks``: objects with any of
    ``on_start(run)``, ``on_step(run, step, loss, acc)``, ``on_epoch_end(run, row)`` (return True to stop),
    ``on_end(run, summary)``. ``progress``: None (silent), ``"bar"`` (a live bar on a terminal, else one line
    per epoch) or ``"lines"`` (one line per epoch), on stderr. ``resume``: continue ``config.run.dir`` (see
    :func:`load_run_config`); ``overwrite``: replace an existing run directory. ``config`` is validated again
    first, as ``reglab train`` validates its recipe and overrides, so changes made to it in Python
    (``cfg.optim.lr = -1``) raise :class:`reglab.UserError` before anything is read or written.

    >>> result = reglab.fit(reglab.load_config("quick", ["train.epochs=1"]), progress="lines")
    >>> result.summary["test_acc"], result.run_dir
    """
    from .track import CurvesCallback, Progress
    from .track.loggers import build_loggers
    from .train import run

    if progress not in PROGRESS:
        raise ValueError(f"progress must be one of {PROGRESS}, got {progress!r}")
    checked = _revalidate(config)
    shown = [Progress(quiet=progress == "lines")] if progress else []
    try:
        return run(
            checked,
            resume=resume,
            overwrite=overwrite,
            callbacks=[*shown, CurvesCallback(), *build_loggers(checked), *callbacks],
        )
    finally:  # the run directory chosen for it, so `fit(cfg, resume=True)` continues it, also after Ctrl-C;
        # not one a run that failed before writing anything removed again
        if config.run.dir is None and checked.run.dir is not None and Path(checked.run.dir).is_dir():
            config.run.dir = checked.run.dir


def _revalidate(config: Config) -> Config:
    """``config`` checked again as :func:`load_config` checks a recipe and overrides (key types, each section's
    ``validate``, the same messages as the CLI), since a Config is a plain mutable dataclass that may have been
    changed in Python since it was loaded (``cfg.optim.lr = -1``); returns the checked copy, values coerced as a
    recipe's would be (``cfg.optim.lr = 1`` -> 1.0). A mistake raises :class:`UserError` before anything runs."""
    from .config import config_from_dict

    if not isinstance(config, Config):
        raise UserError(
            f"fit() takes a Config (from reglab.load_config or reglab.load_run_config), got {type(config).__name__}."
        )
    return config_from_dict(_plain(config.to_dict()))


def _plain(value: Any) -> Any:
    """``value`` with what Python code naturally assigns made into what a recipe would hold: a path
    (``cfg.run.dir = tmp / "run"``) into its string, a NumPy scalar (``np.int64(3)``) into its Python number."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if type(value).__module__ == "numpy" and hasattr(value, "item"):
        return value.item()
    return value


def read_metrics(run_dir: PathLike) -> list[dict[str, Any]]:
    """The per-epoch rows of a run directory (metrics.jsonl; ``[]`` before the first epoch ends): ``epoch``,
    ``lr``, ``train_loss``, ``train_acc``, ``val_loss``, ``val_acc``, ``test_loss``, ``test_acc``, ... (a
    split's values are None in epochs that did not evaluate it).

    >>> rows = reglab.read_metrics("runs/quick-20261122-141500")
    >>> [r["val_acc"] for r in rows]
    """
    from .train.rundir import RunDir

    return RunDir.open(Path(run_dir)).read_metrics()


def read_summary(run_dir: PathLike) -> dict[str, Any] | None:
    """The final numbers of a run directory (summary.json: ``test_acc``, ``best_val_acc``, ``best_epoch``,
    ``params``, ``wall_time_s``, hardware, versions ...), or None while the run has not finished.

    >>> reglab.read_summary("runs/quick-20261122-141500")["test_acc"]
    """
    import json

    from .train.rundir import RunDir

    path = RunDir.open(Path(run_dir)).path / "summary.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError:
        raise UserError(f"{path} is not valid JSON; the file was edited or damaged.") from None


def build_model(name: str, num_classes: int = 10, **kwargs) -> "nn.Module":
    """A model of the zoo (``reglab models`` lists the names) with ``num_classes`` outputs; ``kwargs`` override
    the preset's builder options (``blocks``, ``channels``, ``preact``, ``drop_path`` ... for the CIFAR ResNets;
    the constructor's keywords for the others).

    >>> net = reglab.build_model("resnet20", num_classes=100, channels=[8, 16, 32])
    """
    from .models import create

    return create(name, num_classes, **kwargs)


def list_models() -> list[dict[str, Any]]:
    """Every preset as ``{"name", "params", "gflops", "aliases"}`` (forward GFLOPs of one 32x32 image; aliases:
    former names that still build it), computed on the meta device (no memory, no compute), as
    ``reglab models --json``.

    >>> [m["name"] for m in reglab.list_models()][:3]
    ['resnet18', 'resnet34', 'resnet50']
    """
    from .models import PRESETS, describe
    from .models.zoo import aliases_of

    return [{**describe(name), "aliases": aliases_of(name)} for name in PRESETS]


@dataclass
class StudyResult:
    """What :func:`run_study` did: the study directory, one outcome per run, the report's files (if written)."""

    dir: Path
    study: "Study"
    outcomes: list["Outcome"] = field(default_factory=list)
    report: dict[str, Path] | None = None

    @property
    def failed(self) -> list["Outcome"]:
        return [o for o in self.outcomes if o.status == "failed"]


def _check_parallel(parallel: int | None) -> None:
    if parallel is not None and parallel < 1:
        raise UserError(f"--parallel must be >= 1, got {parallel}.")


def prepare_study(
    study: PathLike,
    overrides: Sequence[str] = (),
    *,
    seeds: int | list[int] | None = None,
    only: Sequence[str] | None = None,
    parallel: int | None = None,
    output: PathLike | None = None,
) -> tuple["Study", Path]:
    """Load and expand a study file (validating every run's config) and choose its directory (default
    ``runs/studies/<name>``): :func:`run_study` up to the point of running. ``overrides``: ``key=value`` for
    every run, ``budget=NAME`` (or ``run.budget=NAME``) for the recipes' budget; ``seeds``, ``only`` (run
    names) and ``parallel`` replace the file's.

    >>> study, out = reglab.prepare_study("seed004_regularizers", ["budget=cpu"], seeds=2)
    >>> [run.key for run in study.runs]
    """
    from .study import load_study

    budget, rest = None, []
    for item in _budget_shorthand(overrides):
        if item.startswith("run.budget="):
            budget = item.split("=", 1)[1]
        elif "=" not in item:
            raise UserError(f"unexpected argument {item!r}: after the study file come key=value overrides.")
        else:
            rest.append(item)
    _check_parallel(parallel)
    if isinstance(seeds, int) and seeds < 1:
        raise UserError(f"--seeds must be >= 1, got {seeds}.")
    loaded = load_study(study, rest, budget=budget, seeds=seeds, only=list(only) if only else None)
    if parallel is not None:
        loaded.parallel = parallel
    return loaded, Path(output) if output else Path("runs") / "studies" / loaded.name


def run_study(
    study: "PathLike | Study",
    overrides: Sequence[str] = (),
    *,
    output: PathLike | None = None,
    seeds: int | list[int] | None = None,
    only: Sequence[str] | None = None,
    parallel: int | None = None,
    data_dir: PathLike | None = None,
    report: bool = True,
) -> StudyResult:
    """Run a study (a file or a name in ``studies/``, or a Study from :func:`prepare_study`), as
    ``reglab study``: each run a ``reglab train`` process with its own run directory under ``output``
    (default ``runs/studies/<name>``), ``parallel`` at a time; finished runs are skipped and interrupted ones
    resumed, so calling it again continues. Then, with ``report``, :func:`write_report` into ``output/report``.
    A failed run does not raise: see ``result.failed``.

    >>> res = reglab.run_study("seed004_regularizers", ["budget=smoke"], seeds=1)
    >>> res.dir, [o.status for o in res.outcomes]
    """
    from .study import Study
    from .study import run_study as _run

    if isinstance(study, Study):
        if overrides or seeds is not None or only:
            raise ValueError(
                "overrides, seeds and only apply when loading a study file; pass them to prepare_study"
            )
        _check_parallel(parallel)
        out = Path(output) if output else Path("runs") / "studies" / study.name
    else:
        study, out = prepare_study(study, overrides, seeds=seeds, only=only, parallel=parallel, output=output)
    outcomes = _run(study, out, parallel=parallel, data_dir=str(Path(data_dir).resolve()) if data_dir else None)
    files = write_report(out / "runs", out / "report", title=f"study {study.name}") if report else None
    return StudyResult(out, study, outcomes, files)


def write_report(
    dirs: PathLike | Sequence[PathLike],
    output: PathLike = "report",
    *,
    title: str | None = None,
    reference: str | None = None,
) -> dict[str, Path]:
    """Tables (Markdown, CSV), overlaid curves and an offline HTML page for study directories, run
    directories or folders holding them, as ``reglab report``; runs with the same ``run.name`` are seeds of
    one group, compared with ``reference`` (default: the study's, else the first group). Returns the files
    written by kind (``markdown``, ``html``, ``groups_csv``, ``curves``, ...).

    >>> files = reglab.write_report("runs/studies/seed004_regularizers", "out/report")
    >>> files["html"]
    """
    from .track.report import write_study_report as _write

    paths = [Path(dirs)] if isinstance(dirs, (str, os.PathLike)) else [Path(d) for d in dirs]
    return _write(paths, Path(output), title=title, reference=reference)
