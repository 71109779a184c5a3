"""Where the final COG conversion's time goes, and which ways of avoiding its serial rewrite GDAL allows.

On an N x N uint8 class map and probability map (default 8192; a smooth random field thresholded,
and scaled to percent with noise, 255 over a band of rows as no data), written as the prediction
writes them (512-tiled, uncompressed strips, io.cog.open_strip_writer's layout), this times:
  - `wetmap.io.cog.to_cog` of both maps (today's conversion), and the same without overviews:
    the difference is what overviews built from the strips as they pass could save;
  - the same conversion from strips already DEFLATE-compressed in the final block size: if GDAL
    copied such tiles without recompressing, compressing while predicting would remove the rewrite;
  - overviews built from the strips as they pass (io.cog.StreamedOverviews, fed 512-row strips
    from memory as prediction feeds them) and the conversion that then only compresses them,
    checked to give the same bytes as today;
  - the two conversions run at once in two threads (NUM_THREADS=1 each) vs one after the other
    (NUM_THREADS=ALL_CPUS): whether the conversions can be overlapped on this machine's cores;
and checks that the concurrent conversions give the same bytes.

    .venv/bin/python benchmarks/bench_cog.py [--size 8192] [--repeats 3] [--json FILE]
"""

from __future__ import annotations

import argparse
import filecmp
import json
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.transform import from_origin
from scipy.ndimage import zoom

from wetmap.io.cog import NODATA, StreamedOverviews, to_cog
from wetmap.io.raster import Grid


