"""Where Dask work runs: in this process (threads), a LocalCluster of N processes, or a cluster.

`--workers N` starts a LocalCluster of N single-threaded worker processes (GDAL decoding and
numpy release the GIL, but one process per core keeps block caches and memory per worker small);
`--scheduler tcp://host:8786` joins a running distributed cluster. Without either, work runs on
the threaded scheduler in this process.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from wetmap.errors import WetmapError


@contextlib.contextmanager
def dask_client(workers: int | None = None, scheduler: str | None = None) -> Iterator[object | None]:
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
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                      memory_limit="auto") as cluster, Client(cluster) as client:
        yield client
