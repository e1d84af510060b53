"""Test-only helpers: :mod:`tests.helpers.configs` (the tiny synthetic configs and study/sweep files),
:mod:`tests.helpers.events` (the test side of the event hooks), ``childsite/`` (the hooks themselves, loaded by
the reglab processes a test starts) and ``sweep_gate/`` (the killed-worker sweep test's hook)."""
