"""Where and how work runs: GDAL's settings, the Dask client, the device, the precision policies,
provenance.

GDAL: every read and write runs under `gdal_env`, with a bounded block cache so memory stays flat
however large the raster is: a scan of blocks (evaluate, vectorize, report pages) keeps a few rows
of them (SCAN_CACHE_MB); readers that keep what they read themselves (prediction's strips, the
tiler's batches) or pass once (verifying a written COG) need only a small one (STREAM_CACHE_MB).

Dask: `--workers N` starts a LocalCluster of N single-threaded worker processes (GDAL decoding and
numpy release the GIL, but one process per core keeps block caches and memory per worker small);
`--scheduler tcp://host:8786` joins a running distributed cluster. Without either, work runs on
the threaded scheduler in this process.

Precision: training and prediction pick their own (Lightning's mixed-precision names for the
trainer, an autocast dtype for inference) by the same rule: bf16 where the hardware has it.
"""

from __future__ import annotations

import contextlib
import math
import platform
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dask
import rasterio
import torch

from wetmap import __version__
from wetmap.config import TrainPrecision
from wetmap.errors import WetmapError

if TYPE_CHECKING:
    from distributed import Client


SCAN_CACHE_MB = 256
STREAM_CACHE_MB = 64


def gdal_env(cache_mb: int | None = SCAN_CACHE_MB, **options: str | int) -> rasterio.Env:
    """GDAL's settings for one piece of work: the block cache (None: leave it as it is) and `options`."""
    if cache_mb is not None:
        options["GDAL_CACHEMAX"] = cache_mb
    return rasterio.Env(**options)


# Dask's nannies set MALLOC_TRIM_THRESHOLD_ for their workers, so that freed memory goes back to
# the OS at once. Setting it also switches off glibc's dynamic mmap threshold (mallopt(3)): every
# buffer over 128 KiB (a chip, a Zarr chunk, a raster block) becomes a fresh mmap that faults
# page by page. Tiling bench_tile.py's 8192^2 scene, a worker took 517 000 page faults
# (getrusage) instead of ~600 without the variable, and ran ~30% slower than the same work
# in-process. Our tasks hold a few batches at a time, so glibc's own defaults are the better
# trade: the variable is left unset.
GLIBC_MALLOC_DEFAULTS = {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}


@contextlib.contextmanager
def dask_client(workers: int | None = None, scheduler: str | None = None) -> Iterator[Client | None]:
    """A distributed Client for the duration of the block, or None for in-process threads."""
    if workers is not None and scheduler is not None:
        raise WetmapError("give either --workers or --scheduler, not both")
    if scheduler is None and not workers:
        yield None
        return
    from distributed import Client, LocalCluster

    if scheduler is not None:
        try:
            client = Client(scheduler, timeout="10s")
        except OSError as exc:
            raise WetmapError(f"cannot reach Dask scheduler ({exc})", scheduler) from None
        with client:
            yield client
        return
    with dask.config.set(GLIBC_MALLOC_DEFAULTS), \
            LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                         memory_limit="auto") as cluster, Client(cluster) as client:
        yield client


def versions() -> dict[str, str]:
    """The versions that decide a result, for bundles and job manifests."""
    import lightning
    import torchgeo

    found = {"wetmap": __version__, "torch": torch.__version__, "torchgeo": torchgeo.__version__,
             "lightning": lightning.__version__, "rasterio": rasterio.__version__,
             "gdal": rasterio.__gdal_version__, "python": platform.python_version()}
    return {k: str(v) for k, v in found.items()}  # torch's version is a str subclass: unpicklable safely


def resolve_precision(cfg_precision: TrainPrecision | None, accelerator: str) -> TrainPrecision:
    """bf16 mixed precision on GPUs that support it, fp16 mixed on older GPUs, fp32 on the CPU."""
    if cfg_precision:
        return cfg_precision
    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "32-true"


def resolve_device(name: str) -> torch.device:
    """`auto` -> CUDA when there is a GPU, else the CPU; asking for CUDA without one is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise WetmapError("--device cuda asked for, but no CUDA GPU is available")
    return torch.device(name)


def cpu_has_bf16() -> bool:
    """Native bf16 arithmetic (AVX512-BF16 or AMX) on this CPU, where bf16 autocast pays off."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def autocast_dtype(device: torch.device, precision: str = "auto") -> torch.dtype | None:
    """The autocast dtype for inference, or None for plain fp32.

    auto: bf16 on CUDA (fp16 where bf16 is missing) and on CPUs with native bf16, where it was 2.5x
    faster than fp32 for the demo U-Net with probabilities within 0.014 (benchmarks/
    bench_predict_precision.py); fp32 elsewhere.
    """
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        return torch.float16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_has_bf16() else None


def json_safe(obj: Any) -> Any:
    """NaN as null, so the JSON is standard and undefined scores stay visibly undefined."""
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [json_safe(v) for v in obj]
    if isinstance(obj, float) and math.isnan(obj):
        return None
    return obj
