"""`wetmap predict`: compute hidden behind I/O, data-path speed and memory, in one run.

On a generated N x N x 6 uint16 tiled DEFLATE GeoTIFF (default 8192; tiles 256, overlap 64):
  (a) end to end with a ResNet-18 U-Net (TorchGeo, random weights: timing does not depend on
      them) vs the model alone on the same number of tiles, inputs already in memory
      (target <= 1.05x: reads, blending and writes hidden behind compute);
  (b) the data path alone, with a 1x1-convolution model on one torch thread in fp32, standing in
      for a model on a GPU (read, tile, blend, write the COG), vs
      rioxarray + Dask reading the same file (target >= 0.5x, #19) and vs TorchGeo's RasterDataset +
      GridGeoSampler + DataLoader over the same tiles (target >= 1.5x), with the time of the COG
      conversion and of the read-back checks (every output verified before its rename) in it,
      and the data path in fresh processes given 2 cores vs 1 (target >= 1.7x);
  (c) peak RSS of the data path on 16384^2 vs 4096^2, each in a fresh process (target <= 1.3x).
Where CUDA is available (or with `--device cuda`), (a) runs on the GPU with AMP too and prints
the model's and the end-to-end Mpx/s, the GPU's busy fraction (the model alone's time over the
end-to-end time: the GPU computes nothing else), the same path with the 1x1 convolution on the GPU
(what bounds the end to end there) and how far the GPU's map is from the CPU's. `--pool N` runs
(a) once more on N Dask worker processes sharing the device (one process reads in one thread and
blends in another; on a GPU node the other cores can feed the same GPU) and compares the maps.

    .venv/bin/python benchmarks/bench_predict.py [--size 8192] [--repeats 2] [--device auto|cpu|cuda]
                                                 [--skip-memory] [--skip-model] [--skip-datapath]
                                                 [--batch-size 8] [--pool N] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from bench_tile import make_inputs
from wetmap.config import ModelConfig, PredictConfig
from wetmap.io.windows import TileGrid
from wetmap.model.bundle import Bundle
from wetmap.model.network import build_network
from wetmap.predict.mosaic import predict_mosaic
from wetmap.predict.runner import IN_FLIGHT, Pending, TilePredictor
from wetmap.runtime import resolve_device

BANDS = ["B02", "B03", "B04", "B08", "B11", "B12"]
CFG = {"tile_size": 256, "overlap": 64, "batch_size": 8}


def bundle(network: torch.nn.Module) -> Bundle:
    return Bundle(network.eval(), BANDS, ["other", "wetland"], np.full(6, 2000.0), np.full(6, 800.0),
                  {0: (236, 229, 206, 255), 1: (31, 138, 112, 255)})


def unet() -> Bundle:
    torch.manual_seed(0)
    return bundle(build_network(ModelConfig(arch="unet", backbone="resnet18"), 6))


def pointwise() -> Bundle:
    """The cheapest real model: one 1x1 convolution, so the run measures the data path."""
    torch.manual_seed(0)
    return bundle(torch.nn.Conv2d(6, 1, 1))


def run_predict(b: Bundle, image: Path, out: Path, device: str = "cpu", precision: str = "auto") -> float:
    start = time.perf_counter()
    predict_mosaic(b, [image], out, clouds=["none"], cfg=PredictConfig(**CFG, device=device, precision=precision),
                   probabilities=True, overwrite=True)
    return time.perf_counter() - start


def run_pool(b: Bundle, image: Path, out: Path, device: str, workers: int, folder: Path) -> float:
    """Seconds end to end on a LocalCluster of `workers` processes sharing `device`: each reads,
    blends and converts its parts, the client writes. One process reads in one thread and blends
    in another; on a GPU node this is how the other cores feed the same GPU. Timed on the second of two
    runs, so that every worker has loaded the model and initialised the device."""
    import rasterio
    from distributed import Client, LocalCluster

    from wetmap.config import ModelConfig
    from wetmap.model.bundle import save_bundle

    path = save_bundle(folder / "unet.pt", b.model.cpu(), ModelConfig(arch="unet", backbone="resnet18"), b.bands, b.mean,
                       b.std, {}, {}, b.colors, chip_size=CFG["tile_size"])
    with rasterio.open(image) as src:
        tiles = TileGrid(src.width, src.height, CFG["tile_size"], CFG["overlap"])
    rows = -(-tiles.shape[0] // (2 * workers))   # two parts per worker, each re-predicting one tile row above it
    cfg = PredictConfig(**CFG, device=device, part_megapixels=rows * tiles.stride * tiles.width / 1e6)
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                      memory_limit=0) as cluster, Client(cluster) as client:
        for _ in range(2):
            start = time.perf_counter()
            predict_mosaic(str(path), [image], out, clouds=["none"], cfg=cfg, probabilities=True, overwrite=True,
                           client=client)
    return time.perf_counter() - start


def run_datapath(image: Path, out: Path, torch_threads: int = 1) -> float:
    """The data path: prediction with the 1x1 convolution, which stands in for a model on a GPU.

    Such a model takes no CPU thread, so the stand-in gets one torch thread: given one per core,
    torch's OpenMP workers spin-wait after each tiny convolution on the cores that the reader
    thread and GDAL need (`torch_threads` > 1 measures that, printed beside the figure). It runs
    in fp32: a GPU casts its batches to bf16 and lays them out channels-last on the device, where
    the CPU's bf16 autocast would spend the main thread on them."""
    before = torch.get_num_threads()
    torch.set_num_threads(torch_threads)
    try:
        return run_predict(pointwise(), image, out, precision="fp32")
    finally:
        torch.set_num_threads(before)


