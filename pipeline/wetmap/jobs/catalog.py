"""A job's STAC catalogue: one item per run, its COGs and vectors as assets with `proj:` and
`raster:` fields, and OUTPUT_ROOT/<name>/catalog.json linking every run's item.

A run's item.json is written in the run's own folder before its manifest, so it is committed (or
uploaded) with the run, and its asset links are relative: the job folder can be moved, synced or
served as it is. catalog.json is only a list of links to the items; it is rewritten after
`latest`, in one rename (or as one object), so it never lists a run that is not complete.
pystac builds both and reads them back (`pystac.Catalog.from_file`); QGIS's STAC browser opens
catalog.json by path or URL.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pystac
import rasterio
import rasterio.warp
import shapely
from pystac.extensions.projection import ProjectionExtension
from pystac.extensions.raster import DataType, RasterBand, RasterExtension

ITEM, CATALOG = "item.json", "catalog.json"
GPKG = "application/geopackage+sqlite3"
# (file in the run folder, asset key, title, media type, roles); rasters get `raster:bands`.
ASSETS: list[tuple[str, str, str, str, list[str]]] = [
    ("wetlands.tif", "classes", "wetland classes (0 other, 1 wetland, 255 cloud or no data)", pystac.MediaType.COG,
     ["data"]),
    ("wetlands_probability.tif", "probability", "wetland probability (%)", pystac.MediaType.COG, ["data"]),
    ("change.tif", "change", "change since the previous run (0 stable other, 1 stable wetland, 2 gained, 3 lost, "
     "255 unknown)", pystac.MediaType.COG, ["data"]),
    ("wetlands.gpkg", "polygons", "wetland polygons with area_ha", GPKG, ["data"]),
    ("change.gpkg", "change_polygons", "gained and lost polygons with area_ha", GPKG, ["data"]),
    ("change.csv", "change_table", "per region: wetland ha, clear fraction, ha gained and lost", "text/csv",
     ["metadata"]),
    ("change.html", "change_report", "the change: map, wetland per region over the runs, table", pystac.MediaType.HTML,
     ["overview"]),
    ("report/report.html", "report", "the regional report against the reference", pystac.MediaType.HTML, ["overview"]),
    ("manifest.json", "manifest", "what the run was made from (inputs, config, model, versions)",
     pystac.MediaType.JSON, ["metadata"]),
]
RASTER_UNITS = {"probability": "%"}


def run_item(run: str, folder: Path, properties: dict[str, Any], started: str) -> pystac.Item:
    """The STAC item of the run in `folder` (its class map gives the footprint and the grid);
    assets for the files it holds (the manifest included: it is written right after)."""
    with rasterio.open(folder / ASSETS[0][0]) as src:
        crs, bounds, transform, shape, res = src.crs, src.bounds, src.transform, src.shape, src.res
    west, south, east, north = rasterio.warp.transform_bounds(crs, "EPSG:4326", *bounds)
    footprint = shapely.box(west, south, east, north)
    item = pystac.Item(id=run, geometry=shapely.geometry.mapping(footprint), bbox=[west, south, east, north],
                       datetime=pystac.utils.str_to_datetime(started), properties=properties)
    proj = ProjectionExtension.ext(item, add_if_missing=True)
    epsg = crs.to_epsg()
    if epsg is not None:
        proj.code = f"EPSG:{epsg}"
    else:
        proj.wkt2 = crs.to_wkt()
    proj.shape, proj.transform, proj.bbox = list(shape), list(transform)[:6], list(bounds)
    RasterExtension.add_to(item)
    for rel in ("root", "parent"):   # the job's catalog.json, one folder up, written after the run
        item.add_link(pystac.Link(rel=rel, target=f"../{CATALOG}", media_type=pystac.MediaType.JSON))
    for file, key, title, media_type, roles in ASSETS:
        if not (folder / file).exists() and file != "manifest.json":
            continue
        asset = pystac.Asset(href=f"./{file}", title=title, media_type=media_type, roles=roles)
        item.add_asset(key, asset)
        if media_type == pystac.MediaType.COG:
            band = RasterBand.create(nodata=255, data_type=DataType.UINT8, spatial_resolution=float(res[0]),
                                     unit=RASTER_UNITS.get(key))
            RasterExtension.ext(asset).bands = [band]
    return item


def item_json(item: pystac.Item) -> str:
    """The item as written: links and asset hrefs relative, as built."""
    return json.dumps(item.to_dict(include_self_link=False, transform_hrefs=False), indent=2)


def catalog_json(job: str, runs: list[str]) -> str:
    """catalog.json of a job: a link to each run's item, oldest first."""
    catalog = pystac.Catalog(id=job, title=job, description=f"wetmap runs of the job {job}: one item per run")
    catalog.add_link(pystac.Link(rel="root", target=f"./{CATALOG}", media_type=pystac.MediaType.JSON))
    for run in runs:
        catalog.add_link(pystac.Link(rel="item", target=f"./{run}/{ITEM}", media_type=pystac.MediaType.JSON,
                                     title=run))
    return json.dumps(catalog.to_dict(include_self_link=False, transform_hrefs=False), indent=2)
