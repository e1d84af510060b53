"""The tests' layout follows the package (tests/README.md): ``tests/<pkg>/test_<module>[_<aspect>].py`` tests
``reglab/<pkg>/<module>.py``, ``tests/test_<module>[_<aspect>].py`` a top-level ``reglab/<module>.py`` (or a subpackage's public surface:
``tests/test_config.py`` for ``reglab/config/``),
``tests/benchmarks/test_<script>[_<aspect>].py`` ``benchmarks/<script>.py``; end-to-end tests are in ``tests/e2e/``.
A module renamed or removed without its tests fails here."""

from __future__ import annotations

from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
FREE = {"e2e"}  # named by what they exercise, not by a module
NOT_TESTS = {"helpers", "__pycache__"}
OWN = {"test_layout.py"}  # this file


def mirrored(folder: Path) -> Path:
    rel = folder.relative_to(TESTS)
    if rel.parts[:1] in {("benchmarks",), ("tools",)}:  # scripts beside the package, tested where they live
        return REPO / rel
    return REPO / "reglab" / rel


def modules(folder: Path) -> set[str]:
    """The module names a test file of ``folder`` may name: its modules, and its subpackages (a test of a package's
    public surface, e.g. tests/test_config.py for reglab/config/)."""
    files = {p.stem.lstrip("_") for p in folder.glob("*.py") if p.stem != "__init__"}
    return files | {p.parent.name for p in folder.glob("*/__init__.py")}


def _test_files() -> list[Path]:
    return sorted(
        p
        for p in TESTS.rglob("test_*.py")
        if not NOT_TESTS & set(p.relative_to(TESTS).parts) and p.name not in OWN
    )


@pytest.mark.parametrize("path", _test_files(), ids=lambda p: str(p.relative_to(TESTS)))
def test_every_test_file_names_an_existing_module(path):
    folder = path.parent
    if folder.relative_to(TESTS).parts[:1] and folder.relative_to(TESTS).parts[0] in FREE:
        return
    target = mirrored(folder)
    assert target.is_dir(), f"{path.relative_to(REPO)}: no {target.relative_to(REPO)}/ to mirror"
    name = path.stem.removeprefix("test_")
    mods = modules(target)
    assert any(name == m or name.startswith(m + "_") for m in mods), (
        f"{path.relative_to(REPO)} names no module of {target.relative_to(REPO)}/ "
        f"(test_<module>[_<aspect>].py; modules: {', '.join(sorted(mods))}); move it, or into tests/e2e/"
    )


def test_test_folders_are_packages_that_mirror_a_folder():
    """Every folder of tests is a package (so two folders may hold the same basename) and mirrors a folder."""
    for folder in sorted(p for p in TESTS.rglob("*") if p.is_dir()):
        rel = folder.relative_to(TESTS)
        if NOT_TESTS & set(rel.parts):
            continue
        assert (folder / "__init__.py").is_file(), f"tests/{rel}/ has no __init__.py"
        if rel.parts[0] not in FREE:
            assert mirrored(folder).is_dir(), f"tests/{rel}/ mirrors no {mirrored(folder).relative_to(REPO)}/"