def model_only(b: Bundle, size: int, device: str = "cpu") -> float:
    """Seconds for the model on the scene's tiles in the batches prediction makes (batches never
    cross a tile row) and as it submits them (on a GPU, one computing while the last is taken),
    inputs already in memory."""
    grid = TileGrid(size, size, CFG["tile_size"], CFG["overlap"])
    rows, cols = grid.shape
    batches = [min(CFG["batch_size"], cols - k) for k in range(0, cols, CFG["batch_size"])] * rows
    predictor = TilePredictor(b, resolve_device(device))
    rng = np.random.default_rng(0)
    # What prediction sends: a GPU the file's uint16 values, the CPU float32 from the reader thread
    dtype = np.uint16 if predictor.raw_input else np.float32
    raw = rng.integers(500, 4000, (CFG["batch_size"], 6, CFG["tile_size"], CFG["tile_size"])).astype(dtype)
    valid = np.ones((CFG["batch_size"], CFG["tile_size"], CFG["tile_size"]), bool)
    predictor(raw.copy(), valid)  # warm-up (allocator, oneDNN / cuDNN kernels)
    start = time.perf_counter()
    flight: deque[Pending] = deque()   # as prediction submits them: the next batch in flight while one is taken
    for n in batches:
        # A fresh batch each time, as reading gives (float32 is normalised in place)
        flight.append(predictor.submit(raw[:n].copy(), valid[:n]))
        if len(flight) == IN_FLIGHT:
            flight.popleft().result()
    while flight:
        flight.popleft().result()
    return time.perf_counter() - start


def map_difference(a: Path, b: Path) -> tuple[int, float, bool]:
    """Two runs' maps: largest probability difference (points) and class agreement on clear
    pixels, and whether their no data is the same."""
    import rasterio

    def read(path: Path) -> tuple[np.ndarray, np.ndarray]:
        prob = path.with_name(f"{path.stem}_probability{path.suffix}")
        with rasterio.open(path) as cls, rasterio.open(prob) as p:
            return cls.read(1), p.read(1).astype(int)

    (ca, pa), (cb, pb) = read(a), read(b)
    clear = ca != 255
    if not clear.any():
        return 0, 1.0, bool(np.array_equal(clear, cb != 255))
    return (int(np.abs(pa - pb)[clear].max()), float((ca == cb)[clear].mean()),
            bool(np.array_equal(clear, cb != 255)))


def rioxarray_read(image: Path) -> float:
    import rioxarray

    start = time.perf_counter()
    with rioxarray.open_rasterio(image, chunks={"band": -1, "y": 1024, "x": 1024}, lock=False) as da:
        da.data.sum(dtype="uint64").compute()
    return time.perf_counter() - start


def core_seconds(work: Callable[[], object]) -> float:
    """CPU seconds (user + system, all threads of this process) that `work` took."""
    before = resource.getrusage(resource.RUSAGE_SELF)
    work()
    after = resource.getrusage(resource.RUSAGE_SELF)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def torchgeo_loader(image: Path) -> float:
    """TorchGeo's own way through the same tiles: RasterDataset + GridGeoSampler + DataLoader."""
    from torch.utils.data import DataLoader
    from torchgeo.datasets import RasterDataset, stack_samples
    from torchgeo.samplers import GridGeoSampler

    class Scene(RasterDataset):
        filename_glob = image.name
        is_image = True

    dataset = Scene(paths=str(image.parent))
    sampler = GridGeoSampler(dataset, size=CFG["tile_size"], stride=CFG["tile_size"] - CFG["overlap"])
    loader = DataLoader(dataset, sampler=sampler, batch_size=CFG["batch_size"], collate_fn=stack_samples)
    start = time.perf_counter()
    for _ in loader:
        pass
    return time.perf_counter() - start


