"""Training chips: a scene cut into aligned (image, label, valid, clear) chips in a Zarr store.

The names below are the stage's public API; the modules hold the rest.
"""

from wetmap.chips.build import ChipStoreSummary, build_chip_store
from wetmap.chips.store import ChipStore, open_chip_store

__all__ = ["ChipStore", "ChipStoreSummary", "build_chip_store", "open_chip_store"]
