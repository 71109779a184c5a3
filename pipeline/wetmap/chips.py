"""Training chips: aligned (image, label, valid) windows, and the Zarr chip store of `wetmap tile`.

`ChipReader` opens the image, the labels (raster on any grid, or polygons) and the cloud mask once
and reads any window of the image grid as a chip, every layer aligned pixel for pixel.

`build_chip_store` cuts a whole scene into chips with Dask: each task takes a batch of consecutive
tiles, decodes their windows straight into the batch's arrays, writes the chips that have enough
valid pixels into a Zarr store (image: one chunk per chip; labels, valid and clear masks: one
chunk per batch; so tasks never write the same file), and returns per-band sums over the clear
training pixels, from which the normalisation statistics come in the same pass. Beside the store: a
GeoPackage index of chip footprints with their split, and JSON metadata. Every task reads only its
own windows: memory stays flat however large the scene.
"""

from __future__ import annotations

import itertools
import json
import shutil
import threading
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import dask
import geopandas as gpd
import numpy as np
import rasterio
import shapely
import zarr
import zarr.codecs
import zarr.storage
from dask.callbacks import Callback
from rasterio.windows import Window
from zarr.codecs.bytes import Endian
from zarr.core.chunk_key_encodings import ChunkKeyEncodingParams
from zarr.core.metadata import ArrayV3Metadata

from wetmap import __version__
from wetmap.chipmask import ChipCounts, mask_chip
from wetmap.chipnotes import empty_splits, no_chip_kept
from wetmap.cloud import CloudMask
from wetmap.config import DEFAULT_BANDS, CloudConfig, TileConfig
from wetmap.errors import WetmapError, WetmapWarning
from wetmap.io.outputs import check_writable, commit_dir, remove_stale, scratch_path, write_failure
from wetmap.io.raster import Grid
from wetmap.io.vector import open_labels, read_polygons
from wetmap.labels import LabelCodes
from wetmap.progress import tracker
from wetmap.scenes import MaskSource, SceneReader, SceneSpec, open_scene, resolve_mask, scene_grid
from wetmap.tiling import Tile, TileGrid

if TYPE_CHECKING:
    from distributed import Client

LABEL_UNKNOWN = 255
SPLITS = ("train", "val", "test")
BUFFER = "buffer"  # a chip touching blocks of two splits: dropped, so no pixel is in two splits
STORE, INDEX, META = "chips.zarr", "chips.gpkg", "chips.json"
# Format 2 adds `clear`: clear pixels with data, labelled or not (format 1 kept only `valid`).
CHIPS_FORMAT = "wetmap-chips/2"
MASKS = ("image", "label", "valid", "clear")
# With `unlabelled`, chips at least this clear are stored without labels too (pretraining).
UNLABELLED_CLEAR = 0.5
CHIPS_PER_TASK = 16  # tiles are visited in row-major order, so a batch reuses the blocks it decoded
TILE_CACHE_MB = 64   # GDAL block cache per process while tiling: a row of blocks, not the scene
FLAT_KEYS: ChunkKeyEncodingParams = {"name": "default", "separator": "."}


@dataclass(frozen=True)
class ChipInputs:
    """What a chip is cut from; small and picklable, so Dask workers can open it themselves."""

    scene: SceneSpec
    labels: str
    mask: MaskSource | None = None
    bands: tuple[str, ...] = tuple(DEFAULT_BANDS)
    scl_invalid: tuple[int, ...] = tuple(CloudConfig().scl_invalid)
    dilate: int = 0
    codes: LabelCodes = LabelCodes()

    @classmethod
    def of(cls, image: str | Path, labels: str | Path, clouds: str | Path | None, bands: Sequence[str],
           cloud: CloudConfig, band_names: Sequence[str] | None = None, codes: LabelCodes | None = None) -> ChipInputs:
        """`image`: any scene form; `clouds`: a mask file, "none", or None for the product's own;
        `codes`: how the label raster's values map to classes (default: they are class indexes)."""
        scene = open_scene(image, band_names)
        return cls(scene, str(labels), resolve_mask(scene, str(clouds) if clouds else None), tuple(bands),
                   tuple(cloud.scl_invalid), cloud.dilate, codes or LabelCodes())

    @property
    def cloud(self) -> CloudConfig:
        return CloudConfig(scl_invalid=list(self.scl_invalid), dilate=self.dilate)

    def ready(self, cloud: CloudConfig) -> ChipInputs:
        """These inputs with their cloud mask detected, if it is to be (`wetmap.detection`)."""
        from wetmap.detection import ready_mask

        return replace(self, mask=ready_mask(self.scene, self.mask, cloud))

    def describe(self) -> dict[str, Any]:
        """The inputs as chips.json records them."""
        selected = self.scene.select(self.bands)
        return {"labels": self.labels,
                "clouds": self.mask.describe() if self.mask else None, "bands": list(self.bands),
                "read_from": [f"{b.name}: {b.label} ({b.path})" for b in selected],
                "scl_invalid": list(self.scl_invalid), "dilate": self.dilate,
                "label_codes": {"classes": list(self.codes.classes), "values": [list(v) for v in self.codes.values]}}