def tile_reads(image: Path) -> tuple[float, float]:
    """Seconds to read every overlapping tile once: GDAL windows (its block cache) vs StripReader."""
    import rasterio

    from wetmap.io.raster import StripReader, read_window
    from wetmap.runtime import gdal_env

    times = []
    for strips in (False, True):
        with gdal_env(), rasterio.open(image) as src:
            reader = StripReader(src, list(src.indexes)) if strips else None
            start = time.perf_counter()
            for tile in TileGrid(src.width, src.height, CFG["tile_size"], CFG["overlap"]):
                reader.read(tile.window) if strips else read_window(src, tile.window, list(src.indexes))
            times.append(time.perf_counter() - start)
    return times[0], times[1]


def cog_seconds(outputs: list[tuple[Path, str]], folder: Path) -> tuple[float, float]:
    """Seconds for the COG conversion alone (compress + overviews, wetmap.io.cog.to_cog) of the
    data path's outputs, from uncompressed tiled copies like the ones prediction streams into; and
    seconds for the checks prediction makes of the same files: GDAL's checksum summed from the
    strips as they are written (wetmap.io.checksum), each COG read back and checksummed against
    it, its overviews decoded (wetmap.io.outputs.verify)."""
    import rasterio

    from wetmap.io.checksum import StripChecksum
    from wetmap.io.cog import to_cog
    from wetmap.io.outputs import verify

    total = checks = 0.0
    for path, resampling in outputs:
        plain = folder / f"plain_{path.name}"
        with rasterio.open(path) as src:
            profile = {**src.profile, "compress": None, "predictor": None, "tiled": True,
                       "blockxsize": 512, "blockysize": 512}
            with rasterio.open(plain, "w", **{k: v for k, v in profile.items() if v is not None}) as dst:
                for _, window in src.block_windows(1):
                    dst.write(src.read(1, window=window), 1, window=window)
        start = time.perf_counter()
        to_cog(plain, folder / f"cog_{path.name}", resampling)
        total += time.perf_counter() - start
        with rasterio.open(plain) as src:
            data = src.read(1)
        start = time.perf_counter()
        summed = StripChecksum(data.shape[1], data.shape[0])
        for row in range(0, data.shape[0], CFG["tile_size"] - CFG["overlap"]):
            summed.add(row, data[row:row + CFG["tile_size"] - CFG["overlap"]])
        verify(folder / f"cog_{path.name}", path, [summed.value])
        checks += time.perf_counter() - start
    return total, checks


def readback_seconds(paths: list[Path], repeats: int) -> tuple[float, float]:
    """Median seconds to read `paths` back as prediction does before their rename (every block and
    overview decoded on a pool of threads, wetmap.io.readback) vs with GDAL's own checksum, which
    decodes a block at a time in one thread; interleaved."""
    import rasterio

    from wetmap.io.readback import decode_all, gdal_checksums
    from wetmap.runtime import STREAM_CACHE_MB, gdal_env

    def gdal_way() -> None:
        with gdal_env(STREAM_CACHE_MB):
            for path in paths:
                with rasterio.open(path) as src:
                    levels = len(src.overviews(1))
                gdal_checksums(path, levels)

    pool, gdal = [], []
    for _ in range(repeats):
        for times, work in ((pool, lambda: [decode_all(p) for p in paths]), (gdal, gdal_way)):
            start = time.perf_counter()
            work()
            times.append(time.perf_counter() - start)
    return statistics.median(pool), statistics.median(gdal)


def child_rss(image: Path, out: Path) -> None:
    """(In a fresh process) run the data path once and print its peak RSS in MB.

    VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss across exec, so a child started by
    a big parent would report the parent's size.
    """
    run_datapath(image, out)
    status = Path("/proc/self/status").read_text()
    hwm_kb = int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1])
    print(json.dumps({"peak_rss_mb": hwm_kb / 1024}))


def child_datapath(cores: int, image: Path, out: Path) -> None:
    """(In a fresh process pinned to the first `cores` CPUs, GDAL, the reader thread and the
    model's thread sharing them) run the data path once to warm up, then time it; print the seconds."""
    os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[:cores]))
    run_datapath(image, out)
    print(json.dumps({"seconds": run_datapath(image, out)}))


