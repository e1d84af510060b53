"""reglab/typedyaml.py: finding a recipe or study file by its name."""

from __future__ import annotations

import pytest

from reglab.errors import UserError
from reglab.typedyaml import changed_keys, named_yaml


def test_named_yaml_finds_the_file_or_lists_the_names_with_a_suggestion(tmp_path):
    (tmp_path / "quick.yaml").write_text("model: {}\n")
    (tmp_path / "baseline.yaml").write_text("model: {}\n")
    assert named_yaml("quick", tmp_path, "recipe", "a YAML file path") == tmp_path / "quick.yaml"
    assert named_yaml("quick.yaml", tmp_path, "recipe", "a YAML file path") == tmp_path / "quick.yaml"
    with pytest.raises(UserError) as err:
        named_yaml("quik", tmp_path, "recipe", "a YAML file path")
    assert str(err.value).startswith("recipe 'quik' not found: give a YAML file path or one of: baseline, quick")
    assert str(err.value).endswith("(did you mean 'quick'?).")
    with pytest.raises(UserError, match=r"\(no study files installed\)"):
        named_yaml("x", tmp_path / "absent", "study", "a study YAML file")


def test_many_names_give_the_closest_and_the_command_that_lists_them(tmp_path):
    """With dozens of recipes the message names the nearest few and `reglab recipes`, not every name."""
    names = ["quick", "default", *(f"seed004_variant_{i:02d}" for i in range(12))]
    for n in names:
        (tmp_path / f"{n}.yaml").write_text("model: {}\n")
    with pytest.raises(UserError) as err:
        named_yaml("quik", tmp_path, "recipe", "a YAML file path", lister="reglab recipes")
    msg = str(err.value)
    assert msg == (
        "recipe 'quik' not found (did you mean 'quick'?): give a YAML file path or a recipe name; "
        "`reglab recipes` lists all 14."
    )
    with pytest.raises(UserError) as err:
        named_yaml("seed004", tmp_path, "recipe", "a YAML file path", lister="reglab recipes")
    msg = str(err.value)
    assert "(closest: 'seed004_variant_00'" in msg and "and 7 more)" in msg and "lists all 14" in msg
    assert msg.count("seed004_variant") == 5


def test_changed_keys_compares_flat_trees_with_missing_as_none_and_ignores():
    before = {"optim.lr": 0.1, "run.dir": "a", "aug.flip": True, "gone": None}
    after = {"optim.lr": 0.2, "run.dir": "b", "aug.flip": True, "new": 1}
    assert changed_keys(before, after) == ["new", "optim.lr", "run.dir"]  # gone: None on both sides
    assert changed_keys(before, after, frozenset({"run.dir", "new"})) == ["optim.lr"]
