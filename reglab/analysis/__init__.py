"""Analyses of trained runs (seed 001, *Understanding Mixup Training Methods*):

* :mod:`.interpolation` -- accuracy on mixed test pairs as the mixing ratio goes from 0 to 1 (Objective 2).
* :mod:`.landscape` -- loss landscapes along filter-normalized random directions (Li et al., 2018), the
  report's grow-to-L variant, and a basin-width number (Objective 3).
* :mod:`.ratio` -- collect a decoupled mixing-ratio study and plot its panels (Objective 1).
* :mod:`.common` -- loading a run's model and data for an analysis.
"""
