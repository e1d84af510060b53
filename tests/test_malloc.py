"""reglab/_malloc.py: the glibc malloc settings reglab's entry points make at start-up (issue 26.5).

Each case is a fresh interpreter (``mallopt`` cannot be undone in-process). Besides the status string, the child
checks the effect: a 64 MiB ``malloc`` (above glibc's default mmap threshold, at most 32 MiB) is served from the
heap with the settings and by a fresh mmap without them (``mallinfo2().hblkhd``, bytes in mmapped chunks).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

try:
    GLIBC = sys.platform.startswith("linux") and os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc")
except (ValueError, OSError, AttributeError):
    GLIBC = False

CHILD = r"""
import contextlib, ctypes, io, json, sys
from pathlib import Path
from reglab import _malloc

entry = sys.argv[1]
assert _malloc.status() is None  # importing reglab changes nothing
if entry == "cli":
    from reglab.cli import main
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["config"]) == 0
elif entry == "train":  # Run.__init__ applies the settings before it reads its config
    from reglab.train.loop import Run
    try:
        Run(None, None)
    except AttributeError:
        pass
elif entry == "load":  # load_trained / load_validated (eval, predict, the analyses) before anything else
    from reglab.errors import UserError
    from reglab.track.inference import load_trained
    try:
        load_trained(Path("/nonexistent/run"))
    except UserError:
        pass

class Mallinfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                               "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL(None)
mapped = None
if hasattr(libc, "mallinfo2"):
    libc.mallinfo2.restype = Mallinfo2
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    before = libc.mallinfo2().hblkhd
    p = libc.malloc(64 << 20)
    mapped = libc.mallinfo2().hblkhd - before
    libc.free(p)
print(json.dumps({"status": _malloc.status(), "mapped": mapped}))
"""


def run_child(entry: str, **env_extra: str) -> dict:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("REGLAB_", "MALLOC_")) and k not in ("GLIBC_TUNABLES", "LD_PRELOAD")
    }
    env.update(env_extra)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("OMP_NUM_THREADS", "1")
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, entry], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not GLIBC, reason="the settings are glibc's")
@pytest.mark.parametrize("entry", ["cli", "train", "load"])
def test_entry_points_apply_the_settings(entry):
    out = run_child(entry)
    assert out["status"].startswith("applied: mmap threshold 1024 MiB, no trimming"), out
    if out["mapped"] is not None:  # glibc >= 2.33
        assert out["mapped"] == 0, out


@pytest.mark.skipif(not GLIBC, reason="the settings are glibc's")
@pytest.mark.parametrize(
    "env, reason",
    [
        ({"REGLAB_MALLOC": "default"}, "REGLAB_MALLOC=default"),
        ({"MALLOC_TRIM_THRESHOLD_": "131072"}, "from the environment"),
    ],
)
def test_opt_out_leaves_glibc_defaults(env, reason):
    out = run_child("cli", **env)
    assert out["status"].startswith("skipped") and reason in out["status"], out
    if out["mapped"] is not None and "REGLAB_MALLOC" in env:
        assert out["mapped"] >= 64 << 20, out  # glibc's own behaviour: a fresh mapping


def test_off_glibc_is_a_silent_no_op(monkeypatch):
    from reglab import _malloc

    monkeypatch.setattr(_malloc, "_status", None)
    monkeypatch.setattr(_malloc.sys, "platform", "darwin")
    monkeypatch.delenv("REGLAB_MALLOC", raising=False)
    assert _malloc.tune_malloc() == "skipped: not glibc (darwin)"
    monkeypatch.setattr(_malloc.sys, "platform", "linux")
    monkeypatch.setattr(_malloc.os, "confstr", lambda name: None)  # musl has no CS_GNU_LIBC_VERSION
    monkeypatch.setattr(_malloc, "_status", None)
    assert _malloc.tune_malloc() == "skipped: not glibc"
