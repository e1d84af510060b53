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
