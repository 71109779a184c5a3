"""The Dask task of `wetmap tile`: read a batch of consecutive chips, filter them, store the kept ones."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any, cast

import numpy as np
import zarr
import zarr.codecs
import zarr.storage
from rasterio.windows import Window

from wetmap.chips.chunks import _store_kept
from wetmap.chips.reader import ChipInputs, ChipReader
from wetmap.chips.split import SPLITS
from wetmap.chips.store import LABEL_UNKNOWN, MASKS
from wetmap.runtime import STREAM_CACHE_MB, gdal_env

# With `unlabelled`, chips at least this clear are stored without labels too (pretraining).
UNLABELLED_CLEAR = 0.5


_READERS: dict[tuple[ChipInputs, int], ChipReader] = {}


def _reader(inputs: ChipInputs) -> ChipReader:
    """One open reader per thread and inputs: workers open the files once, not per task.

    Per thread, because a GDAL dataset handle must not be shared between threads.
    """
    key = (inputs, threading.get_ident())
    if key not in _READERS:
        _READERS[key] = ChipReader(inputs)
    return _READERS[key]


_STORES: dict[tuple[str, int], dict[str, zarr.Array]] = {}


def _store_arrays(store: str) -> dict[str, zarr.Array]:
    """The store's arrays, opened once per thread (opening reads their metadata from disk).

    Zarr's check of every chunk for emptiness is off: it runs in Zarr's one I/O thread and cost
    more than writing the few all-fill chunks there are (`_cut_batch` skips dropped chips).
    """
    key = (store, threading.get_ident())
    if key not in _STORES:
        group = zarr.open_group(store, mode="r+")
        _STORES[key] = {name: cast(zarr.Array, group[name]).with_config({"write_empty_chunks": True})
                        for name in MASKS}
    return _STORES[key]


def close_readers() -> None:
    """Close the readers and forget the stores this process opened (the in-process scheduler
    keeps its threads)."""
    while _READERS:
        _READERS.popitem()[1].close()
    _STORES.clear()


def _cut_batch(inputs: ChipInputs, store: str, jobs: Sequence[tuple[int, Window, str]], size: int,
               min_valid: float, unlabelled: bool = False) -> list[dict[str, Any]]:
    """`_cut_batch_rows`, with any failure (label codes found in this batch, a full disk)
    returned as a row, to be raised once every task has finished: a task that raises ends
    `dask.compute` while the other threads still read, and closing their datasets under them
    crashed the process."""
    try:
        return _cut_batch_rows(inputs, store, jobs, size, min_valid, unlabelled)
    except Exception as exc:  # noqa: BLE001 - re-raised by build_chip_store, type and traceback kept
        return [{"failure": exc}]


def _cut_batch_rows(inputs: ChipInputs, store: str, jobs: Sequence[tuple[int, Window, str]], size: int,
                    min_valid: float, unlabelled: bool = False) -> list[dict[str, Any]]:
    """Read, filter and store a batch of consecutive chips; return their index rows and sums.

    Chips are decoded straight into the batch's arrays; the chunks that hold no stored chip are
    never written (they read as fill). Stored: kept for training, or with `unlabelled` at least
    UNLABELLED_CLEAR clear whatever its labels (their image and clear mask, for pretraining).
    """
    first = jobs[0][0]
    assert [j[0] for j in jobs] == list(range(first, first + len(jobs))), "a batch's chips are consecutive"
    with gdal_env(STREAM_CACHE_MB):   # per process: a row of blocks, not the scene
        reader = _reader(inputs)
        arrays = _store_arrays(store)
        image = np.zeros((len(jobs), reader.n_bands, size, size), arrays["image"].dtype)
        label = np.full((len(jobs), size, size), LABEL_UNKNOWN, np.uint8)
        valid = np.zeros((len(jobs), size, size), bool)
        clear = np.zeros((len(jobs), size, size), bool)
        rows = []
        for k, (index, window, split) in enumerate(jobs):
            h, w = int(window.height), int(window.width)   # smaller than `size` only on a small raster
            counts = reader.read_into(window, image[k, :, :h, :w], label[k, :h, :w], valid[k, :h, :w],
                                      clear[k, :h, :w])
            frac = counts.valid / (h * w)
            keep = split in SPLITS and frac >= min_valid and counts.valid > 0
            stored = keep or (unlabelled and counts.clear >= UNLABELLED_CLEAR * h * w)
            row: dict[str, Any] = {"chip": index, "split": split, "kept": keep, "stored": stored, "valid_fraction": frac,
                                   "wetland_fraction": counts.wetland / counts.valid if counts.valid else 0.0,
                                   "clear_fraction": counts.clear / (h * w),
                                   "labelled_fraction": counts.labelled / (h * w)}
            if keep and split == "train":
                row["sums"] = (counts.clear, counts.sums, counts.squares)
            if not keep:
                label[k], valid[k] = LABEL_UNKNOWN, False
            if not stored:
                clear[k] = False
            rows.append(row)
        kept = [r["stored"] for r in rows]
        for name, data in (("image", image), ("label", label), ("valid", valid), ("clear", clear)):
            _store_kept(arrays[name], first, data, kept)
    return rows
