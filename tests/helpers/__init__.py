"""Test-only helpers: :mod:`helpers.events` (the test side of the event hooks) and ``childsite/`` (the hooks
themselves, loaded by the reglab processes a test starts)."""
