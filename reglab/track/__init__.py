"""Tracking: progress display, plots and (later) reports over run directories."""

from .plots import CurvesCallback, plot_confusion, plot_curves
from .progress import Progress

__all__ = ["CurvesCallback", "Progress", "plot_confusion", "plot_curves"]
