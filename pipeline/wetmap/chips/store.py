"""The chip store's layout (Zarr arrays, GeoPackage index, JSON metadata) and reading it back."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import rasterio
import shapely
import zarr
import zarr.codecs
import zarr.storage

from wetmap.errors import WetmapError
from wetmap.io.raster import Grid
from wetmap.io.windows import Tile

LABEL_UNKNOWN = 255

STORE, INDEX, META = "chips.zarr", "chips.gpkg", "chips.json"

# Format 2 adds `clear`: clear pixels with data, labelled or not (format 1 kept only `valid`).
CHIPS_FORMAT = "wetmap-chips/2"

MASKS = ("image", "label", "valid", "clear")


def _write_index(path: Path, rows: list[dict[str, Any]], tiles: list[Tile], grid: Grid) -> None:
    boxes = [shapely.box(*rasterio.windows.bounds(t.window, grid.transform)) for t in tiles]
    gdf = gpd.GeoDataFrame({
        "chip": [r["chip"] for r in rows],
        "row": [t.row for t in tiles], "col": [t.col for t in tiles],
        "split": [r["split"] for r in rows], "kept": [r["kept"] for r in rows], "stored": [r["stored"] for r in rows],
        "valid_fraction": [round(r["valid_fraction"], 6) for r in rows],
        "wetland_fraction": [round(r["wetland_fraction"], 6) for r in rows],
        "clear_fraction": [round(r["clear_fraction"], 6) for r in rows],
        "labelled_fraction": [round(r["labelled_fraction"], 6) for r in rows],
    }, geometry=boxes, crs=grid.crs)
    gdf.to_file(path, driver="GPKG", engine="pyogrio", layer="chips")


@dataclass
class ChipStore:
    """A chip store opened for reading: lazy Zarr arrays, the index and the metadata."""

    path: Path
    image: Any
    label: Any
    valid: Any
    clear: Any
    index: gpd.GeoDataFrame
    meta: dict[str, Any]

    def chips(self, split: str) -> np.ndarray:
        """Positions in the arrays of the kept chips of one split."""
        sel = self.index[(self.index["split"] == split) & self.index["kept"]]
        return sel["chip"].to_numpy()


def open_chip_store(path: str | Path) -> ChipStore:
    path = Path(path)
    if not (path / META).exists():
        raise WetmapError("not a wetmap chip store (no chips.json)", path)
    meta = json.loads((path / META).read_text())
    if meta.get("format") != CHIPS_FORMAT:
        raise WetmapError(f"chip store of format {meta.get('format')}, this wetmap reads {CHIPS_FORMAT} "
                          "(which keeps the clear pixels the network sees): cut it again with wetmap tile", path)
    group = zarr.open_group(str(path / STORE), mode="r")
    index = gpd.read_file(path / INDEX, engine="pyogrio")
    return ChipStore(path, group["image"], group["label"], group["valid"], group["clear"], index, meta)
