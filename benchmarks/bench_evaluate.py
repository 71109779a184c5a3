"""`wetmap evaluate` time against reading its two rasters once, in one run.

On a generated N x N uint8 prediction and truth (tiled DEFLATE, 512 blocks, 10 m UTM) with 9
irregular regions given in EPSG:4326, two of them overlapping a neighbour:
  (1) counting (the streaming pass: read, mask, count per region) vs reading the prediction and
      the truth once with rasterio block by block (target <= 1.5x), and, stricter, vs reading them
      in the pass's own 1024 x 1024 windows (fewer, larger reads, so faster);
  (2) the whole report (counting + regions.gpkg + map, bar chart, HTML, Markdown) vs the same read.
Times are medians of interleaved repeats, so drift of this noisy machine hits all alike.

    .venv/bin/python benchmarks/bench_evaluate.py [--size 8192] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
import shapely
from affine import Affine
from rasterio.crs import CRS
from rasterio.windows import Window

from wetmap.evaluate.report import evaluate
from wetmap.evaluate.tally import BLOCK, tally
from wetmap.io.windows import blocks

UTM = CRS.from_epsg(32632)
ORIGIN = (600_000.0, 5_900_000.0)


def make_inputs(folder: Path, size: int) -> dict[str, Path]:
    """Prediction and truth written strip by strip, and 9 wobbly regions in EPSG:4326."""
    transform = Affine(10, 0, ORIGIN[0], 0, -10, ORIGIN[1])
    common = {"driver": "GTiff", "width": size, "height": size, "count": 1, "dtype": "uint8", "nodata": 255,
              "crs": UTM, "transform": transform, "tiled": True, "blockxsize": 512, "blockysize": 512,
              "compress": "deflate", "BIGTIFF": "IF_SAFER"}
    paths = {"pred": folder / "pred.tif", "truth": folder / "truth.tif", "regions": folder / "regions.gpkg"}
    rng = np.random.default_rng(0)
    x = np.arange(size, dtype=np.float32)[None, :]
    with rasterio.open(paths["pred"], "w", **common) as pred, rasterio.open(paths["truth"], "w", **common) as truth:
        pred.update_tags(CLASSES="other,wetland")
        for row in range(0, size, 1024):
            y = np.arange(row, min(row + 1024, size), dtype=np.float32)[:, None]
            field = np.sin(x / 97.0) * np.cos(y / 83.0) + 0.5 * np.sin((x + y) / 31.0)
            ref = (field > 1.0).astype(np.uint8)
            noisy = (field + rng.normal(0, 0.15, field.shape) > 1.0).astype(np.uint8)
            noisy[np.cos(x / 400.0) * np.sin(y / 350.0) > 0.6] = 255    # clouds
            window = Window(0, row, size, y.shape[0])
            truth.write(ref, 1, window=window)
            pred.write(noisy, 1, window=window)
    extent = size * 10.0
    shapes = []
    for i in range(3):
        for j in range(3):
            cx, cy = ORIGIN[0] + (j + 0.5) * extent / 3, ORIGIN[1] - (i + 0.5) * extent / 3
            angles = np.linspace(0, 2 * np.pi, 180, endpoint=False)
            radius = extent / 6 * (1.0 + 0.15 * np.sin(5 * angles + i + j)) * (1.25 if (i, j) in ((1, 1), (0, 2)) else 0.98)
            shapes.append(shapely.Polygon(np.c_[cx + radius * np.cos(angles), cy + radius * np.sin(angles)]))
    gpd.GeoDataFrame({"name": [f"basin {k + 1}" for k in range(9)]}, geometry=shapes, crs=UTM).to_crs(4326) \
        .to_file(paths["regions"], driver="GPKG")
    return paths


def read_both(paths: dict[str, Path], size: int | None = None) -> float:
    """Seconds to read the prediction and the truth once with rasterio: block by block (size None)
    or in size x size windows (fewer calls; what the counting pass reads)."""
    start = time.perf_counter()
    for name in ("pred", "truth"):
        with rasterio.open(paths[name]) as src:
            windows = (w for _, w in src.block_windows(1)) if size is None else blocks(src.width, src.height, size)
            for window in windows:
                src.read(1, window=window)
    return time.perf_counter() - start


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=8192)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        paths = make_inputs(folder, args.size)
        read_both(paths)   # warm the page cache for everyone
        first_s = timed(lambda: tally(paths["pred"], paths["truth"], paths["regions"]))   # loads or compiles the kernel
        reads, windowed, counts, reports = [], [], [], []
        for r in range(args.repeats):
            reads.append(read_both(paths))
            windowed.append(read_both(paths, BLOCK))
            counts.append(timed(lambda: tally(paths["pred"], paths["truth"], paths["regions"])))
            reports.append(timed(lambda out=folder / f"report{r}": evaluate(paths["pred"], paths["truth"],
                                                                             paths["regions"], out)))
        read_s, windowed_s, count_s, report_s = (statistics.median(v) for v in (reads, windowed, counts, reports))
    print(f"{args.size}^2 prediction + truth, 9 regions (EPSG:4326), median of {args.repeats}")
    print(f"read both rasters once, rasterio block by block: {read_s:.3f} s")
    print(f"read both rasters once, rasterio 1024^2 windows:  {windowed_s:.3f} s")
    print(f"counting pass (wetmap.evaluate.tally):             {count_s:.3f} s  ratio {count_s / read_s:.2f} "
          f"(target <= 1.5); vs 1024^2 windows {count_s / windowed_s:.2f}")
    print(f"first counting pass of the process (numba loads its cached kernel, or compiles it): {first_s:.2f} s")
    print(f"whole report incl. gpkg, figures, pages:  {report_s:.2f} s  ratio {report_s / read_s:.2f}")


if __name__ == "__main__":
    main()
