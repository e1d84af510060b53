"""glibc malloc settings for reglab's processes: fewer page faults from large, short-lived CPU tensors.

On a CPU, every batch allocates activation tensors of tens of MB (resnet20 at batch 1000: 65 MB per conv output
in fp32). glibc's malloc serves requests above its mmap threshold (at most 32 MiB with the default dynamic
threshold) with a fresh ``mmap`` and gives them back with ``munmap`` when freed, and it trims the top of the heap
whenever more than twice that threshold is free there. So each batch maps, page-faults (the kernel zeroes every
4 KiB page) and unmaps its activations again: in ``reglab analyze landscape`` most of the wall time was system
time. :func:`tune_malloc` raises the mmap threshold to 1 GiB (allocations below it come from the heap and are
reused) and turns off trimming (freed memory stays in the process for the next batch), through ``mallopt`` on the
running process, the same settings as ``MALLOC_MMAP_THRESHOLD_=1073741824 MALLOC_TRIM_THRESHOLD_=4294967296`` set in
the environment before start. ``benchmarks/malloc_settings.py`` measures them against glibc's defaults (record
``malloc-settings-zen5``: system time of 20 resnet20 evaluations 2.56 -> 0.03 s, of a landscape analysis
5.27 -> 0.91 s, on a 2-core Zen 5 in bf16). The cost: the process keeps its peak heap until it exits instead
of returning freed memory to the system.

Applied once, at the start of the command line (:func:`reglab.cli.main`) and of the Python entry points (training,
evaluation, analyses). Nothing is changed when ``REGLAB_MALLOC=default`` is set, when the user set glibc's own
malloc variables (``MALLOC_*_``, ``GLIBC_TUNABLES=glibc.malloc...``), when another allocator is preloaded
(``LD_PRELOAD`` of jemalloc, tcmalloc, mimalloc), or off glibc (macOS, Windows, musl).
"""

from __future__ import annotations

import os
import sys

MMAP_THRESHOLD = 1 << 30  # single allocations of 1 GiB and more are still mapped (and unmapped when freed)
OLD_GLIBC_MMAP_THRESHOLD = 32 << 20  # the most glibc < 2.35 accepts (HEAP_MAX_SIZE / 2 on 64-bit)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (malloc.h)
_USER_VARS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_")

_status: str | None = None


def tune_malloc() -> str:
    """Apply the settings above once per process; return (and remember) what was done: a string starting with
    ``applied`` or ``skipped``. Never raises."""
    global _status
    if _status is None:
        try:
            _status = _apply()
        except Exception as exc:  # ctypes or the C library misbehaving must never stop a command
            _status = f"skipped: {type(exc).__name__}: {exc}"
    return _status


def status() -> str | None:
    """What :func:`tune_malloc` did in this process (None before its first call)."""
    return _status


def _apply() -> str:
    if os.environ.get("REGLAB_MALLOC", "").strip().lower() == "default":
        return "skipped: REGLAB_MALLOC=default"
    if not sys.platform.startswith("linux"):
        return f"skipped: not glibc ({sys.platform})"
    try:
        libc_version = os.confstr("CS_GNU_LIBC_VERSION") or ""
    except (ValueError, OSError, AttributeError):
        libc_version = ""
    if not libc_version.startswith("glibc"):
        return "skipped: not glibc"
    if any(v in os.environ for v in _USER_VARS) or "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", ""):
        return "skipped: glibc malloc settings from the environment"
    if "malloc" in os.environ.get("LD_PRELOAD", ""):
        return "skipped: another allocator is preloaded (LD_PRELOAD)"
    import ctypes

    mallopt = ctypes.CDLL(None).mallopt
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # The threshold first: setting either value turns glibc's dynamic threshold off, so trimming must not be
    # changed unless a higher threshold took.
    for threshold in (MMAP_THRESHOLD, OLD_GLIBC_MMAP_THRESHOLD):
        if mallopt(_M_MMAP_THRESHOLD, threshold) == 1:
            break
    else:
        return f"skipped: mallopt(M_MMAP_THRESHOLD) refused ({libc_version})"
    if mallopt(_M_TRIM_THRESHOLD, -1) != 1:  # -1: never trim the heap
        return f"applied: mmap threshold {threshold >> 20} MiB; trimming unchanged ({libc_version})"
    return f"applied: mmap threshold {threshold >> 20} MiB, no trimming ({libc_version})"
