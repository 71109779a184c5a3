"""A synthetic Sentinel-2 L2A-like sample area with known truth, for the demo and the tests.

The world is a landscape of lakes, meandering streams, forest, fields, grassland, towns and
wetlands. Wetlands sit along water and are a fine-scale mix of open pools and marsh vegetation,
so a single pixel looks like water or like grass/forest: a per-pixel NDVI/NDWI threshold cannot
map them, but a model that sees the neighbourhood can. Shorelines blur into mixed pixels, the
other confusion a real wetland model meets.

Two scenes are cut from the world, on other dates and with other clouds, shifted so that they
overlap only partly; each has a diagonal no-data edge as at the border of an orbit swath.
Everything derives from one seed through named random streams: same seed, same bytes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio
import rasterio.features
import shapely
from affine import Affine
from rasterio.crs import CRS
from scipy import ndimage

from wetmap.config import DEFAULT_BANDS
from wetmap.errors import WetmapError
from wetmap.io.outputs import OutputSet
from wetmap.io.raster import Grid, write_raster
from wetmap.io.styles import CLASS_COLORS, CLASS_NAMES

PIXEL = 10.0
CRS_UTM = CRS.from_epsg(32632)  # UTM 32N: northern Germany / Denmark, wetland country
ORIGIN = (600_000.0, 5_900_000.0)

# Land covers of the synthetic world (internal codes, not output classes).
GRASS, CROP, FOREST, URBAN, WATER, WETLAND, BARE = range(7)

# Surface reflectance (0-1) of B02, B03, B04, B08, B11, B12, shaped like real spectra.
SPECTRA = np.array([
    [0.040, 0.075, 0.055, 0.300, 0.220, 0.120],  # grassland
    [0.045, 0.085, 0.055, 0.380, 0.230, 0.125],  # green cropland
    [0.025, 0.045, 0.025, 0.290, 0.140, 0.065],  # forest
    [0.090, 0.100, 0.110, 0.170, 0.210, 0.190],  # urban
    [0.050, 0.060, 0.035, 0.022, 0.012, 0.008],  # open water
    [0.035, 0.062, 0.040, 0.270, 0.165, 0.080],  # marsh vegetation (the green part of wetland)
    [0.085, 0.105, 0.125, 0.215, 0.300, 0.240],  # bare / ploughed field
], dtype=np.float64)
CLOUD_SPECTRUM = np.array([0.42, 0.42, 0.43, 0.47, 0.36, 0.27])
CIRRUS_SPECTRUM = np.array([0.20, 0.20, 0.21, 0.22, 0.16, 0.12])

# Sentinel-2 L2A scene classification values written to the SCL rasters.
SCL_NODATA, SCL_SHADOW, SCL_VEG, SCL_NOT_VEG, SCL_WATER = 0, 3, 4, 5, 6
SCL_CLOUD_MED, SCL_CLOUD_HIGH, SCL_CIRRUS = 8, 9, 10

REGION_NAMES = ["Alder Brook", "Bittern Fen", "Crane Marsh", "Dunlin Flats", "Eel Creek",
                "Fenwick Moor", "Godwit Carr", "Heron Levels", "Ibis Reach"]


@dataclass(frozen=True)
class SampleFiles:
    """The files `wetmap sample` writes: scenes, their SCL masks, labels, the wetlands, regions."""

    scene_a: Path
    scene_a_scl: Path
    scene_b: Path
    scene_b_scl: Path
    labels: Path
    wetlands: Path
    regions: Path


def _rng(seed: int, stream: str) -> np.random.Generator:
    """An independent, reproducible random stream per purpose."""
    return np.random.default_rng([seed, *stream.encode()])


def _field(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Smooth Gaussian noise with zero mean and unit standard deviation."""
    f = ndimage.gaussian_filter(rng.standard_normal(shape), sigma, mode="reflect")
    return (f - f.mean()) / (f.std() + 1e-12)


