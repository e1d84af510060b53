"""reglab/typedyaml.py: finding a recipe or study file by its name."""

from __future__ import annotations

import pytest

from reglab.errors import UserError
from reglab.typedyaml import named_yaml


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
