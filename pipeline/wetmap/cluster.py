"""Where Dask work runs: in this process (threads), a LocalCluster of N processes, or a cluster.

`--workers N` starts a LocalCluster of N single-threaded worker processes (GDAL decoding and
numpy release the GIL, but one process per core keeps block caches and memory per worker small);
`--scheduler tcp://host:8786` joins a running distributed cluster. Without either, work runs on
the threaded scheduler in this process.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

import dask

from wetmap.errors import WetmapError

if TYPE_CHECKING:
    from distributed import Client

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