@dataclass
class Chip:
    """One training chip as read from the inputs, before it is stored."""

    raw: np.ndarray     # (C,h,w) reflectance x 10000 (the file's own values when it needs no rescaling)
    label: np.ndarray   # (h,w) uint8; 255 where the label is unknown or the image is no data
    valid: np.ndarray   # (h,w) bool: clear (not cloud / shadow / no data) and labelled
    clear: np.ndarray   # (h,w) bool: clear, labelled or not: the pixels the network sees


class ChipReader:
    """Scene bands, labels and clouds opened once, read window by window on the scene's grid."""

    def __init__(self, inputs: ChipInputs) -> None:
        self.inputs = inputs
        bands = inputs.scene.select(inputs.bands)
        self.grid = scene_grid(bands)
        self.scene = SceneReader(bands, self.grid, strips=True)   # warped bands: once per strip
        self.dtype = self.scene.dtype
        self.n_bands = len(bands)
        try:
            name = inputs.scene.source
            self.labels = open_labels(inputs.labels, self.grid, image_name=name, unknown=LABEL_UNKNOWN,
                                      codes=inputs.codes)
            # A mask still to be detected is not read: this reader only checks the inputs (see `ready`).
            self.clouds = (CloudMask(inputs.mask.path, self.grid, inputs.cloud, kind=inputs.mask.kind, image_name=name)
                           if inputs.mask and not inputs.mask.pending else None)
            self.pending = bool(inputs.mask and inputs.mask.pending)
        except BaseException:
            self.scene.close()
            raise

    def read_into(self, window: Window, raw: np.ndarray, label: np.ndarray, valid: np.ndarray,
                  clear: np.ndarray) -> ChipCounts:
        """Read `window` into (C,h,w), (h,w), (h,w) and (h,w) arrays (views into a batch are
        fine: the image is decoded straight into them), masked by `mask_chip`."""
        if self.pending:
            raise RuntimeError("the cloud mask is still to be detected: read from ChipInputs.ready()")
        ok = self.scene.read_into(window, raw)
        label[...] = self.labels.read(window)
        labelled = int(np.count_nonzero(label != LABEL_UNKNOWN))
        valid[...] = self.clouds.valid(window) if self.clouds is not None else True
        if ok is not None:   # a rescaled scene says itself where it has no data
            label[~ok] = LABEL_UNKNOWN
            valid &= ok
        counts = mask_chip(raw, label, valid, clear, self.scene.nodata, LABEL_UNKNOWN)
        counts.labelled = labelled
        return counts

    def read(self, window: Window) -> Chip:
        shape = (int(window.height), int(window.width))
        chip = Chip(np.empty((self.n_bands, *shape), self.dtype), np.empty(shape, np.uint8), np.empty(shape, bool),
                    np.empty(shape, bool))
        self.read_into(window, chip.raw, chip.label, chip.valid, chip.clear)
        return chip

    def close(self) -> None:
        self.labels.close()
        if self.clouds is not None:
            self.clouds.close()
        self.scene.close()

    def __enter__(self) -> ChipReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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


# --- spatial split ------------------------------------------------------------------------------

