"""Training: chip datasets, cloud-masked losses, the Lightning task, fit and pretraining.

The names below are the stage's public API; the modules hold the rest.
"""

from wetmap.train.fit import FitResult, fit

__all__ = ["FitResult", "fit"]
