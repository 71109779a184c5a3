"""Real scenes in: products as delivered (SAFE, Landsat folders, STAC items, band files, rasters),
their bands by physical name, their reflectance harmonised, their own cloud masks.

Every stage reads imagery through `open_scene` (what the user gave -> `SceneSpec`) and
`SceneReader` (a spec's bands on a grid, window by window)."""

from wetmap.scenes.identify import open_scene
from wetmap.scenes.reader import SceneReader, resolve_mask, scene_grid
from wetmap.scenes.spec import CONVENTION, BandSource, MaskSource, SceneSpec

__all__ = ["CONVENTION", "BandSource", "MaskSource", "SceneReader", "SceneSpec", "open_scene", "resolve_mask",
           "scene_grid"]