def make_maps(size: int, folder: Path) -> tuple[dict[str, Path], dict[str, np.ndarray], Grid]:
    """The class and probability maps (files uncompressed and DEFLATE-compressed, 512-tiled; arrays; grid)."""
    rng = np.random.default_rng(0)
    field = zoom(rng.normal(size=(size // 32, size // 32)), 32, order=1)[:size, :size]
    classes = (field > 1.0).astype(np.uint8)
    pct = np.clip((field + 2) * 25 + rng.normal(0, 3, field.shape), 0, 100).astype(np.uint8)
    classes[: size // 27] = NODATA
    pct[: size // 27] = NODATA
    profile = {"driver": "GTiff", "width": size, "height": size, "count": 1, "dtype": "uint8", "nodata": NODATA,
               "crs": "EPSG:32633", "transform": from_origin(300000, 6000000, 10, 10), "tiled": True,
               "blockxsize": 512, "blockysize": 512}
    paths = {}
    for name, data in (("classes", classes), ("pct", pct)):
        for form, extra in (("raw", {}), ("deflate", {"compress": "DEFLATE", "predictor": 2,
                                                      "num_threads": "ALL_CPUS"})):
            paths[f"{name}_{form}"] = folder / f"{name}_{form}.tif"
            with rasterio.open(paths[f"{name}_{form}"], "w", **profile, **extra) as dst:
                dst.write(data, 1)
    return paths, {"classes": classes, "pct": pct}, Grid(profile["crs"], profile["transform"], size, size)


def streamed(grid: Grid, data: np.ndarray, strips: Path, dst: Path, resampling: str, folder: Path) -> None:
    """Overviews built strip by strip as prediction builds them, then the conversion that copies them."""
    run = uuid.uuid4().hex[:6]   # fresh names each round, as io.outputs.scratch_path gives prediction
    overviews = StreamedOverviews.start(grid, resampling, lambda suffix: folder / f"{dst.stem}.{run}{suffix}")
    if overviews is None:
        raise SystemExit(f"--size {grid.width}: the overview levels do not halve exactly; pick a multiple of 512")
    for row in range(0, grid.height, 512):
        overviews.add(row, data[row:row + 512])
    overviews.close()
    to_cog(strips, dst, resampling, overviews)


def copy_cog(src: Path, dst: Path, resampling: str, threads: str = "ALL_CPUS", overviews: bool = True) -> None:
    """`to_cog`'s options with the thread count and the overviews made choosable."""
    extra = {"OVERVIEW_RESAMPLING": resampling, "OVERVIEW_COUNT": 4} if overviews else {"OVERVIEWS": "NONE"}
    rasterio.shutil.copy(src, dst, driver="COG", COMPRESS="DEFLATE", PREDICTOR="YES", BLOCKSIZE=512,
                         BIGTIFF="IF_SAFER", NUM_THREADS=threads, **extra)


def seconds(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def at_once(jobs: list[Callable[[], object]]) -> None:
    """Each job in its own thread (GDAL releases the GIL while it compresses and resamples)."""
    with ThreadPoolExecutor(len(jobs)) as pool:
        for future in [pool.submit(job) for job in jobs]:
            future.result()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=8192)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        p, arrays, grid = make_maps(args.size, folder)
        both = (("classes", "NEAREST"), ("pct", "AVERAGE"))
        cases: dict[str, Callable[[], object]] = {
            "today": lambda: [to_cog(p[f"{n}_raw"], folder / f"today_{n}.tif", r) for n, r in both],
            "no_overviews": lambda: [copy_cog(p[f"{n}_raw"], folder / f"noovr_{n}.tif", r, overviews=False)
                                     for n, r in both],
            "streamed": lambda: [streamed(grid, arrays[n], p[f"{n}_raw"], folder / f"streamed_{n}.tif", r, folder)
                                 for n, r in both],
            "from_deflate": lambda: [to_cog(p[f"{n}_deflate"], folder / f"defl_{n}.tif", r) for n, r in both],
            "serial": lambda: [copy_cog(p[f"{n}_raw"], folder / f"serial_{n}.tif", r) for n, r in both],
            "concurrent": lambda: at_once([lambda n=n, r=r: copy_cog(p[f"{n}_raw"], folder / f"conc_{n}.tif", r, "1")
                                           for n, r in both]),
        }
        times: dict[str, list[float]] = {k: [] for k in cases}
        for _ in range(args.repeats):   # interleaved, so a noisy moment hits every case alike
            for name, fn in cases.items():
                times[name].append(seconds(fn))
        med = {k: statistics.median(v) for k, v in times.items()}
        same = all(filecmp.cmp(folder / f"serial_{n}.tif", folder / f"conc_{n}.tif", shallow=False) for n, _ in both)
        same_streamed = all(filecmp.cmp(folder / f"today_{n}.tif", folder / f"streamed_{n}.tif", shallow=False)
                            for n, _ in both)
    mpx = args.size * args.size / 1e6
    print(f"COG conversion of the class and probability maps, {args.size}^2 ({mpx:.0f} Mpx each), "
          f"medians of {args.repeats} interleaved rounds")
    print(f"  today (to_cog, from uncompressed strips): {med['today']:.2f} s")
    print(f"  without overviews: {med['no_overviews']:.2f} s: overviews are "
          f"{1 - med['no_overviews'] / med['today']:.0%} of the conversion")
    print(f"  overviews streamed from the strips, then the conversion: {med['streamed']:.2f} s = "
          f"{med['streamed'] / med['today']:.2f}x today; same bytes: {same_streamed}")
    print(f"  from strips already DEFLATE-compressed in 512 blocks: {med['from_deflate']:.2f} s = "
          f"{med['from_deflate'] / med['today']:.2f}x today (below 1 would mean GDAL copies compressed tiles)")
    print(f"  both at once in 2 threads / one after the other: {med['concurrent'] / med['serial']:.2f}x the time "
          f"({med['concurrent']:.2f} vs {med['serial']:.2f} s); same bytes: {same}")
    if args.json:
        args.json.write_text(json.dumps({
            "size": args.size, "seconds": med,
            "overview_share": 1 - med["no_overviews"] / med["today"],
            "streamed_over_today": med["streamed"] / med["today"], "streamed_same_bytes": same_streamed,
            "from_deflate_over_today": med["from_deflate"] / med["today"],
            "concurrent_over_serial": med["concurrent"] / med["serial"], "concurrent_same_bytes": same}, indent=2))


if __name__ == "__main__":
    main()
