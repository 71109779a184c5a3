"""Change between two runs of a job: the change raster (raster.py), the per-region hectares
(regions.py), both written into a run's folder (compare.py)."""

from wetmap.change.compare import ChangeResult, compare_runs
from wetmap.change.regions import RegionChange, region_changes

__all__ = ["ChangeResult", "RegionChange", "compare_runs", "region_changes"]
