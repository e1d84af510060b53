"""Install requirements into a venv with uv when it can, else pip: the set-up step of `make train` / `make test`.

Why: torch's Linux wheel with its CUDA libraries is ~5.5 GB unpacked; pip unpacks and byte-compiles it one file at
a time (105-111 s on a 2-core Ice Lake), uv in parallel (55-79 s there, same packages, same versions; record
setup-uv-icelake in benchmarks/results/records). uv does not read pip's configuration, so the package sources pip is configured with (index-url,
extra-index-url, find-links, constraint, cert; from pip.conf or PIP_* variables, as ``pip config list`` shows them)
are passed on as uv's flags, with pip's "best version from any index" rule (``--index-strategy
unsafe-best-match``). Anything failing on the uv path (uv not installable, a source uv can't read) falls back to
plain pip with its own configuration, so the result never depends on uv::

    python3 tools/install_deps.py .venv -r requirements-lock.txt
    python3 tools/install_deps.py .venv --no-deps -e .

Set ``REGLAB_INSTALLER=pip`` to skip uv.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

UV = "uv==0.13.9"  # pinned like the locks: the installer is part of what makes a set-up reproducible
_KEYS = ("index-url", "extra-index-url", "find-links", "constraint", "cert")


def pip_settings(config_list: str) -> dict[str, str]:
    """The package-source settings in ``pip config list`` output (``section.key='value'`` lines).

    Precedence as pip applies it: ``:env:`` (PIP_* variables) over ``install.`` over ``global.``."""
    rank = {"global": 0, "install": 1, ":env:": 2}
    found: dict[str, tuple[int, str]] = {}
    for line in config_list.splitlines():
        name, sep, value = line.partition("=")
        section, _, key = name.rpartition(".")
        if not sep or key not in _KEYS or section not in rank:
            continue
        value = value.strip().strip("'\"")
        if key not in found or rank[section] >= found[key][0]:
            found[key] = (rank[section], value)
    return {key: value for key, (_, value) in found.items()}


def uv_source_args(settings: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """uv flags and environment variables that give uv the package sources of pip's ``settings``."""
    args: list[str] = []
    if "index-url" in settings:
        args += ["--index-url", settings["index-url"]]
    for url in settings.get("extra-index-url", "").split():
        args += ["--extra-index-url", url]
    for link in settings.get("find-links", "").split():
        args += ["--find-links", link]
    for path in settings.get("constraint", "").split():
        args += ["--constraint", path]
    if "extra-index-url" in settings or "find-links" in settings:
        args += ["--index-strategy", "unsafe-best-match"]  # pip's rule: the best match over every source
    env = {"SSL_CERT_FILE": settings["cert"]} if "cert" in settings else {}
    return args, env


def _run(cmd: list[str], env: dict[str, str] | None = None) -> bool:
    print("+", shlex.join(cmd), flush=True)
    return subprocess.run(cmd, env={**os.environ, **(env or {})}).returncode == 0


def install(venv: Path, requirements: list[str]) -> int:
    python = str(venv / "bin" / "python")
    pip = [python, "-m", "pip", "install", "-q"]
    if os.environ.get("REGLAB_INSTALLER", "uv") != "pip":
        uv = venv / "bin" / "uv"
        if uv.exists() or _run([*pip, UV]):
            config = subprocess.run([python, "-m", "pip", "config", "list"], capture_output=True, text=True).stdout
            args, env = uv_source_args(pip_settings(config))
            cache = venv / ".uv-cache"  # in the venv: uv hard-links from it, so the packages take no extra space
            cmd = [str(uv), "pip", "install", "-q", "--python", python, "--compile-bytecode", "--cache-dir"]
            ok = _run([*cmd, str(cache), *args, *requirements], env)
            shutil.rmtree(cache, ignore_errors=True)
            if ok:
                return 0
        print("install_deps: uv did not install these; installing with pip instead", file=sys.stderr)
    return 0 if _run([*pip, *requirements]) else 1


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(
            "usage: python3 tools/install_deps.py VENV REQUIREMENT_ARGS... (e.g. .venv -r requirements-lock.txt)"
        )
    sys.exit(install(Path(sys.argv[1]), sys.argv[2:]))
