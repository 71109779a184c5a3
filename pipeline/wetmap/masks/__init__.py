"""Cloud masks: the products' own (SCL, QA_PIXEL), mask files, and the cloud detector.

The names below are the stage's public API; the modules hold the rest.
"""

from wetmap.masks.cloud import CloudMask
from wetmap.masks.cloudmap import write_cloud_map

__all__ = ["CloudMask", "write_cloud_map"]
