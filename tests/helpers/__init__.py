"""Test-only helpers: :mod:`tests.helpers.cifar_files` (fake CIFAR-10/100 files in the official layout),
:mod:`tests.helpers.configs` (the tiny synthetic configs and study/sweep files), :mod:`tests.helpers.ddp` (the
DDP tests' shared configs and torchrun environment), :mod:`tests.helpers.processes` (running reglab processes from
the checkout, and their environment), :mod:`tests.helpers.sweeps` (sweep trials set up by hand),
:mod:`tests.helpers.events` (the test side of the event hooks) and ``childsite/`` (the hooks themselves, loaded by
the reglab processes a test starts; ``sweep_gate.py`` there is the killed-worker sweep test's hook)."""
