"""reglab/track/inference.py: the eval line names the views it averaged, the unshifted one included."""

from __future__ import annotations

import pytest

from reglab.track.inference import tta_views


@pytest.mark.parametrize(
    "tta, shifts, text",
    [
        (True, [[-1, -1], [1, 1]], " (TTA: flip x {no shift, (-1,-1), (+1,+1)}, 6 views)"),
        (False, [[2, 0]], " (TTA: {no shift, (+2,+0)}, 2 views)"),
        (True, [], " (flip TTA)"),
        (False, [], ""),
    ],
)
def test_the_views_are_counted_with_the_unshifted_one_named(tta, shifts, text):
    assert tta_views(tta, shifts) == text


@pytest.fixture(scope="module")
def one_epoch_run(tmp_path_factory):
    from reglab.config import load_config
    from reglab.train import run
    from tests.helpers.configs import ONE_EPOCH_150

    path = tmp_path_factory.mktemp("eval") / "run"
    run(load_config(None, [*ONE_EPOCH_150, f"run.dir={path}"]))
    return path


@pytest.mark.parametrize("json_flag", [False, True])
@pytest.mark.parametrize("failure", ["read-only", "out-under-a-file"])
def test_eval_shows_the_accuracy_before_a_failed_write(
    one_epoch_run, tmp_path, capsys, monkeypatch, failure, json_flag
):
    """`reglab eval` in a folder it cannot write still prints the accuracy (and the rest of the numbers), then
    fails on the write with one error line and exit 2."""
    import errno
    import json

    import reglab.track.inference as inference
    from reglab.cli import main

    args = ["eval", str(one_epoch_run), *(["--json"] if json_flag else [])]
    if failure == "read-only":  # what writing into a read-only mount raises (chmod does not stop root)

        def read_only(matrix, classes, path, title=""):
            raise OSError(errno.EROFS, "Read-only file system", str(path))

        monkeypatch.setattr(inference, "plot_confusion", read_only)
    else:
        (tmp_path / "file").write_text("")
        args += ["--out", str(tmp_path / "file" / "sub")]
    assert main(args) == 2
    got = capsys.readouterr()
    if json_flag:
        numbers = json.loads(got.out)
        assert 0 <= numbers["acc"] <= 100 and "ece" in numbers
    else:
        assert "accuracy" in got.out and "calibration:" in got.out and "confusion matrix:" not in got.out
    lines = got.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("reglab: error: "), got.err
    assert ("Read-only file system" if failure == "read-only" else "cannot create") in lines[0]
    assert not (one_epoch_run / "eval_test.json").exists()
