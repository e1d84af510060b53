"""Studies: named sets of runs (overrides or grids, n seeds each) run as real processes, resumable."""

from .runner import Outcome, run_study
from .spec import Study, StudyRun, load_study

__all__ = ["Outcome", "Study", "StudyRun", "load_study", "run_study"]
