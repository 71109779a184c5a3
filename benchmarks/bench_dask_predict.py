"""Dask prediction with bounded memory: peak RSS of every worker and of the client, small vs large.

On generated N x N x 6 uint16 scenes (benchmarks/bench_tile.make_inputs), `predict_mosaic` on a
LocalCluster of 2 worker processes (1 thread each), with a real bundle loaded from its path by
each worker: TorchGeo's FCN (3 filters: cheap, so the run measures the data path, not the model).
Each size runs in a fresh process; printed: peak RSS (VmHWM) of the client process and of each
worker, the ratios large / small (target <= 1.3), and whether the large map equals the map of one
process (byte for byte, both COGs).

    .venv/bin/python benchmarks/bench_dask_predict.py [--sizes 8192 32768] [--json FILE] [--skip-equal]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench_tile import make_inputs

BANDS = ["B02", "B03", "B04", "B08", "B11", "B12"]


def hwm_mb() -> float:
    """Peak resident memory of this process (VmHWM: ru_maxrss carries a parent's across exec)."""
    status = Path("/proc/self/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1]) / 1024


def write_bundle(path: Path) -> Path:
    import torch

    from wetmap.config import ModelConfig
    from wetmap.model.bundle import save_bundle
    from wetmap.model.network import build_network

    torch.manual_seed(0)
    cfg = ModelConfig(arch="fcn")
    save_bundle(path, build_network(cfg, len(BANDS)), cfg, BANDS, np.full(6, 2500.0), np.full(6, 900.0),
                {"model": cfg.model_dump(mode="json")}, {}, {0: (236, 229, 206, 255), 1: (31, 138, 112, 255)},
                chip_size=256)
    return path


def child(bundle: str, image: str, out: str, workers: int) -> None:
    """(In a fresh process) predict once, on `workers` Dask workers or in-process (0); print RSS."""
    from wetmap.config import PredictConfig
    from wetmap.predict.mosaic import predict_mosaic

    cfg = PredictConfig(tile_size=256, overlap=64, batch_size=8, device="cpu")
    start = time.perf_counter()
    if workers:
        from distributed import Client, LocalCluster

        with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                          memory_limit=0) as cluster, Client(cluster) as client:
            predict_mosaic(bundle, [image], out, clouds=["none"], cfg=cfg, client=client, probabilities=True)
            per_worker = sorted(client.run(hwm_mb).values())
    else:
        predict_mosaic(bundle, [image], out, clouds=["none"], cfg=cfg, probabilities=True)
        per_worker = []
    print(json.dumps({"client_mb": hwm_mb(), "workers_mb": per_worker, "seconds": time.perf_counter() - start}))


def run(bundle: Path, image: Path, out: Path, workers: int) -> dict:
    done = subprocess.run([sys.executable, __file__, "--child", str(bundle), str(image), str(out), str(workers)],
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def same_pixels(a: Path, b: Path) -> bool:
    import rasterio

    for x, y in ((a, b), (a.with_name(f"{a.stem}_probability.tif"), b.with_name(f"{b.stem}_probability.tif"))):
        with rasterio.open(x) as p, rasterio.open(y) as q:
            for _, window in p.block_windows(1):
                if not np.array_equal(p.read(1, window=window), q.read(1, window=window)):
                    return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs=2, default=[8192, 32768])
    parser.add_argument("--json", type=Path)
    parser.add_argument("--skip-equal", action="store_true", help="do not compare with one process")
    parser.add_argument("--child", nargs=4)
    args = parser.parse_args()
    if args.child:
        child(*args.child[:3], int(args.child[3]))
        return
    small, large = args.sizes
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        bundle = write_bundle(folder / "fcn.pt")
        found = {}
        for size in (small, large):
            image = make_inputs(folder, size)["image"]
            found[size] = run(bundle, image, folder / f"dask_{size}.tif", 2)
            print(f"{size}^2 on 2 workers: client {found[size]['client_mb']:.0f} MB, workers "
                  f"{', '.join(f'{m:.0f}' for m in found[size]['workers_mb'])} MB, {found[size]['seconds']:.0f} s")
        client = found[large]["client_mb"] / found[small]["client_mb"]
        worker = max(found[large]["workers_mb"]) / max(found[small]["workers_mb"])
        print(f"peak RSS {large}^2 / {small}^2: client {client:.2f}, largest worker {worker:.2f} (target <= 1.3)")
        figures = {"dask_rss_client_ratio": client, "dask_rss_worker_ratio": worker,
                   f"dask_rss_{large}_over_{small}": max(client, worker), "runs": found}
        if not args.skip_equal:
            single = run(bundle, folder / f"scene_{large}.tif", folder / f"one_{large}.tif", 0)
            equal = same_pixels(folder / f"dask_{large}.tif", folder / f"one_{large}.tif")
            figures["equal_to_one_process"] = equal
            print(f"{large}^2 in one process: {single['seconds']:.0f} s, {single['client_mb']:.0f} MB; "
                  f"the 2-worker map is {'byte-identical' if equal else 'DIFFERENT'}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
