"""Command groups of the ``reglab`` CLI beyond the core ones in :mod:`reglab.cli`.

Each module defines ``register(subparsers)`` that adds its sub-command(s); command functions import their
heavy dependencies lazily so ``reglab --help`` stays fast. Errors are raised as :class:`reglab.errors.UserError`
and presented by :func:`reglab.cli.main`.
"""

from __future__ import annotations

import importlib

MODULES = ("study", "sweep", "analyze", "export")


def register_all(sub) -> None:
    for name in MODULES:
        importlib.import_module(f"{__name__}.{name}").register(sub)
