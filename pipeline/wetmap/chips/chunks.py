"""Raw Zarr chunk files written as plain files (faster than Zarr's one I/O thread for raw chunks)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import zarr
import zarr.codecs
import zarr.storage
from zarr.codecs.bytes import Endian
from zarr.core.chunk_key_encodings import ChunkKeyEncodingParams
from zarr.core.metadata import ArrayV3Metadata

FLAT_KEYS: ChunkKeyEncodingParams = {"name": "default", "separator": "."}


def _raw_chunk_folder(array: zarr.Array) -> Path | None:
    """Where `array` keeps its chunk files, if it stores them raw in a local folder; else None.

    A raw chunk (Zarr v3's `bytes` codec alone, little endian or single bytes) is a file holding
    the whole chunk's bytes in C order, named by the array's chunk key encoding.
    """
    if not isinstance(array.metadata, ArrayV3Metadata):
        return None
    codecs = array.metadata.codecs
    if (isinstance(array.store, zarr.storage.LocalStore) and len(codecs) == 1
            and isinstance(codecs[0], zarr.codecs.BytesCodec) and codecs[0].endian in (Endian.little, None)):
        return Path(array.store.root) / array.path
    return None


def _store_chunks(array: zarr.Array, start: int, data: np.ndarray) -> None:
    """Store `data` at positions `start`... of `array`'s first axis: whole chunks of it.

    Raw chunks are written as plain files by the calling thread, which releases the GIL while it
    writes. Through zarr-python, every chunk costs Python in Zarr's one event-loop thread, a fresh
    buffer and a temporary file renamed into place, and the tiler's threads wait on it. Measured
    with `bench_tile.py --writers` (8192^2, 6 interleaved rounds), as tiling rates over this
    writer's: zarr-python 0.70, zarr-python with the `zarrs` codec pipeline 0.86, tensorstore 0.74;
    none within the 10 % that would have made the library worth its dependency. Compressed chunks
    go through zarr-python (zarrs was 1.25x faster there; the compressed store is the option,
    not the default, so it is not a dependency).
    """
    folder = _raw_chunk_folder(array)
    if folder is None:
        array[start:start + len(data)] = data
        return
    step = array.chunks[0]
    assert start % step == 0 and data.shape[1:] == array.chunks[1:], "whole chunks"
    little = data.dtype.newbyteorder("<")
    for k in range(0, len(data), step):
        chunk = data[k:k + step]
        if len(chunk) < step:   # the array's last chunk, which Zarr stores at full size
            pad = np.full((step - len(chunk), *chunk.shape[1:]), array.fill_value, chunk.dtype)
            chunk = np.concatenate([chunk, pad])
        key = array.metadata.encode_chunk_key(((start + k) // step,) + (0,) * (data.ndim - 1))
        (folder / key).write_bytes(np.ascontiguousarray(chunk, dtype=little).data)


def _store_kept(array: zarr.Array, first: int, data: np.ndarray, kept: Sequence[bool]) -> None:
    """Store the chunks of a batch (positions `first`... of `array`) that hold a stored chip.

    Chunks with none are never written: they read as the fill value (no data, unknown, invalid).
    """
    step = array.chunks[0]
    flags = [any(kept[k:k + step]) for k in range(0, len(data), step)]
    k = 0
    for keep, run in itertools.groupby(flags):
        n = len(list(run)) * step
        if keep:
            _store_chunks(array, first + k, data[k:k + n])
        k += n
