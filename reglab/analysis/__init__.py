"""Analyses of trained runs that ask why mixup works (after Liang et al., *Understanding Mixup Training
Methods*, 2018):

* :mod:`.interpolation` -- accuracy on mixed test pairs as the mixing ratio goes from 0 to 1.
* :mod:`.landscape` -- loss landscapes along filter-normalized random directions (Li et al., 2018), a
  grow-to-L variant (each direction scaled until the loss reaches L), and a basin-width number.
* :mod:`.ratio` -- collect a decoupled mixing-ratio study (image and label mixed with different ratios) and
  plot its panels.
* :mod:`.common` -- loading a run's model and data for an analysis.
"""
