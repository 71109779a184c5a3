"""Wetland polygons from a class raster, into a GeoPackage with areas in hectares.

GDAL's polygonizer (through rasterio.features.shapes on the file's band) walks the raster
scanline by scanline, so memory holds polygons, not the raster. Pixels join a polygon when they
share an edge (4-connectivity), as GIS users expect of a class map.
"""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
import rasterio.features
import shapely

from wetmap.io.areas import polygon_hectares
from wetmap.io.raster import Grid, open_raster
from wetmap.io.styles import embed_style, polygon_qml
from wetmap.runtime import gdal_env


def vectorize_classes(raster: str | Path, out: str | Path, value: int, name: str, min_area_ha: float = 0.0,
                      color: tuple[int, ...] | None = None) -> gpd.GeoDataFrame:
    """Write the polygons of class `value` in `raster` to the GeoPackage `out` (layer `name`),
    with `area_ha`; polygons smaller than `min_area_ha` are left out. The style is stored in the
    GeoPackage (`styles.embed_style`), so the class raster keeps its own OUT.qml. `out` is
    written as given: the caller commits it (`io.outputs`)."""
    with gdal_env(), open_raster(raster) as src:
        grid = Grid.of(src)
        shapes = rasterio.features.shapes(rasterio.band(src, 1), connectivity=4, transform=src.transform)
        geoms = [shapely.geometry.shape(g) for g, v in shapes if int(v) == value]
    frame = gpd.GeoDataFrame({"class": [name] * len(geoms)}, geometry=geoms, crs=grid.crs)
    frame["area_ha"] = polygon_hectares(frame, grid)
    frame = frame[frame["area_ha"] >= min_area_ha].reset_index(drop=True)
    frame.insert(0, "id", np.arange(1, len(frame) + 1))
    frame.to_file(out, layer=name, driver="GPKG", engine="pyogrio")
    embed_style(out, name, polygon_qml(color or (31, 138, 112, 255)))
    return frame
