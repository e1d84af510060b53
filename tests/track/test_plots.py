"""reglab.track.plots: the curves callback redraws within its share of the run and a run ends with current curves."""

from __future__ import annotations

from reglab.config import load_config
from reglab.train import run
from tests.helpers.configs import SYN, TINY_FASTNET


def test_curves_redraw_keeps_to_its_share_of_the_run_and_ends_current(tmp_path, monkeypatch):
    """A fake clock: 200 epochs of 0.7 s (fast-gpu-resnet18) with 0.3-s drawings; then slow epochs (a CPU)."""
    from types import SimpleNamespace

    from reglab.track import plots

    clock, drawn = [0.0], []

    def fake_plot(rows, path, title=""):
        clock[0] += 0.3
        drawn.append(len(rows))

    monkeypatch.setattr(plots, "plot_curves", fake_plot)
    for epoch_s, epochs in ((0.7, 200), (20.0, 5)):
        clock[0], drawn[:] = 0.0, []
        cb = plots.CurvesCallback(share=0.05, clock=lambda: clock[0])
        r = SimpleNamespace(
            metrics=[], dir=SimpleNamespace(path=tmp_path), cfg=SimpleNamespace(run=SimpleNamespace(name=""))
        )
        for e in range(epochs):
            clock[0] += epoch_s
            r.metrics.append({"epoch": e + 1})
            cb.on_epoch_end(r, r.metrics[-1])
        cb.on_end(r, {})
        assert drawn[0] == 1 and drawn[-1] == epochs  # the first epoch at once, the whole run at the end
        if epoch_s < 1:
            assert 10 <= len(drawn) <= 30  # every ~9 epochs, not 200 times
            assert 0.3 * len(drawn) <= 0.05 * clock[0] + 0.6  # <= 5% of the run, plus the final drawing
        else:
            assert drawn == list(range(1, epochs + 1))  # slow epochs: every one drawn


def test_a_run_ends_with_current_curves(tmp_path):
    from reglab.track import CurvesCallback

    cb = CurvesCallback(share=1e-9)  # only the first epoch and the end
    result = run(
        load_config(
            None,
            [
                *SYN,
                *TINY_FASTNET,
                "train.epochs=3",
                f"run.dir={tmp_path / 'r'}",
            ],
        ),
        callbacks=[cb],
    )
    assert cb.drawn == 3 and (result.run_dir / "curves.png").stat().st_size > 10_000