def _streams(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Meandering streams crossing the world from edge to edge, 1-3 pixels wide."""
    h, w = shape
    out = np.zeros(shape, bool)
    for _ in range(max(2, (h + w) // 450)):
        y, x = rng.uniform(0, h), 0.0
        heading = rng.uniform(-0.5, 0.5)
        if rng.random() < 0.5:
            y, x, heading = 0.0, rng.uniform(0, w), np.pi / 2 + rng.uniform(-0.5, 0.5)
        line = np.zeros(shape, bool)
        turn = 0.0
        for _ in range(4 * (h + w)):
            turn = 0.92 * turn + rng.normal(0, 0.035)
            heading += turn
            y, x = y + 0.5 * np.sin(heading), x + 0.5 * np.cos(heading)
            if not (0 <= y < h and 0 <= x < w):
                break
            line[int(y), int(x)] = True
        out |= ndimage.binary_dilation(line) if rng.random() < 0.5 else line
    return out


def _landscape(seed: int, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Land-cover map and the wetland's per-pixel open-water fraction."""
    rng = _rng(seed, "landscape")
    h, w = shape
    elevation = _field(rng, shape, 60) + 0.5 * _field(rng, shape, 15)
    water = (elevation < np.quantile(elevation, 0.035)) | _streams(rng, shape)

    # Wetlands: connected patches on low ground next to lakes and streams, 2-8 % of the land.
    dist = ndimage.distance_transform_edt(~water)
    score = -dist / 10.0 + 0.7 * _field(rng, shape, 7) - 0.3 * elevation
    near = (~water) & (dist <= 22)
    target = rng.uniform(0.04, 0.055) * water.size
    threshold = np.sort(score[near])[::-1][min(int(target), int(near.sum()) - 1)]
    wetland = near & (score >= threshold)
    wetland = ndimage.binary_opening(wetland, iterations=1)
    labels, n = ndimage.label(wetland)
    sizes = ndimage.sum(wetland, labels, index=np.arange(1, n + 1))
    wetland = np.isin(labels, 1 + np.flatnonzero(sizes >= 30))

    # Fields: a jittered parcel grid, each parcel crop, bare or grass.
    rows = np.arange(h)[:, None] // 48
    offsets = rng.integers(0, 64, size=h // 48 + 1)
    cols = (np.arange(w)[None, :] + offsets[rows]) // 64
    parcel = rows * 10_000 + cols
    _, parcel_index = np.unique(parcel, return_inverse=True)
    parcel_index = parcel_index.reshape(shape)
    n_parcels = parcel_index.max() + 1
    kind = rng.choice([GRASS, CROP, BARE], size=n_parcels, p=[0.45, 0.40, 0.15])
    cover = kind[parcel_index]
    cover[_field(rng, shape, 30) > 0.6] = FOREST
    cover[_field(rng, shape, 18) > 1.9] = URBAN
    cover[wetland] = WETLAND
    cover[water] = WATER

    # Pools inside wetlands: a fine-scale mix, so single pixels look like water or like marsh.
    pools = np.clip(0.25 + 0.8 * _field(rng, shape, 1.3), 0.0, 1.0) * wetland
    return cover.astype(np.uint8), pools


def _reflectance(seed: int, stream: str, cover: np.ndarray, pools: np.ndarray, gain: float) -> np.ndarray:
    """(6,H,W) surface reflectance with parcel variation, texture, sensor blur and noise."""
    rng = _rng(seed, stream)
    shape = cover.shape
    refl = SPECTRA[cover].transpose(2, 0, 1).copy()
    wet = cover == WETLAND
    refl[:, wet] = (1 - pools[wet]) * SPECTRA[WETLAND][:, None] + pools[wet] * SPECTRA[WATER][:, None]
    vegetation = np.isin(cover, (GRASS, CROP, FOREST, WETLAND))
    vigour = 1.0 + 0.12 * _field(rng, shape, 25) + 0.06 * _field(rng, shape, 2)
    refl[3][vegetation] *= vigour[vegetation]
    brightness = 1.0 + 0.08 * _field(rng, shape, 40) + 0.05 * _field(rng, shape, 3)
    refl *= brightness * gain
    refl = ndimage.gaussian_filter(refl, sigma=(0, 0.7, 0.7))  # the sensor's point spread
    refl += rng.normal(0.0, 0.006, size=refl.shape)
    return refl


def _clouds(seed: int, stream: str, shape: tuple[int, int], cover: float) -> np.ndarray:
    """SCL cloud codes (0 where clear): cloud medium/high, thin cirrus, shadow cast beside."""
    rng = _rng(seed, stream)
    field = _field(rng, shape, 22) + 0.35 * _field(rng, shape, 5)
    cloud = field > np.quantile(field, 1 - cover)
    core = field > np.quantile(field, 1 - cover * 0.45)
    cirrus = (_field(rng, shape, 35) > 1.75) & ~cloud
    dy, dx = int(rng.integers(10, 18)), int(rng.integers(-20, -10))
    shadow = np.roll(cloud, (dy, dx), axis=(0, 1))
    shadow[:dy] = False
    shadow[:, dx:] = False
    shadow &= ~cloud & ~cirrus
    out = np.zeros(shape, np.uint8)
    out[cirrus] = SCL_CIRRUS
    out[shadow] = SCL_SHADOW
    out[cloud] = SCL_CLOUD_MED
    out[core] = SCL_CLOUD_HIGH
    return out


def _swath(shape: tuple[int, int], slope: float, offset: float, flip: bool) -> np.ndarray:
    """True inside the orbit swath: a diagonal edge cuts off one corner of the tile."""
    h, w = shape
    r, c = np.mgrid[0:h, 0:w]
    if flip:
        return (c - slope * r) < offset * w
    return (r - slope * c) < offset * h


def _scene(seed: int, name: str, cover: np.ndarray, pools: np.ndarray, swath: np.ndarray,
           cloud_cover: float, gain: float) -> tuple[np.ndarray, np.ndarray]:
    """uint16 DN (x10000) bands and the matching SCL band for one acquisition."""
    refl = _reflectance(seed, f"{name}-surface", cover, pools, gain)
    scl_cloud = _clouds(seed, f"{name}-clouds", cover.shape, cloud_cover)
    alpha = np.select([scl_cloud == SCL_CLOUD_HIGH, scl_cloud == SCL_CLOUD_MED, scl_cloud == SCL_CIRRUS],
                      [0.9, 0.65, 0.3], 0.0)
    spectrum = np.where((scl_cloud == SCL_CIRRUS)[None], CIRRUS_SPECTRUM[:, None, None],
                        CLOUD_SPECTRUM[:, None, None])
    refl = (1 - alpha) * refl + alpha * spectrum
    refl[:, scl_cloud == SCL_SHADOW] *= 0.4
    dn = np.clip(np.round(refl * 10_000), 1, 10_000).astype(np.uint16)
    dn[:, ~swath] = 0

    scl = np.select([cover == WATER, np.isin(cover, (URBAN, BARE))], [SCL_WATER, SCL_NOT_VEG], SCL_VEG)
    scl = np.where(scl_cloud > 0, scl_cloud, scl).astype(np.uint8)
    scl[~swath] = SCL_NODATA
    return dn, scl


@contextlib.contextmanager
def _fixed_gpkg_timestamp() -> Iterator[None]:
    """GeoPackages store a 'last change' time; pin it so the same seed gives the same bytes."""
    pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": "2026-01-01T00:00:00.000Z"})
    try:
        yield
    finally:
        pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": None})


def _write_vector(gdf: gpd.GeoDataFrame, path: Path, layer: str) -> None:
    with _fixed_gpkg_timestamp():
        gdf.to_file(path, driver="GPKG", engine="pyogrio", layer=layer)


def _wetland_polygons(wetland: np.ndarray, transform: Affine) -> gpd.GeoDataFrame:
    shapes = rasterio.features.shapes(wetland.astype(np.uint8), mask=wetland, transform=transform,
                                      connectivity=4)
    geoms = [shapely.geometry.shape(geom) for geom, _ in shapes]
    gdf = gpd.GeoDataFrame({"wetland_id": np.arange(1, len(geoms) + 1, dtype=np.int32),
                            "type": "marsh"}, geometry=geoms, crs=CRS_UTM)
    gdf["area_ha"] = (gdf.geometry.area / 10_000).round(4)
    return gdf


def _regions(seed: int, bounds: tuple[float, float, float, float]) -> gpd.GeoDataFrame:
    """4-9 watershed-like regions (Voronoi cells) over the world, in EPSG:4326."""
    rng = _rng(seed, "regions")
    n = int(rng.integers(5, 8))
    west, south, east, north = bounds
    pts = shapely.MultiPoint(np.column_stack([rng.uniform(west, east, n), rng.uniform(south, north, n)]))
    box = shapely.box(*bounds)
    cells = shapely.voronoi_polygons(pts, extend_to=box)
    polys = [shapely.intersection(cell, box) for cell in shapely.get_parts(cells)]
    polys = sorted(polys, key=lambda p: (-round(p.centroid.y, 3), round(p.centroid.x, 3)))
    gdf = gpd.GeoDataFrame({"name": REGION_NAMES[: len(polys)]}, geometry=polys, crs=CRS_UTM)
    return gdf.to_crs(4326)


def make_sample(out_dir: str | Path, size: int = 1024, seed: int = 0, overwrite: bool = False) -> SampleFiles:
    """Write the sample scenes, SCL masks, labels, wetland inventory and regions to `out_dir`,
    as one set: all of them, complete, or none."""
    if seed < 0:
        raise WetmapError(f"--seed must be 0 or more, not {seed}")
    out = Path(out_dir)
    shift = size // 4
    world_shape = (size + shift, size + shift)
    block = 256 if size >= 512 else 64  # internal tiles smaller than the scene, as in real products
    world = Grid(CRS_UTM, Affine(PIXEL, 0, ORIGIN[0], 0, -PIXEL, ORIGIN[1]), *world_shape[::-1])
    files = SampleFiles(*(out / n for n in ("scene_a.tif", "scene_a_scl.tif", "scene_b.tif", "scene_b_scl.tif",
                                             "labels.tif", "wetlands.gpkg", "regions.gpkg")))
    with OutputSet(list(vars(files).values()), overwrite) as outputs:
        cover, pools = _landscape(seed, world_shape)
        covered = np.zeros(world_shape, bool)
        scenes = [("scene_a", 0, files.scene_a, files.scene_a_scl, 0.6, 0.74, False, 0.17, 1.0),
                  ("scene_b", shift, files.scene_b, files.scene_b_scl, 0.5, 0.78, True, 0.2, 1.04)]
        for name, off, image_path, scl_path, slope, offset, flip, cloud_cover, gain in scenes:
            sl = np.s_[off:off + size, off:off + size]
            swath = _swath((size, size), slope, offset, flip)
            dn, scl = _scene(seed, name, cover[sl], pools[sl], swath, cloud_cover, gain)
            grid = Grid(CRS_UTM, world.transform @ Affine.translation(off, off), size, size)
            tags = {"SENSOR": "synthetic Sentinel-2 L2A", "ACQUISITION": "2026-06-14" if off == 0 else "2026-07-09",
                    "BOA_QUANTIFICATION_VALUE": "10000"}
            write_raster(outputs[image_path], dn, grid, nodata=0, descriptions=DEFAULT_BANDS, tags=tags,
                         blocksize=block)
            write_raster(outputs[scl_path], scl, grid, nodata=0, descriptions=["SCL"], blocksize=block)
            covered[sl] |= swath

        wetland = cover == WETLAND
        labels = np.where(covered, wetland, 255).astype(np.uint8)
        write_raster(outputs[files.labels], labels, world, nodata=255, descriptions=["wetland"],
                     colormap=CLASS_COLORS, tags={"CLASSES": ",".join(CLASS_NAMES)}, blocksize=block)
        _write_vector(_wetland_polygons(wetland, world.transform), outputs[files.wetlands], files.wetlands.stem)
        _write_vector(_regions(seed, world.bounds), outputs[files.regions], files.regions.stem)
    return files
