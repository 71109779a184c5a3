"""Spatial train / val / test splits: by blocks of pixels or by region polygons, never a pixel in two."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
import shapely

from wetmap.errors import WetmapError
from wetmap.io.raster import Grid
from wetmap.io.vector import read_polygons
from wetmap.io.windows import Tile, TileGrid

SPLITS = ("train", "val", "test")

BUFFER = "buffer"  # a chip touching blocks of two splits: dropped, so no pixel is in two splits


def _touched_blocks(tile: Tile, block: int) -> set[tuple[int, int]]:
    w = tile.window
    r0, c0 = int(w.row_off), int(w.col_off)
    r1, c1 = r0 + int(w.height) - 1, c0 + int(w.width) - 1
    return {(r, c) for r in range(r0 // block, r1 // block + 1) for c in range(c0 // block, c1 // block + 1)}


def split_by_blocks(tiles: TileGrid, block: int, val: float, test: float, seed: int) -> list[str]:
    """Split per tile: square blocks of `block` pixels go wholly to train, val or test (seeded)."""
    rows, cols = -(-tiles.height // block), -(-tiles.width // block)
    order = np.random.default_rng([seed, 11]).permutation(rows * cols)
    n_val, n_test = round(val * len(order)), round(test * len(order))
    if len(order) - n_val - n_test < 1:
        raise WetmapError(f"{len(order)} split blocks of {block} px are too few for val {val} / test {test}; "
                          "use a smaller split block")
    names = np.array(["val"] * n_val + ["test"] * n_test + ["train"] * (len(order) - n_val - n_test))
    block_split = {int(b): str(name) for b, name in zip(order, names)}
    out = []
    for tile in tiles:
        splits = {block_split[r * cols + c] for r, c in _touched_blocks(tile, block)}
        out.append(splits.pop() if len(splits) == 1 else BUFFER)
    return out


def split_by_regions(tiles: TileGrid, grid: Grid, regions: str | Path, split_field: str | None,
                     val: float, test: float, seed: int) -> tuple[list[str], list[str] | None]:
    """Split per tile by the region it lies in: a region's `split_field` value, else seeded draw.

    Tiles outside every region are left out ("none"); tiles touching regions of two splits are
    dropped as buffer. Also returns the regions' split values when they came from the field.
    """
    gdf = read_polygons(regions, grid.crs)
    if split_field is not None:
        if split_field not in gdf.columns:
            raise WetmapError(f"no field '{split_field}'", regions)
        values = gdf[split_field].astype(str).str.lower()
        bad = sorted(set(values) - set(SPLITS))
        if bad:
            raise WetmapError(f"field '{split_field}' must hold train, val or test; found {', '.join(bad)}", regions)
        region_split = values.tolist()
    else:
        draw = np.random.default_rng([seed, 13]).random(len(gdf))
        region_split = np.where(draw < val, "val", np.where(draw < val + test, "test", "train")).tolist()
    tree = shapely.STRtree(gdf.geometry.values)
    out = []
    for tile in tiles:
        box = shapely.box(*rasterio.windows.bounds(tile.window, grid.transform))
        hits = {region_split[i] for i in tree.query(box, predicate="intersects")}
        out.append("none" if not hits else hits.pop() if len(hits) == 1 else BUFFER)
    return out, (sorted(set(region_split)) if split_field is not None else None)
