"""True pixel areas in hectares, on any grid.

A grid in degrees (EPSG:4326) has no fixed cell area: a cell shrinks with the cosine of its
latitude. A projected grid's cells are `res x res` map units (feet in some US state planes), and
only nearly true on the ground when the projection keeps areas (UTM within 0.1 %; Web Mercator
overstates them fourfold at 60 degrees). So a grid whose cell areas on the ellipsoid stay within
`TOLERANCE` of its nominal one over the whole grid counts nominal cells; any other grid takes each
block's cell area on the ellipsoid at the block's centre (pyproj's geodesic polygon area).
"""

from __future__ import annotations

import geopandas as gpd
import numpy as np
from pyproj import CRS, Geod, Transformer
from rasterio.windows import Window

from wetmap.errors import WetmapError
from wetmap.io.raster import Grid

TOLERANCE = 0.005


class PixelArea:
    """Hectares of one pixel of `grid`, per block (`of(window)`)."""

    def __init__(self, grid: Grid) -> None:
        self.grid = grid
        self.crs = CRS.from_user_input(grid.crs.to_wkt())
        self.geod: Geod = self.crs.get_geod() or Geod(ellps="WGS84")
        self.to_lonlat = Transformer.from_crs(self.crs, self.crs.geodetic_crs, always_xy=True)
        # metres per map unit (feet in some state planes; degrees are never nominal)
        self.unit = self.crs.axis_info[0].unit_conversion_factor if self.crs.axis_info else 1.0
        self.nominal = self._nominal()

    def _nominal(self) -> float | None:
        """The cells' nominal area in ha, if the grid is projected and that is true within
        TOLERANCE at its corners and centre; else None (areas per block)."""
        if not self.crs.is_projected:
            return None
        t = self.grid.transform
        nominal = abs(t.a * t.e - t.b * t.d) * self.unit * self.unit / 10_000
        h, w = self.grid.height, self.grid.width
        samples = [(0, 0), (0, w - 1), (h - 1, 0), (h - 1, w - 1), (h // 2, w // 2)]
        true = [self.cell(r, c) for r, c in samples]
        return nominal if all(abs(a / nominal - 1) <= TOLERANCE for a in true) else None

    def cell(self, row: float, col: float) -> float:
        """The ellipsoidal area (ha) of the cell whose top-left corner is at (row, col)."""
        corners = [(col, row), (col + 1, row), (col + 1, row + 1), (col, row + 1)]
        xs, ys = zip(*(self.grid.transform * p for p in corners))
        lon, lat = self.to_lonlat.transform(np.array(xs), np.array(ys))
        area, _ = self.geod.polygon_area_perimeter(lon, lat)
        return abs(area) / 10_000

    def of(self, window: Window) -> float:
        """Hectares of one pixel in `window` (its centre cell's, when cells vary)."""
        if self.nominal is not None:
            return self.nominal
        return self.cell(window.row_off + window.height // 2, window.col_off + window.width // 2)

    @property
    def method(self) -> str:
        """How areas were measured, for the report."""
        if self.nominal is not None:
            return f"grid cells of {self.nominal:.6g} ha ({self.crs.name})"
        ellipsoid = self.crs.ellipsoid.name if self.crs.ellipsoid is not None else "unknown"
        return f"cells on the {ellipsoid} ellipsoid, per block ({self.crs.name})"


def polygon_hectares(frame: gpd.GeoDataFrame, grid: Grid) -> np.ndarray:
    """Areas (ha) of polygons drawn from `grid`'s pixels, by the same rule as its cells: planar
    where the grid's nominal cells are true, on the ellipsoid otherwise."""
    pixel_area = PixelArea(grid)
    if pixel_area.nominal is not None:
        return np.asarray(frame.geometry.area, float) * pixel_area.unit * pixel_area.unit / 10_000
    geodetic = pixel_area.crs.geodetic_crs
    if geodetic is None:
        raise WetmapError("the grid's CRS has no geodetic CRS to measure areas on", pixel_area.crs.name)
    lonlat = frame.to_crs(geodetic.to_wkt())
    return np.array([abs(pixel_area.geod.geometry_area_perimeter(g)[0]) / 10_000 for g in lonlat.geometry], float)
