"""Sliding-window inference over whole scenes (one or several), streamed into QGIS-ready COGs.

Scenes are seen on one output grid (the first scene's, extended over all of them, or a given CRS /
resolution). A reader thread reads tiles (bands and cloud mask of every scene) ahead while the
model computes; batches go to the device (bf16/fp16 autocast and channels_last on GPUs and
bf16-capable CPUs). Per tile, scenes are combined where clear (`mosaic.combine_scenes`), tiles are
blended (`mosaic.StripAccumulator`) and rows are written as soon as they are final. Pixels clear in
no scene are written as 255: the cloudy part is never guessed.

With a Dask client, bands of tile rows are predicted on the workers (each loads the bundle once)
and written by the client; every tile sees the same batch and the same blending as in one
process, so the result is identical.
"""

from __future__ import annotations

import posixpath
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import geopandas as gpd
import numpy as np
import rasterio
import torch
from rasterio.crs import CRS
from rasterio.windows import Window

from wetmap.cloud import CloudMask
from wetmap.config import CloudConfig, PredictConfig
from wetmap.errors import WetmapError, WetmapWarning
from wetmap.io.outputs import OutputSet, verify
from wetmap.io.paths import gdal_path
from wetmap.io.raster import GDAL_ENV, Grid, mosaic_grid
from wetmap.io.readahead import read_ahead
from wetmap.io.storage import join, output_url, staged_output
from wetmap.io.vector import burn
from wetmap.model import Bundle
from wetmap.mosaic import (
    NODATA,
    StripAccumulator,
    class_labels,
    class_probability,
    combine_scenes,
    open_strip_writer,
    percent,
    to_cog,
    write_strip,
)
from wetmap.progress import tracker
from wetmap.scenes import CONVENTION, MaskSource, SceneReader, SceneSpec, open_scene, resolve_mask, scene_grid
from wetmap.scenes.check import check_range, level_mismatch
from wetmap.styles import paletted_qml, probability_qml
from wetmap.tiling import Tile, TileGrid

if TYPE_CHECKING:
    from distributed import Client


def resolve_device(name: str) -> torch.device:
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


# Test-time views: (quarter turns, flip left-right) of the dihedral group; flips = the identity,
# both mirror images and their product (a half turn).
TTA_VIEWS = {"none": ((0, False),), "flips": ((0, False), (0, True), (2, False), (2, True)),
             "dihedral": tuple((k, f) for k in range(4) for f in (False, True))}