def datapath_on(cores: int, image: Path, out: Path) -> float:
    done = subprocess.run([sys.executable, __file__, "--child-datapath", str(cores), str(image), str(out),
                           "--batch-size", str(CFG["batch_size"])], check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])["seconds"]


def peak_rss(folder: Path, size: int) -> float:
    image = make_inputs(folder, size)["image"]
    done = subprocess.run([sys.executable, __file__, "--child", str(image), str(folder / f"rss_{size}.tif"),
                           "--batch-size", str(CFG["batch_size"])], check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])["peak_rss_mb"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=8192)
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--skip-model", action="store_true")
    parser.add_argument("--skip-datapath", action="store_true", help="(a) and (c) only")
    parser.add_argument("--pool", type=int, default=0, metavar="N",
                        help="(a) also on a Dask LocalCluster of N worker processes sharing the device")
    parser.add_argument("--batch-size", type=int, default=CFG["batch_size"], help="tiles per batch")
    parser.add_argument("--repeats", type=int, default=2, help="interleaved repeats; medians are printed")
    parser.add_argument("--json", type=Path, help="also write the ratios here (keys as #19 names them)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                        help="(a) on the CPU, the GPU, or (auto) the CPU and any CUDA GPU")
    parser.add_argument("--child", nargs=2, type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--child-datapath", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA GPU is visible here")
    CFG["batch_size"] = args.batch_size
    figures: dict[str, float] = {}
    if args.child:
        child_rss(*args.child)
        return
    if args.child_datapath:
        child_datapath(int(args.child_datapath[0]), Path(args.child_datapath[1]), Path(args.child_datapath[2]))
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        image = make_inputs(folder, args.size)["image"]
        mpx = args.size * args.size / 1e6
        print(f"{args.size}^2 x 6 uint16 scene, tiles {CFG['tile_size']} overlap {CFG['overlap']}, "
              f"{torch.get_num_threads()} CPU threads, medians of {args.repeats} interleaved runs")
        reps = range(args.repeats)   # interleaved, medians: this machine drifts by 10-20 % between runs
        if not args.skip_datapath:
            rio_s, tg_s, data_s = (statistics.median(v) for v in zip(*[
                (rioxarray_read(image), torchgeo_loader(image), run_datapath(image, folder / "identity.tif"))
                for _ in reps]))
            spin_s = run_datapath(image, folder / "identity.tif", torch.get_num_threads())
            cog_s, check_s = cog_seconds([(folder / "identity.tif", "NEAREST"),
                                          (folder / "identity_probability.tif", "AVERAGE")], folder)
            window_s, strip_s = tile_reads(image)
            print(f"    tile reads: GDAL windows {window_s:.1f} s, StripReader {strip_s:.1f} s "
                  f"-> windows {window_s / strip_s:.1f}x slower (overlapping tiles re-decode blocks)")
            figures["datapath_over_read"] = rio_s / data_s
            print(f"(b) data path (1x1 conv, read + blend + COG): {data_s:.1f} s = {mpx / data_s:.1f} Mpx/s "
                  f"(with torch given every core, its threads spinning beside it: {spin_s:.1f} s)")
            print(f"    rioxarray + Dask read:                   {rio_s:.1f} s = {mpx / rio_s:.1f} Mpx/s"
                  f"  -> ratio {rio_s / data_s:.2f} (target >= 0.5)")
            print(f"    TorchGeo RasterDataset + GridGeoSampler: {tg_s:.1f} s = {mpx / tg_s:.1f} Mpx/s"
                  f"  -> ratio {tg_s / data_s:.2f} (target >= 1.5)")
            print(f"    of which the COG conversion of the two outputs alone (DEFLATE + overviews): {cog_s:.1f} s "
                  f"= {cog_s / rio_s:.2f}x the rioxarray read: the ratio to rioxarray cannot exceed "
                  f"{rio_s / cog_s:.2f} even if reading, tiling and blending were free")
            print(f"    and the checks of both COGs (strips summed as written, each COG read back): {check_s:.1f} s "
                  f"= {check_s / data_s:.0%} of the data path")
            pool_s, gdal_s = readback_seconds([folder / "identity.tif", folder / "identity_probability.tif"], 3)
            print(f"    reading both COGs back on a pool of threads: {pool_s:.2f} s; with GDAL's one-thread checksum: "
                  f"{gdal_s:.2f} s (medians of 3 interleaved)")
            from wetmap.io.cog import to_cog

            cores = len(os.sched_getaffinity(0))
            path_cpu = core_seconds(lambda: run_datapath(image, folder / "identity.tif"))
            read_cpu = core_seconds(lambda: rioxarray_read(image))
            cog_cpu = core_seconds(lambda: [to_cog(folder / f"plain_identity{tail}.tif", folder / f"cpu{tail}.tif", how)
                                            for tail, how in (("", "NEAREST"), ("_probability", "AVERAGE"))])
            print(f"    CPU: the data path keeps {path_cpu / data_s:.2f} of {cores} cores busy ({path_cpu:.1f} core-s); "
                  f"the read alone takes {read_cpu:.1f} core-s and the COG conversions alone {cog_cpu:.1f}, so with every "
                  f"core busy the ratio to rioxarray cannot exceed {rio_s * cores / (read_cpu + cog_cpu):.2f}")
            if cores >= 2:
                one_s, two_s = (statistics.median(v) for v in zip(*[
                    (datapath_on(1, image, folder / "one.tif"), datapath_on(2, image, folder / "two.tif")) for _ in reps]))
                figures["datapath_scaling_2_over_1"] = one_s / two_s
                print(f"    the data path on 2 cores / on 1 (fresh processes pinned to them): {one_s:.1f} s / {two_s:.1f} s "
                      f"-> {one_s / two_s:.2f}x (target >= 1.7)")
        if not args.skip_model:
            devices = {"auto": ["cpu"] + (["cuda"] if torch.cuda.is_available() else []), "cpu": ["cpu"],
                       "cuda": ["cuda"]}[args.device]
            for device in devices:
                net = unet()
                compute_s, e2e_s = (statistics.median(v) for v in zip(*[
                    (model_only(net, args.size, device), run_predict(net, image, folder / f"unet_{device}.tif", device))
                    for _ in reps]))
                figures["e2e_over_model" if device == "cpu" else "gpu_e2e_over_model"] = e2e_s / compute_s
                print(f"(a) {device}: U-Net end to end {e2e_s:.1f} s ({mpx / e2e_s:.2f} Mpx/s), model alone "
                      f"{compute_s:.1f} s ({mpx / compute_s:.2f} Mpx/s) -> ratio {e2e_s / compute_s:.3f} "
                      f"(target <= 1.05{'; GPU busy ' + format(compute_s / e2e_s, '.0%') if device == 'cuda' else ''})")
                if device == "cuda":   # what bounds the end to end: the same path with a model that costs nothing
                    path_s = statistics.median(run_predict(pointwise(), image, folder / "path_cuda.tif", device)
                                               for _ in reps)
                    print(f"    the same path, a 1x1 convolution on the GPU: {path_s:.1f} s ({mpx / path_s:.2f} Mpx/s):"
                          f" the end to end can be no faster")
                if args.pool:
                    pool_s = run_pool(net, image, folder / f"pool_{device}.tif", device, args.pool, folder)
                    if device == "cuda":
                        figures["gpu_pool_e2e_over_model"] = pool_s / compute_s
                    points, agree, same_nodata = map_difference(folder / f"unet_{device}.tif", folder / f"pool_{device}.tif")
                    print(f"    on {args.pool} Dask worker processes sharing the {device}: {pool_s:.1f} s "
                          f"({mpx / pool_s:.2f} Mpx/s, {compute_s / pool_s:.0%} of the model alone's speed); map vs one "
                          f"process: probabilities at most {points} points apart, classes equal on {agree:.4%}")
            if len(devices) == 2:
                points, agree, same_nodata = map_difference(folder / "unet_cpu.tif", folder / "unet_cuda.tif")
                print(f"    GPU (bf16) vs CPU map: probabilities at most {points} points apart, classes equal on "
                      f"{agree:.4%} of clear pixels, no data {'identical' if same_nodata else 'DIFFERENT'}")
            if "cuda" not in devices:
                print("    no CUDA GPU here: the GPU figures need a machine with one")
    if not args.skip_memory:
        with tempfile.TemporaryDirectory() as tmp:
            small = peak_rss(Path(tmp), 4096)
        with tempfile.TemporaryDirectory() as tmp:
            large = peak_rss(Path(tmp), 16384)
        figures["rss_16384_over_4096"] = large / small
        print(f"(c) peak RSS: 4096^2 {small:.0f} MB, 16384^2 {large:.0f} MB -> ratio {large / small:.2f} (target <= 1.3)")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
