"""Read ahead in a background thread while the caller computes.

GDAL decodes without holding the GIL, so reading the next windows overlaps the model or the
counting of the current one; the queue's depth bounds the memory this costs.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")


def read_ahead(items: Iterable[T], read: Callable[[T], tuple[Any, ...]], depth: int) -> Iterator[tuple[Any, ...]]:
    """Yield (item, *read(item)) in order, reading up to `depth` items ahead; reader errors are re-raised here."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def worker() -> None:
        try:
            for item in items:
                if stop.is_set():
                    return
                q.put((item, *read(item)))
            q.put(done)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which re-raises it
            q.put(exc)

    thread = threading.Thread(target=worker, daemon=True)
    thread.start()
    try:
        while (entry := q.get()) is not done:
            if isinstance(entry, BaseException):
                raise entry
            yield entry
    finally:
        stop.set()
        while thread.is_alive():
            try:
                q.get_nowait()
            except queue.Empty:
                thread.join(0.05)