class TilePredictor:
    """Runs the bundle's network on batches of raw tiles and returns class probabilities."""

    def __init__(self, bundle: Bundle, device: torch.device, precision: str = "auto", tta: str = "none") -> None:
        self.bundle, self.device, self.views = bundle, device, TTA_VIEWS[tta]
        self.model = bundle.model.to(device).eval()
        self.amp = autocast_dtype(device, precision)
        self.inputs = bundle.inputs
        self.channels_last = device.type == "cuda" or self.amp is not None
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)

    @torch.inference_mode()
    def __call__(self, raw: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """(N,channels,H,W) probabilities (see Bundle.probabilities) of raw (N,C,H,W) float32 bands;
        on the CPU `raw` is normalised in place (callers hand over batches they no longer need)."""
        x = torch.from_numpy(raw).to(self.device, non_blocking=True)
        ok = torch.from_numpy(valid).to(self.device, non_blocking=True)
        x = self.inputs(x, ok, inplace=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        total: torch.Tensor | None = None
        for turns, flip in self.views:
            view = torch.rot90(x, turns, (-2, -1)) if turns else x
            view = view.flip(-1) if flip else view
            with torch.autocast(self.device.type, dtype=self.amp or torch.float32, enabled=self.amp is not None):
                p = self.bundle.probabilities(self.model(view))
            p = p.flip(-1) if flip else p
            p = torch.rot90(p, -turns, (-2, -1)) if turns else p
            total = p if total is None else total.add_(p)
        assert total is not None, "TTA_VIEWS always hold the view itself"
        if len(self.views) > 1:
            total /= len(self.views)
        return total.cpu().numpy()


# Strips hold many blocks: GDAL decodes them on every core while the model waits for the batch.
# StripReader keeps what is read, so GDAL's own cache only buffers writes: a small one keeps
# memory from growing with the scene's width.
READ_ENV = {**GDAL_ENV, "GDAL_CACHEMAX": 64, "GDAL_NUM_THREADS": "ALL_CPUS"}


@dataclass(frozen=True)
class Scene:
    """One input scene as prediction reads it: what it is made of, and the cloud mask to use."""

    spec: SceneSpec
    mask: MaskSource | None = None

    @classmethod
    def open(cls, image: str | Path, clouds: str | Path | None = None,
             band_names: Sequence[str] | None = None) -> Scene:
        """`image`: any scene form; `clouds`: a mask file, "none", "detect", or None / "auto" for
        the product's own mask, else the detector's (pending until `ready`)."""
        spec = open_scene(image, band_names)
        return cls(spec, resolve_mask(spec, str(clouds) if clouds else None))

    @property
    def name(self) -> str:
        return self.spec.source.rstrip("/").rsplit("/", 1)[-1]

    def ready(self, cloud: CloudConfig) -> Scene:
        """The scene with its cloud mask detected, if it is to be (`wetmap.detection`)."""
        from wetmap.detection import ready_mask

        return replace(self, mask=ready_mask(self.spec, self.mask, cloud))


class SceneStack:
    """The scenes seen on the output grid, read tile by tile as (bands, valid mask) per scene.

    Each scene's bands are read through `scenes.SceneReader` (a file on the grid directly, others
    warped, bilinear; reflectance harmonised); its cloud mask is seen on the grid (nearest). Pixels
    outside a scene read as no data.
    """

    def __init__(self, scenes: Sequence[Scene], grid: Grid, bands: Sequence[str], cloud: CloudConfig) -> None:
        self._open: list = []
        self.layers: list[tuple[SceneReader, CloudMask | None]] = []
        try:
            for scene in scenes:
                if scene.mask is not None and scene.mask.pending:
                    raise RuntimeError(f"{scene.name}: its cloud mask is still to be detected (Scene.ready)")
                reader = SceneReader(scene.spec.select(bands), grid, strips=True)
                self._open.append(reader)
                mask = (CloudMask(scene.mask.path, grid, cloud, kind=scene.mask.kind, image_name=scene.spec.source)
                        if scene.mask else None)
                if mask is not None:
                    self._open.append(mask)
                self.layers.append((reader, mask))
        except BaseException:
            self.close()
            raise

    def read(self, tile: Tile) -> list[tuple[np.ndarray, np.ndarray]]:
        out = []
        for reader, mask in self.layers:
            raw, ok = reader.read(tile.window)
            if mask is not None:
                ok &= mask.valid(tile.window)
            out.append((raw, ok))
        return out

    def close(self) -> None:
        for item in reversed(self._open):
            item.close()
        self._open.clear()


def predict_strips(predictor: TilePredictor, stack: SceneStack, tiles: TileGrid, first: int, stop: int,
                   cfg: PredictConfig) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """(row offset, probabilities (channels,h,W), valid (h,W)) for each strip of rows that became final
    while tile rows first..stop-1 were predicted.

    Batches never cross a tile row, so a tile's batch (and so its exact output) does not depend
    on where a part of the scene starts.
    """
    acc = StripAccumulator(tiles, predictor.bundle.channels, min(8, cfg.window[1] // 4), first_row=first)
    last_col = tiles.shape[1] - 1
    wanted = (tile for i in range(first, stop) for tile in tiles.row(i))
    pending: list[tuple[Tile, list[tuple[np.ndarray, np.ndarray]]]] = []
    for tile, reads in read_ahead(wanted, lambda t: (stack.read(t),), depth=2 * cfg.batch_size):
        pending.append((tile, reads))
        if len(pending) == cfg.batch_size or tile.col == last_col:
            yield from _run_batch(pending, predictor, acc)
            pending = []


def _run_batch(batch: list[tuple[Tile, list[tuple[np.ndarray, np.ndarray]]]], predictor: TilePredictor,
               acc: StripAccumulator) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Predict, per scene, the tiles where that scene has a clear pixel; combine scenes; blend."""
    n_scenes = len(batch[0][1])
    probs: list[dict[int, np.ndarray]] = [{} for _ in range(n_scenes)]
    for s in range(n_scenes):
        live = [i for i, (_, reads) in enumerate(batch) if reads[s][1].any()]
        for shape in {batch[i][1][s][0].shape for i in live}:   # edge tiles of a small raster may differ
            group = [i for i in live if batch[i][1][s][0].shape == shape]
            out = predictor(np.stack([batch[i][1][s][0] for i in group]), np.stack([batch[i][1][s][1] for i in group]))
            probs[s].update(zip(group, out))
    k = predictor.bundle.channels
    for i, (tile, reads) in enumerate(batch):
        scenes = [s for s in range(n_scenes) if i in probs[s]]
        if scenes:
            p, ok = combine_scenes([probs[s][i] for s in scenes], [reads[s][1] for s in scenes])
        else:
            ok = np.zeros(reads[0][1].shape, bool)
            p = np.zeros((k, *ok.shape), np.float32)
        yield from acc.add(tile, p, ok)


@dataclass
class PredictResult:
    """What `predict_mosaic` wrote and saw: outputs, classes, pixel shares, time, device."""

    classes: Path | str               # a str when the output went to a URL
    probabilities: Path | str | None
    vectors: Path | str | None
    class_names: list[str]
    scenes: int
    pixels: int
    valid_fraction: float
    wetland_fraction: float
    seconds: float
    device: str
    precision: str
    scenes_read: list[str] = field(default_factory=list)   # per scene: its form, level, mask and rescaling


def part_bounds(tiles: TileGrid, megapixels: float) -> list[tuple[int, int]]:
    """Contiguous ranges [first, stop) of tile rows, each about `megapixels` of output (>= 1 row)."""
    per_row = tiles.stride * tiles.width
    rows = max(1, int(megapixels * 1e6 // per_row))
    count = tiles.shape[0]
    return [(a, min(a + rows, count)) for a in range(0, count, rows)]


_WORKER_PREDICTORS: dict[tuple[str, int, int, str, str, str], TilePredictor] = {}


def predict_part(bundle_path: str, scenes: Sequence[Scene], grid: Grid, cfg: PredictConfig, first: int,
                 stop: int) -> tuple[int, np.ndarray, np.ndarray]:
    """On a Dask worker: final rows of tile rows first..stop-1 as (row offset, classes, percent).

    Tile row first-1 is predicted again for context (blending needs it) and its rows dropped, so
    every output row is computed exactly as in one process. The bundle loads once per worker.
    """
    from wetmap.model import load_bundle

    stat = Path(bundle_path).stat()   # a retrained bundle at the same path is a new model
    key = (bundle_path, stat.st_mtime_ns, stat.st_size, cfg.device, cfg.precision, cfg.tta)
    if key not in _WORKER_PREDICTORS:
        _WORKER_PREDICTORS[key] = TilePredictor(load_bundle(bundle_path), resolve_device(cfg.device), cfg.precision,
                                                cfg.tta)
    predictor = _WORKER_PREDICTORS[key]
    tiles = TileGrid(grid.width, grid.height, *cfg.window)
    top = tiles.row_starts[first]
    bottom = tiles.row_starts[stop] if stop < tiles.shape[0] else grid.height
    classes = np.full((bottom - top, grid.width), NODATA, np.uint8)
    prob = np.full((bottom - top, grid.width), NODATA, np.uint8)
    wet = wetland_index(predictor.bundle.classes)
    with rasterio.Env(**READ_ENV):
        stack = SceneStack(scenes, grid, predictor.bundle.bands, cfg.cloud)
        try:
            for row, strip, valid in predict_strips(predictor, stack, tiles, max(0, first - 1), stop, cfg):
                lo, hi = max(row, top), min(row + valid.shape[0], bottom)
                if lo < hi:
                    part = slice(lo - row, hi - row)
                    classes[lo - top:hi - top] = class_labels(strip[:, part], valid[part], predictor.bundle.threshold)
                    prob[lo - top:hi - top] = percent(class_probability(strip[:, part], wet), valid[part])
        finally:
            stack.close()
    return top, classes, prob


def wetland_index(classes: Sequence[str]) -> int:
    return list(classes).index("wetland") if "wetland" in classes else 1


def predict_mosaic(bundle: Bundle | str | Path, images: Sequence[str | Path], out: str | Path, *,
                   clouds: Sequence[str | Path | None] | None = None, cfg: PredictConfig | None = None,
                   probabilities: bool = False, vectorize: bool = False, min_area_ha: float = 0.0,
                   crs: CRS | None = None, resolution: float | None = None, region: gpd.GeoSeries | None = None,
                   client: Client | None = None, overwrite: bool = False, band_names: Sequence[str] | None = None,
                   force: bool = False) -> PredictResult:
    """Predict one or several scenes into one class COG (optionally a probability COG and wetland
    polygons), each beside a QGIS style. `images` are scenes in any form (wetmap.scenes);
    `clouds` gives per image a mask file, "none", "detect", or None / "auto" for the product's own
    mask, else the detector's;
    `band_names` names stacked rasters' bands in order. With a `region` (polygons in any CRS),
    the map covers its box and pixels outside it are no data.

    A scene of another processing level than the model's training scene is a warning; one whose
    pixels lie far outside the training statistics is refused unless `force`.
    With a Dask `client`, `bundle` must be the bundle's path: workers load it themselves.
    `out` may be a URL (s3://...): the result is made locally, verified, then uploaded (io.storage).
    """
    cfg = cfg or PredictConfig()
    start = time.perf_counter()
    if not images:
        raise WetmapError("no input scene given")
    masks = list(clouds) if clouds is not None else [None] * len(images)
    if len(masks) != len(images):
        raise WetmapError(f"{len(masks)} cloud masks for {len(images)} scenes: give one per scene, in order")
    scenes = [Scene.open(i, c, band_names) for i, c in zip(images, masks)]
    url = output_url(out)
    if url is None:
        refuse_inputs_as_outputs(scenes, bundle, list(output_names(Path(out)).values()))
        return _predict_files(bundle, scenes, Path(out), cfg, probabilities, vectorize, min_area_ha, crs, resolution,
                              region, client, overwrite, force, start)
    folder = posixpath.dirname(url)
    names = [p.name for p in output_names(Path(posixpath.basename(url))).values()]
    refuse_inputs_as_outputs(scenes, bundle, [join(folder, name) for name in names])
    with staged_output(url, overwrite, names) as local:
        result = _predict_files(bundle, scenes, local, cfg, probabilities, vectorize, min_area_ha, crs, resolution,
                                region, client, True, force, start)

    def uploaded(path: Path | str | None) -> str | None:
        return None if path is None else join(folder, Path(path).name)

    return replace(result, classes=url, probabilities=uploaded(result.probabilities), vectors=uploaded(result.vectors))


def _predict_files(bundle: Bundle | str | Path, scenes: list[Scene], out: Path, cfg: PredictConfig, probabilities: bool,
                   vectorize: bool, min_area_ha: float, crs: CRS | None, resolution: float | None,
                   region: gpd.GeoSeries | None, client: Client | None, overwrite: bool, force: bool,
                   start: float) -> PredictResult:
    """The prediction's files under their local names `out`..., written as one OutputSet."""
    family = output_names(out)
    prob_path = family["probability"] if probabilities else None
    vec_path = family["polygons"] if vectorize else None
    roles = ["classes", "style", *(["probability", "probability_style"] if probabilities else []),
             *(["polygons"] if vectorize else [])]
    written = [family[role] for role in reversed(roles)]  # the class map last: once it is there, all are
    with OutputSet(written, overwrite, list(family.values())) as outputs:
        result = _predict_into(outputs, bundle, scenes, out, prob_path, vec_path, cfg, crs, resolution, region,
                               client, force, min_area_ha, start)
    return result


def output_names(out: Path) -> dict[str, Path]:
    """Every file of one prediction result, by role: all are replaced together."""
    prob = out.with_name(f"{out.stem}_probability{out.suffix}")
    return {"classes": out, "style": out.with_suffix(".qml"), "probability": prob,
            "probability_style": prob.with_suffix(".qml"), "polygons": out.with_suffix(".gpkg")}


def _predict_into(outputs: OutputSet, bundle: Bundle | str | Path, scenes: list[Scene], out: Path,
                  prob_path: Path | None, vec_path: Path | None, cfg: PredictConfig, crs: CRS | None,
                  resolution: float | None, region: gpd.GeoSeries | None, client: Client | None, force: bool,
                  min_area_ha: float, start: float) -> PredictResult:
    if client is not None and isinstance(bundle, Bundle):
        raise WetmapError("Dask prediction needs the bundle's path, so that each worker loads it")
    bundle_path = str(bundle) if not isinstance(bundle, Bundle) else None
    loaded: Bundle | None = bundle if isinstance(bundle, Bundle) else None
    if bundle_path is not None and client is None:
        from wetmap.model import load_bundle

        loaded = load_bundle(bundle_path)
    device = resolve_device(cfg.device)
    info = _bundle_info(loaded, bundle_path)
    cfg = cfg.windows_for(info["chip_size"])
    check_scenes(scenes, info, force)
    scenes[:] = [scene.ready(cfg.cloud) for scene in scenes]   # inputs checked: detect clouds where asked
    notes = scene_lines(scenes)
    clip = (region.crs, tuple(region.total_bounds)) if region is not None else None
    grid = mosaic_grid([scene_grid(s.spec.select(info["bands"])) for s in scenes], crs, resolution, clip)
    inside = region.to_crs(grid.crs).union_all() if region is not None else None
    tiles = TileGrid(grid.width, grid.height, *cfg.window)
    tags = {"CLASSES": ",".join(info["classes"]), "MODEL_BANDS": ",".join(info["bands"]),
            "WETLAND_THRESHOLD": f"{info['threshold']:g}", "WINDOW": f"{cfg.tile_size} px, overlap {cfg.overlap}",
            "SOURCE": ",".join(s.name for s in scenes), "REFLECTANCE": CONVENTION,
            "CLOUD_MASKS": "; ".join(f"{s.name}: {s.mask.describe() if s.mask else 'none'}" for s in scenes)}
    counts = np.zeros(3, np.int64)  # pixels, valid, wetland
    wet = wetland_index(info["classes"])
    precision = "fp32"
    cls_tmp, prob_tmp = outputs.scratch(out, ".strips.tif"), outputs.scratch(out, ".pstrips.tif")
    with rasterio.Env(**READ_ENV), tracker("predict", grid.height, "rows") as advance:
        cls_dst = open_strip_writer(cls_tmp, grid, "uint8", f"{info['classes'][wet]} class", info["colors"], tags)
        prob_dst = (open_strip_writer(prob_tmp, grid, "uint8", f"{info['classes'][wet]} probability (%)", None, tags)
                    if prob_path else None)

        def write(row: int, labels: np.ndarray, pct: np.ndarray) -> None:
            if inside is not None:
                outside = burn([inside], grid.window_transform(Window(0, row, grid.width, labels.shape[0])),
                               labels.shape) == 0
                labels[outside] = NODATA
                pct[outside] = NODATA
            write_strip(cls_dst, row, labels)
            if prob_dst is not None:
                write_strip(prob_dst, row, pct)
            advance(labels.shape[0])
            counts[0] += labels.size
            counts[1] += int(np.count_nonzero(labels != NODATA))
            counts[2] += int(np.count_nonzero(labels == wet))

        try:
            if loaded is not None:
                predictor = TilePredictor(loaded, device, cfg.precision, cfg.tta)
                precision = str(predictor.amp).removeprefix("torch.") if predictor.amp else "fp32"
                stack = SceneStack(scenes, grid, loaded.bands, cfg.cloud)
                try:
                    for row, strip, valid in predict_strips(predictor, stack, tiles, 0, tiles.shape[0], cfg):
                        write(row, class_labels(strip, valid, info["threshold"]),
                              percent(class_probability(strip, wet), valid))
                finally:
                    stack.close()
            elif bundle_path is not None:
                _predict_on_cluster(client, bundle_path, scenes, grid, cfg, tiles, write)
                precision = cfg.precision
        finally:
            cls_dst.close()
            if prob_dst is not None:
                prob_dst.close()
        # GDAL only logs a failed flush of its block cache on close: the strips are read back,
        # and each COG must hold the same pixels (io.outputs checks it before the rename).
        outputs.expect(out, verify(cls_tmp, out))
        to_cog(cls_tmp, outputs[out], "NEAREST")
        outputs[out.with_suffix(".qml")].write_text(paletted_qml(info["classes"], info["colors"], NODATA))
        if prob_path is not None:
            outputs.expect(prob_path, verify(prob_tmp, prob_path))
            to_cog(prob_tmp, outputs[prob_path], "AVERAGE")
            outputs[prob_path.with_suffix(".qml")].write_text(probability_qml(NODATA))
    if vec_path is not None:
        from wetmap.vectorize import vectorize_classes

        vectorize_classes(outputs[out], outputs[vec_path], wet, info["classes"][wet], min_area_ha,
                          info["colors"].get(wet))
    n_pixels, n_valid, n_wetland = (int(v) for v in counts)
    return PredictResult(out, prob_path, vec_path, list(info["classes"]), len(scenes), n_pixels,
                         n_valid / max(1, n_pixels), n_wetland / max(1, n_valid), time.perf_counter() - start,
                         str(device), precision, notes)


def refuse_inputs_as_outputs(scenes: Sequence[Scene], bundle: Bundle | str | Path,
                             outputs: Sequence[Path | str]) -> None:
    """An output that would replace one of the run's own inputs is refused, `--overwrite` or not;
    local files and URLs alike (both compared as GDAL opens them)."""
    def where(path: str | Path) -> str:
        text = gdal_path(path)
        return text if text.startswith("/vsi") else str(Path(text).resolve())

    inputs = {where(p) for s in scenes for p in (*(b.path for b in s.spec.bands), *([s.mask.path] if s.mask else []))}
    if not isinstance(bundle, Bundle):
        inputs.add(where(bundle))
    for path in outputs:
        if where(path) in inputs:
            raise WetmapError("this output is also an input of the run; choose another output name", path)


def check_scenes(scenes: Sequence[Scene], info: dict[str, Any], force: bool) -> None:
    """Warn of a processing level other than the model's; refuse values far outside its training
    statistics (unless `force`)."""
    for scene in scenes:
        bands = scene.spec.select(info["bands"])
        warning = level_mismatch(info.get("scene", {}), scene.spec)
        if warning:
            warnings.warn(warning, WetmapWarning, stacklevel=3)
        for line in scene.spec.substitutions(info["bands"]):
            warnings.warn(f"{scene.spec.source}: {line}", WetmapWarning, stacklevel=3)
        if not force:
            check_range(scene.spec, bands, info["bands"], info["mean"], info["std"])


def scene_lines(scenes: Sequence[Scene]) -> list[str]:
    """One line per scene saying how it is read: form, level, cloud mask, rescaling."""
    lines = []
    for scene in scenes:
        spec = scene.spec
        what = ", ".join(x for x in (spec.form, spec.level) if x)
        lines.append(f"{scene.name} ({what}): clouds {scene.mask.describe() if scene.mask else 'none'}"
                     + "".join(f"; {note}" for note in spec.notes))
    return lines


def _bundle_info(bundle: Bundle | None, path: str | None) -> dict[str, Any]:
    """Classes, bands, colours, statistics and training scene, from a loaded bundle or (on the
    Dask path) read from the file."""
    if bundle is not None:
        return {"classes": bundle.classes, "bands": bundle.bands, "colors": bundle.colors, "mean": bundle.mean,
                "std": bundle.std, "scene": bundle.scene, "chip_size": bundle.chip_size,
                "threshold": bundle.threshold}
    from wetmap.model import read_bundle_info

    if path is None:
        raise TypeError("_bundle_info needs a bundle or its path")
    return read_bundle_info(path)


def _predict_on_cluster(client, bundle_path: str, scenes: list[Scene], grid: Grid, cfg: PredictConfig,
                        tiles: TileGrid, write) -> None:
    """Parts of `cfg.part_megapixels` on the workers, at most two per worker in flight, each written
    as it arrives (in any order: they do not overlap), so the client never holds more than those."""
    from distributed import as_completed

    workers = max(1, len(client.scheduler_info().get("workers", {})))
    parts = iter(part_bounds(tiles, cfg.part_megapixels))

    def submit() -> object | None:
        bounds = next(parts, None)
        return None if bounds is None else client.submit(predict_part, bundle_path, scenes, grid, cfg, *bounds,
                                                         pure=False)

    running = as_completed([f for f in (submit() for _ in range(2 * workers)) if f is not None])
    for future in running:
        top, labels, pct = future.result()
        future.release()
        write(top, labels, pct)
        following = submit()
        if following is not None:
            running.add(following)


def predict_scene(bundle: Bundle | str | Path, image: str | Path, out: str | Path, *, clouds: str | Path | None = None,
                  **options: Any) -> PredictResult:
    """One scene on its own grid: `predict_mosaic` with a single image."""
    return predict_mosaic(bundle, [image], out, clouds=[clouds], **options)
