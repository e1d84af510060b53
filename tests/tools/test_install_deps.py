"""tools/install_deps.py: pip's package sources handed to uv (the set-up of `make train` / `make test`)."""

import importlib.util
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("install_deps", ROOT / "tools" / "install_deps.py")
install_deps = importlib.util.module_from_spec(spec)
spec.loader.exec_module(install_deps)


def test_env_overrides_install_overrides_global():
    listing = "\n".join(
        [
            "global.index-url='https://a.example/simple'",
            "install.index-url='https://b.example/simple'",
            "global.find-links='/opt/wheels'",
            ":env:.find-links='/w1 /w2'",
            "global.timeout='60'",  # not a source: ignored
            "global.extra-index-url='file:///x/simple file:///y/simple'",
        ]
    )
    assert install_deps.pip_settings(listing) == {
        "index-url": "https://b.example/simple",
        "find-links": "/w1 /w2",
        "extra-index-url": "file:///x/simple file:///y/simple",
    }


def test_uv_flags_keep_pips_best_match_rule():
    args, env = install_deps.uv_source_args(
        {"extra-index-url": "file:///x file:///y", "find-links": "/w", "constraint": "/c.txt", "cert": "/ca.crt"}
    )
    assert args == [
        "--extra-index-url", "file:///x", "--extra-index-url", "file:///y", "--find-links", "/w",
        "--constraint", "/c.txt", "--index-strategy", "unsafe-best-match",
    ]  # fmt: skip
    assert env == {"SSL_CERT_FILE": "/ca.crt"}
    assert install_deps.uv_source_args({}) == ([], {})  # plain PyPI: uv's own default, first index only


def test_reads_a_real_pip_config(tmp_path):
    """The parser reads what this pip prints for a pip.conf (PIP_CONFIG_FILE) and for PIP_* variables."""
    conf = tmp_path / "pip.conf"
    conf.write_text("[global]\nextra-index-url = file:///srv/simple\n[install]\nfind-links = /srv/wheels\n")
    env = {"PIP_CONFIG_FILE": str(conf), "PIP_CONSTRAINT": "/srv/c.txt", "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], env=env, capture_output=True, text=True, check=True
    ).stdout
    settings = install_deps.pip_settings(out)  # the machine's own pip.conf files load too (a cert, say)
    assert settings["extra-index-url"] == "file:///srv/simple"
    assert settings["find-links"] == "/srv/wheels"
    assert settings["constraint"] == "/srv/c.txt"