def _touched_blocks(tile: Tile, block: int) -> set[tuple[int, int]]:
    w = tile.window
    r0, c0 = int(w.row_off), int(w.col_off)
    r1, c1 = r0 + int(w.height) - 1, c0 + int(w.width) - 1
    return {(r, c) for r in range(r0 // block, r1 // block + 1) for c in range(c0 // block, c1 // block + 1)}


def split_by_blocks(tiles: TileGrid, block: int, val: float, test: float, seed: int) -> list[str]:
    """Split per tile: square blocks of `block` pixels go wholly to train, val or test (seeded)."""
    rows, cols = -(-tiles.height // block), -(-tiles.width // block)
    order = np.random.default_rng([seed, 11]).permutation(rows * cols)
    n_val, n_test = round(val * len(order)), round(test * len(order))
    if len(order) - n_val - n_test < 1:
        raise WetmapError(f"{len(order)} split blocks of {block} px are too few for val {val} / test {test}; "
                          "use a smaller split block")
    names = np.array(["val"] * n_val + ["test"] * n_test + ["train"] * (len(order) - n_val - n_test))
    block_split = {int(b): str(name) for b, name in zip(order, names)}
    out = []
    for tile in tiles:
        splits = {block_split[r * cols + c] for r, c in _touched_blocks(tile, block)}
        out.append(splits.pop() if len(splits) == 1 else BUFFER)
    return out


def split_by_regions(tiles: TileGrid, grid: Grid, regions: str | Path, split_field: str | None,
                     val: float, test: float, seed: int) -> tuple[list[str], list[str] | None]:
    """Split per tile by the region it lies in: a region's `split_field` value, else seeded draw.

    Tiles outside every region are left out ("none"); tiles touching regions of two splits are
    dropped as buffer. Also returns the regions' split values when they came from the field.
    """
    gdf = read_polygons(regions, grid.crs)
    if split_field is not None:
        if split_field not in gdf.columns:
            raise WetmapError(f"no field '{split_field}'", regions)
        values = gdf[split_field].astype(str).str.lower()
        bad = sorted(set(values) - set(SPLITS))
        if bad:
            raise WetmapError(f"field '{split_field}' must hold train, val or test; found {', '.join(bad)}", regions)
        region_split = values.tolist()
    else:
        draw = np.random.default_rng([seed, 13]).random(len(gdf))
        region_split = np.where(draw < val, "val", np.where(draw < val + test, "test", "train")).tolist()
    tree = shapely.STRtree(gdf.geometry.values)
    out = []
    for tile in tiles:
        box = shapely.box(*rasterio.windows.bounds(tile.window, grid.transform))
        hits = {region_split[i] for i in tree.query(box, predicate="intersects")}
        out.append("none" if not hits else hits.pop() if len(hits) == 1 else BUFFER)
    return out, (sorted(set(region_split)) if split_field is not None else None)


# --- the chip store -----------------------------------------------------------------------------

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
    with rasterio.Env(GDAL_CACHEMAX=TILE_CACHE_MB):
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


class _TasksDone(Callback):
    """Calls `advance(1)` as each task of one function finishes on Dask's local scheduler."""

    def __init__(self, name: str, advance: Callable[[int], None]) -> None:
        super().__init__()
        self.name, self.advance = name, advance

    def _posttask(self, key: object, result: object, dsk: object, state: object, worker_id: object) -> None:
        if str(key[0] if isinstance(key, tuple) else key).startswith(self.name):
            self.advance(1)


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
    writes. Through zarr-python, every chunk cost ~0.6 ms of Python in Zarr's one event-loop
    thread, a fresh buffer and a temporary file renamed into place, and the tiler's two threads
    spent about a third of the run waiting on it (an A/B run of bench_tile.py's tiling, 6 rounds:
    0.93 of the read rate with plain files, 0.68 through Zarr). Compressed chunks go through Zarr.
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


def _stats(rows: list[dict[str, Any]], bands: Sequence[str]) -> dict[str, Any]:
    """Per-band mean and standard deviation over the clear pixels of the training chips."""
    sums = [r["sums"] for r in rows if "sums" in r]
    n = sum(s[0] for s in sums)
    total = np.sum([s[1] for s in sums], axis=0)
    squares = np.sum([s[2] for s in sums], axis=0)
    mean = total / n
    std = np.sqrt(np.maximum(squares / n - mean * mean, 0.0))
    return {"bands": list(bands), "mean": mean.tolist(), "std": np.where(std > 0, std, 1.0).tolist(),
            "pixels": int(n), "over": "clear pixels of the training chips"}


@dataclass
class ChipStoreSummary:
    """What `wetmap tile` wrote: the store, its inputs, chips per split and the tiles looked at."""

    path: Path
    inputs: ChipInputs
    chips: dict[str, int]
    tiles: int
    mean: list[float]
    std: list[float]
    empty: dict[str, str]   # split -> why it kept no chip (also warned)


def build_chip_store(cfg: TileConfig, out: str | Path, *, overwrite: bool = False,
                     client: Client | None = None) -> ChipStoreSummary:
    """Cut `cfg.image` into chips (image, label, valid) in a Zarr store with index and statistics."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise WetmapError("output folder exists; pass --overwrite to replace it", out)
    inputs = ChipInputs.of(cfg.image, cfg.labels, cfg.clouds, cfg.bands, cfg.cloud, cfg.band_names,
                           LabelCodes.of(cfg.classes, cfg.label_values))
    with ChipReader(inputs) as reader:  # validates every input here, before any work is sent out
        grid, dtype, n_bands = reader.grid, reader.dtype, reader.n_bands
    inputs = inputs.ready(cfg.cloud)
    tiles = TileGrid(grid.width, grid.height, cfg.size, cfg.overlap)
    if cfg.split.regions is not None:
        splits, region_values = split_by_regions(tiles, grid, cfg.split.regions, cfg.split.region_field,
                                                 cfg.split.val, cfg.split.test, cfg.seed)
    else:
        splits, region_values = split_by_blocks(tiles, cfg.split.block, cfg.split.val, cfg.split.test, cfg.seed), None

    check_writable(out, overwrite=True)  # its folder exists (the store itself was checked above)
    remove_stale(out)
    tmp = scratch_path(out, "")
    tmp.mkdir()
    try:
        store = str(tmp / STORE)
        group = zarr.open_group(store, mode="w")
        # Image: one chunk (file) per chip, for training's random reads. Labels and valid masks:
        # one chunk per task's batch; fewer files was faster here, whether the chunks are raw
        # (an A/B run: 0.96 of the read rate against 0.70 with three files per chip) or
        # compressed (they compress ~100x, and every Zarr chunk costs Python in Zarr's one I/O
        # thread). Raw by default: a chip store is scratch space on local disk, and raw chunks
        # are written as plain files (`_store_chunks`); `compress` gives LZ4 through Zarr. Not
        # sharded: Zarr builds each shard in fresh memory, and the page faults cost more than the
        # extra files (an A/B run of the benchmark's tiling with LZ4 chips: 0.64 of the read rate
        # sharded, 0.74 not). Chunk files side by side: no directory per chunk.
        compressors = [zarr.codecs.BloscCodec(cname="lz4", clevel=1, shuffle="shuffle")] if cfg.compress else None
        n, s = len(tiles), cfg.size
        group.create_array("image", shape=(n, n_bands, s, s), chunks=(1, n_bands, s, s), dtype=dtype, fill_value=0,
                           compressors=compressors, chunk_key_encoding=FLAT_KEYS)
        for name, dtype_, fill in (("label", "uint8", LABEL_UNKNOWN), ("valid", "bool", False), ("clear", "bool", False)):
            group.create_array(name, shape=(n, s, s), chunks=(CHIPS_PER_TASK, s, s), dtype=dtype_, fill_value=fill,
                               compressors=compressors, chunk_key_encoding=FLAT_KEYS)
        all_tiles = list(tiles)
        batches: dict[int, list[tuple[int, Window, str]]] = {}
        for i, (tile, split) in enumerate(zip(all_tiles, splits)):
            batches.setdefault(i // CHIPS_PER_TASK, []).append((i, tile.window, split))
        tasks = [dask.delayed(_cut_batch)(inputs, store, jobs, s, cfg.min_valid, cfg.unlabelled)
                 for jobs in batches.values()]
        try:
            with tracker("tile", len(tasks), f"batches of {CHIPS_PER_TASK} tiles") as advance:
                if client is not None:
                    from distributed import as_completed

                    futures = client.compute(tasks)
                    for _ in as_completed(futures):
                        advance(1)
                    results = client.gather(futures)
                else:
                    with _TasksDone(_cut_batch.__name__, advance):
                        results = dask.compute(*tasks, scheduler="threads")
        finally:
            close_readers()
        failures = [r["failure"] for part in results for r in part if "failure" in r]
        if failures:
            raise failures[0]
        rows = sorted((r for part in results for r in part), key=lambda r: r["chip"])
        if not any(r["kept"] and r["split"] == "train" for r in rows):
            raise WetmapError(no_chip_kept(rows, cfg, inputs.mask.describe() if inputs.mask else "no cloud mask"))
        empty = empty_splits(rows, tiles, cfg, region_values)
        for split, reason in empty.items():
            warnings.warn(f"{out}: the {split} split is empty: {reason}", WetmapWarning, stacklevel=2)
        stats = _stats(rows, cfg.bands)
        _write_index(tmp / INDEX, rows, all_tiles, grid)
        counts = {name: sum(1 for r in rows if r["kept"] and r["split"] == name) for name in SPLITS}
        meta = {
            "format": CHIPS_FORMAT, "wetmap": __version__, "inputs": inputs.describe(),
            "scene": inputs.scene.describe(),
            "crs": grid.crs.to_wkt(), "transform": list(grid.transform)[:6], "width": grid.width, "height": grid.height,
            "size": cfg.size, "overlap": cfg.overlap, "min_valid": cfg.min_valid, "seed": cfg.seed,
            "compress": cfg.compress, "unlabelled": cfg.unlabelled,
            "split": cfg.split.model_dump(mode="json"), "chips": counts, "tiles": len(all_tiles),
            "dropped_buffer": sum(1 for r in rows if r["split"] == BUFFER), "stats": stats, "empty_splits": empty,
        }
        (tmp / META).write_text(json.dumps(meta, indent=2))
        commit_dir(tmp, out, overwrite)
    except OSError as exc:
        raise (write_failure(out, exc) or exc) from exc
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return ChipStoreSummary(out, inputs, counts, len(all_tiles), stats["mean"], stats["std"], empty)


def _write_index(path: Path, rows: list[dict[str, Any]], tiles: list[Tile], grid: Grid) -> None:
    boxes = [shapely.box(*rasterio.windows.bounds(t.window, grid.transform)) for t in tiles]
    gdf = gpd.GeoDataFrame({
        "chip": [r["chip"] for r in rows],
        "row": [t.row for t in tiles], "col": [t.col for t in tiles],
        "split": [r["split"] for r in rows], "kept": [r["kept"] for r in rows], "stored": [r["stored"] for r in rows],
        "valid_fraction": [round(r["valid_fraction"], 6) for r in rows],
        "wetland_fraction": [round(r["wetland_fraction"], 6) for r in rows],
        "clear_fraction": [round(r["clear_fraction"], 6) for r in rows],
        "labelled_fraction": [round(r["labelled_fraction"], 6) for r in rows],
    }, geometry=boxes, crs=grid.crs)
    gdf.to_file(path, driver="GPKG", engine="pyogrio", layer="chips")


@dataclass
class ChipStore:
    """A chip store opened for reading: lazy Zarr arrays, the index and the metadata."""

    path: Path
    image: Any
    label: Any
    valid: Any
    clear: Any
    index: gpd.GeoDataFrame
    meta: dict[str, Any]

    def chips(self, split: str) -> np.ndarray:
        """Positions in the arrays of the kept chips of one split."""
        sel = self.index[(self.index["split"] == split) & self.index["kept"]]
        return sel["chip"].to_numpy()


def open_chip_store(path: str | Path) -> ChipStore:
    path = Path(path)
    if not (path / META).exists():
        raise WetmapError("not a wetmap chip store (no chips.json)", path)
    meta = json.loads((path / META).read_text())
    if meta.get("format") != CHIPS_FORMAT:
        raise WetmapError(f"chip store of format {meta.get('format')}, this wetmap reads {CHIPS_FORMAT} "
                          "(which keeps the clear pixels the network sees): cut it again with wetmap tile", path)
    group = zarr.open_group(str(path / STORE), mode="r")
    index = gpd.read_file(path / INDEX, engine="pyogrio")
    return ChipStore(path, group["image"], group["label"], group["valid"], group["clear"], index, meta)
