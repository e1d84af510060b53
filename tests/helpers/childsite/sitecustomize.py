"""Loaded at start-up by the reglab processes a test starts with this folder first on PYTHONPATH (see
``reglab_test_hooks.py`` and ``sweep_gate.py``); inert unless ``REGLAB_TEST_HOOKS`` or ``REGLAB_TEST_SWEEP_GATE``
is set. Test-only, never part of reglab."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys


def _chain() -> None:
    """Run the sitecustomize this file shadows, if any (e.g. a distribution's)."""
    here = os.path.dirname(os.path.abspath(__file__))
    rest = [p for p in sys.path if os.path.abspath(p or ".") != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", rest)
    if spec is not None and spec.loader is not None:
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)


_chain()
if os.environ.get("REGLAB_TEST_HOOKS"):
    import reglab_test_hooks

    reglab_test_hooks.install_from_env()
if os.environ.get("REGLAB_TEST_SWEEP_GATE"):
    import sweep_gate

    sweep_gate.install(os.environ["REGLAB_TEST_SWEEP_GATE"])
