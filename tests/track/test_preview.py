"""reglab/track/preview.py: ``reglab augment preview`` writes the file it names, and names the file it writes."""

from __future__ import annotations

import pytest

from reglab.cli import main
from reglab.errors import UserError
from reglab.track.preview import output_path

SYN = ["quick", "data.dataset=synthetic", "data.val_size=100"]


def test_preview_prints_the_path_it_really_wrote(tmp_path, capsys):
    """matplotlib adds .png to a name without an extension; the line printed names that file."""
    assert main(["augment", "preview", *SYN, "-o", str(tmp_path / "g4"), "-n", "4"]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {tmp_path / 'g4.png'}"
    assert (tmp_path / "g4.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (tmp_path / "g4").exists()


def test_output_path_keeps_a_writable_name_and_refuses_the_rest(tmp_path):
    assert output_path(tmp_path / "grid.png") == tmp_path / "grid.png"
    assert output_path(tmp_path / "grid.JPG") == tmp_path / "grid.JPG"
    assert output_path(tmp_path / "g4") == tmp_path / "g4.png"
    with pytest.raises(UserError, match=r"cannot write a \.txt image; name a \.png file"):
        output_path(tmp_path / "g4.txt")
    with pytest.raises(UserError, match="is a folder"):
        output_path(tmp_path)
