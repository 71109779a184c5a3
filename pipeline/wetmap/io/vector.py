"""Vector I/O: checked reading (GeoPackage, Shapefile, GeoJSON...), repair, reprojection, burning.

Invalid geometries (self-intersections are common in hand-digitised inventories) are repaired with
shapely's make_valid; a file that cannot be read, has no CRS or holds no polygon is an error.
"""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio
import rasterio
import rasterio.features
import rasterio.windows
import shapely
from affine import Affine
from rasterio.crs import CRS
from rasterio.windows import Window

from wetmap.errors import WetmapError
from wetmap.io.labels import LabelCodes
from wetmap.io.paths import check_local, gdal_path
from wetmap.io.raster import Grid, aligned, open_raster, read_window

VECTOR_SUFFIXES = {".gpkg", ".shp", ".geojson", ".json", ".fgb", ".gml", ".kml", ".parquet"}


def is_vector(path: str | Path) -> bool:
    return Path(path).suffix.lower() in VECTOR_SUFFIXES


def read_polygons(path: str | Path, crs: CRS | None = None) -> gpd.GeoDataFrame:
    """Polygons of a vector file, repaired, in `crs` when given."""
    path = gdal_path(path)   # local, or remote (/vsicurl/, /vsis3/...) read by GDAL unchanged
    check_local(path)
    try:
        gdf = (gpd.read_parquet(path) if path.lower().endswith(".parquet")
               else gpd.read_file(path, engine="pyogrio"))
    except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError, ValueError, OSError) as exc:
        raise WetmapError(f"not a readable vector file ({str(exc).splitlines()[0]})", path) from None
    if gdf.crs is None:
        raise WetmapError("vector file has no CRS", path)
    gdf = gdf[~gdf.geometry.is_empty & gdf.geometry.notna()].copy()
    bad = ~gdf.geometry.is_valid
    if bad.any():
        gdf.loc[bad, "geometry"] = shapely.make_valid(gdf.geometry[bad].values)
    gdf["geometry"] = [_polygonal(g) for g in gdf.geometry]
    gdf = gdf[~gdf.geometry.is_empty]
    if gdf.empty:
        raise WetmapError("no polygon in vector file", path)
    return gdf.to_crs(crs) if crs is not None else gdf


def _polygonal(geom: shapely.Geometry) -> shapely.Geometry:
    """Keep the polygon parts of a (repaired) geometry; make_valid can add lines or points."""
    if geom.geom_type in ("Polygon", "MultiPolygon"):
        return geom
    parts = [p for p in shapely.get_parts(geom) if p.geom_type in ("Polygon", "MultiPolygon")]
    return shapely.union_all(parts) if parts else shapely.Polygon()


def burn(geoms: list[shapely.Geometry] | gpd.GeoSeries, transform: Affine, shape: tuple[int, int],
         value: int = 1, fill: int = 0) -> np.ndarray:
    """uint8 raster of `shape`: `value` where a pixel's centre lies inside a geometry, else `fill`."""
    geoms = [g for g in geoms if g is not None and not g.is_empty]
    if not geoms:
        return np.full(shape, fill, np.uint8)
    return rasterio.features.rasterize(((g, value) for g in geoms), out_shape=shape, transform=transform,
                                       fill=fill, dtype="uint8", all_touched=False)


class PolygonLabels:
    """Wetland polygons seen as a label raster on a grid: 1 inside (pixel centre), 0 outside."""

    def __init__(self, path: str | Path, grid: Grid, value: int = 1, image_name: str | Path | None = None) -> None:
        self.path, self.grid, self.value = gdal_path(path), grid, value
        self.polygons = read_polygons(self.path, grid.crs)
        west, south, east, north = self.polygons.total_bounds
        gw, gs, ge, gn = grid.bounds
        if west >= ge or east <= gw or south >= gn or north <= gs:
            raise WetmapError(f"does not overlap {image_name or 'the image'}: bounds "
                              f"({west:.1f}, {south:.1f}, {east:.1f}, {north:.1f}) vs "
                              f"({gw:.1f}, {gs:.1f}, {ge:.1f}, {gn:.1f}) ({grid.crs.to_string()})", self.path)

    def read(self, window: Window) -> np.ndarray:
        transform = rasterio.windows.transform(window, self.grid.transform)
        shape = (int(window.height), int(window.width))
        box = shapely.box(*rasterio.windows.bounds(window, self.grid.transform))
        hits = self.polygons.geometry.values[self.polygons.sindex.query(box, predicate="intersects")]
        return burn(list(hits), transform, shape, self.value)

    def close(self) -> None:
        """Nothing to release; present so label sources share one interface."""


class RasterLabels:
    """A label raster reprojected / cropped / padded onto a grid (nearest), read by window as
    classes: its values go through `codes` (checked: a value that is no class is an error)."""

    def __init__(self, path: str | Path, grid: Grid, image_name: str | Path | None = None, unknown: int = 255,
                 codes: LabelCodes | None = None) -> None:
        self.path = gdal_path(path)
        self._src = open_raster(self.path)
        self.unknown = unknown
        self.codes = codes or LabelCodes()
        self.nodata = self._src.nodata
        try:
            self.codes.check_nodata(self.nodata, self.path)
            # A nodata value the user mapped to a class is a class: the warp must not drop it.
            mapped = dict(self.codes.values).get(float(self.nodata)) if self.nodata is not None else None
            keep = mapped is not None and mapped != unknown
            self._view = aligned(self._src, grid, nodata=unknown, name=self.path, other=image_name,
                                 src_nodata=unknown if keep else None)
        except BaseException:
            self._src.close()
            raise

    def read(self, window: Window) -> np.ndarray:
        return self.codes.apply(read_window(self._view, window, 1), self.nodata, self.path)

    def close(self) -> None:
        if self._view is not self._src:
            self._view.close()
        self._src.close()


def open_labels(path: str | Path, grid: Grid, image_name: str | Path | None = None,
                unknown: int = 255, codes: LabelCodes | None = None) -> PolygonLabels | RasterLabels:
    """Labels on `grid` from a label raster (aligned, `unknown` outside it) or wetland polygons."""
    if is_vector(path):
        return PolygonLabels(path, grid, image_name=image_name)
    return RasterLabels(path, grid, image_name=image_name, unknown=unknown, codes=codes)


NAME_FIELDS = ("name", "NAME", "Name", "region", "REGION", "id", "ID")


def region_names(gdf: gpd.GeoDataFrame, region_field: str | None, path: str | Path) -> list[str]:
    if region_field is not None:
        if region_field not in gdf.columns:
            fields = ", ".join(c for c in gdf.columns if c != "geometry")
            raise WetmapError(f"no field '{region_field}' (fields: {fields})", path)
        return [str(v) for v in gdf[region_field]]
    for name in NAME_FIELDS:
        if name in gdf.columns:
            return [str(v) for v in gdf[name]]
    return [f"region {i + 1}" for i in range(len(gdf))]
