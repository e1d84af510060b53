"""The loss-landscape figures are readable at a glance (issue 25.7): a colour bar on every loss contour,
log-spaced levels on a log colour scale when the losses span more than a decade (even levels otherwise), the
lowest levels labelled, and a 1D loss axis with plain-number ticks (log only for a wide range)."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib import colors  # noqa: E402
from matplotlib.contour import ContourSet  # noqa: E402

from reglab.analysis.figures import (  # noqa: E402
    contour_figure,
    contour_levels,
    landscape_1d_figure,
    levels_are_log,
    plot_1d,
    plot_contour,
)

AXIS = np.linspace(-1, 1, 9)
R2 = np.add.outer(1.5 * AXIS**2, AXIS**2) / 2.5  # 0 at the centre, 1 in the corners


def grid(loss: np.ndarray) -> dict:
    return {"a": AXIS.tolist(), "b": AXIS.tolist(), "loss": loss.tolist(), "acc": (100 * (1 - R2)).tolist()}


WIDE = 0.1 * 1000 ** np.sqrt(R2)  # 0.1 .. 100
NARROW = 27 + 21 * R2  # 27 .. 48


def test_levels_log_spaced_for_a_wide_range_and_even_for_a_narrow_one():
    wide = contour_levels(WIDE)
    assert levels_are_log(wide) and wide[0] == pytest.approx(0.1) and wide[-1] == pytest.approx(100)
    ratios = wide[1:] / wide[:-1]
    assert np.allclose(ratios, ratios[0])  # geometric
    narrow = contour_levels(NARROW)
    assert not levels_are_log(narrow) and narrow[0] == pytest.approx(27) and narrow[-1] == pytest.approx(48)
    assert np.allclose(np.diff(narrow), np.diff(narrow)[0])  # arithmetic
    assert levels_are_log(contour_levels(NARROW, WIDE))  # shared levels span every grid


def _loss_panel(fig):
    return next(ax for ax in fig.axes if ax.get_title().startswith("loss"))


@pytest.mark.parametrize("loss, log", [(WIDE, True), (NARROW, False)])
def test_contour_has_a_colour_bar_and_labels_near_the_minimum(loss, log):
    fig = contour_figure(grid(loss))
    try:
        lx = _loss_panel(fig)
        filled = next(c for c in lx.get_children() if isinstance(c, ContourSet) and c.filled)
        assert filled.colorbar is not None, "the loss contours have no colour bar"
        assert isinstance(filled.norm, colors.LogNorm) is log
        assert ("log scale" in filled.colorbar.ax.get_ylabel()) is log
        ticks = [t.get_text() for t in filled.colorbar.ax.get_yticklabels() if t.get_text()]
        assert len(ticks) >= 3 and all("10^" not in t and "times" not in t for t in ticks), ticks
        labels = sorted(float(t.get_text()) for t in lx.texts)
        assert labels and labels[0] <= np.quantile(contour_levels(loss), 0.25)  # a level near the minimum
        bars = [ax for ax in fig.axes if ax.get_ylabel().startswith(("loss", "accuracy"))]
        assert len(bars) == 2  # one colour bar per panel
    finally:
        plt.close(fig)


def _1d(loss: np.ndarray) -> dict:
    return {
        "m": {
            "1d": {
                "alpha": np.linspace(-1, 1, len(loss)).tolist(),
                "loss": loss.tolist(),
                "acc": [50.0] * len(loss),
            },
            "subset": 100,
            "split": "train",
        }
    }


@pytest.mark.parametrize("lo, hi, scale", [(0.5, 8.0, "log"), (27.0, 48.0, "linear")])
def test_1d_loss_axis_has_readable_ticks(lo, hi, scale):
    x = np.linspace(-1, 1, 21)
    fig = landscape_1d_figure(_1d(lo + (hi - lo) * x**2))
    try:
        fig.canvas.draw()
        lx = fig.axes[0]
        assert lx.get_yscale() == scale
        shown = [t for t in lx.get_yticklabels() if t.get_text() and lo <= t.get_position()[1] <= hi]
        assert len(shown) >= 3, [t.get_text() for t in lx.get_yticklabels()]
        for t in shown:  # plain numbers, not 3x10^1 (mathtext)
            assert "$" not in t.get_text() and float(t.get_text()) == pytest.approx(t.get_position()[1], rel=1e-2)
    finally:
        plt.close(fig)


def test_plot_functions_write_pngs(tmp_path):
    assert plot_contour(grid(WIDE), tmp_path / "c.png").stat().st_size > 0
    assert plot_1d(_1d(np.linspace(1, 2, 5)), tmp_path / "d.png").stat().st_size > 0
