"""Sliding-window inference over whole scenes (one or several), streamed into QGIS-ready COGs.

Scenes are seen on one output grid (the first scene's, extended over all of them, or a given CRS /
resolution). A reader thread reads tiles (bands and cloud mask of every scene) ahead while the
model computes; batches go to the device (on a GPU as the files hold them, rescaled and
normalised there: `predict.runner`; bf16/fp16 autocast and channels_last on GPUs and
bf16-capable CPUs). Per tile, scenes are combined where clear (`predict.classes.combine_scenes`), tiles are
blended (`io.blend.StripAccumulator`) and rows are written as soon as they are final. Pixels clear in
no scene are written as 255: the cloudy part is never guessed.

With a Dask client, bands of tile rows are predicted on the workers (each loads the bundle once)
and written by the client; every tile sees the same batch and the same blending as in one
process, so the result is identical.
"""

from __future__ import annotations

import posixpath
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import geopandas as gpd
import numpy as np
from rasterio.windows import Window

from wetmap.config import PredictConfig
from wetmap.errors import WetmapError
from wetmap.io.checksum import StripChecksum
from wetmap.io.cog import NODATA, StreamedOverviews, open_strip_writer, to_cog, write_strip
from wetmap.io.outputs import OutputSet
from wetmap.io.raster import mosaic_grid, parse_crs
from wetmap.io.storage import join, output_url, staged_output
from wetmap.io.styles import paletted_qml, probability_qml
from wetmap.io.vector import burn
from wetmap.io.windows import TileGrid
from wetmap.model.bundle import Bundle
from wetmap.predict.classes import class_labels, class_probability, percent, wetland_index
from wetmap.predict.cluster import _predict_on_cluster
from wetmap.predict.runner import TilePredictor, predict_strips
from wetmap.predict.scenes import Scene, SceneStack, check_scenes, read_env, refuse_inputs_as_outputs, scene_lines
from wetmap.progress import tracker
from wetmap.runtime import resolve_device
from wetmap.scenes import CONVENTION, scene_grid

if TYPE_CHECKING:
    from distributed import Client


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


def predict_mosaic(bundle: Bundle | str | Path, images: Sequence[str | Path], out: str | Path, *,
                   clouds: Sequence[str | Path | None] | None = None, cfg: PredictConfig | None = None,
                   region: gpd.GeoSeries | None = None, client: Client | None = None, overwrite: bool = False,
                   band_names: Sequence[str] | None = None, force: bool = False, **settings: Any) -> PredictResult:
    """Predict one or several scenes into one class COG (optionally a probability COG and wetland
    polygons), each beside a QGIS style. `images` are scenes in any form (wetmap.scenes);
    `clouds` gives per image a mask file, "none", "detect", or None / "auto" for the product's own
    mask, else the detector's;
    `band_names` names stacked rasters' bands in order. With a `region` (polygons in any CRS),
    the map covers its box and pixels outside it are no data.

    A scene of another processing level than the model's training scene is a warning; one whose
    pixels lie far outside the training statistics is refused unless `force`.
    `settings` are PredictConfig fields set on top of `cfg` (`probabilities=True`, `crs="EPSG:3035"`),
    validated as a config file's are.
    With a Dask `client`, `bundle` must be the bundle's path: workers load it themselves.
    `out` may be a URL (s3://...): the result is made locally, verified, then uploaded (io.storage).
    """
    cfg = PredictConfig.model_validate({**(cfg or PredictConfig()).model_dump(), **settings})
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
        return _predict_files(bundle, scenes, Path(out), cfg, region, client, overwrite, force, start)
    folder = posixpath.dirname(url)
    names = [p.name for p in output_names(Path(posixpath.basename(url))).values()]
    refuse_inputs_as_outputs(scenes, bundle, [join(folder, name) for name in names])
    with staged_output(url, overwrite, names) as local:
        result = _predict_files(bundle, scenes, local, cfg, region, client, True, force, start)

    def uploaded(path: Path | str | None) -> str | None:
        return None if path is None else join(folder, Path(path).name)

    return replace(result, classes=url, probabilities=uploaded(result.probabilities), vectors=uploaded(result.vectors))


def _predict_files(bundle: Bundle | str | Path, scenes: list[Scene], out: Path, cfg: PredictConfig,
                   region: gpd.GeoSeries | None, client: Client | None, overwrite: bool, force: bool,
                   start: float) -> PredictResult:
    """The prediction's files under their local names `out`..., written as one OutputSet."""
    probabilities, vectorize = cfg.probabilities, cfg.vectorize
    family = output_names(out)
    prob_path = family["probability"] if probabilities else None
    vec_path = family["polygons"] if vectorize else None
    roles = ["classes", "style", *(["probability", "probability_style"] if probabilities else []),
             *(["polygons"] if vectorize else [])]
    written = [family[role] for role in reversed(roles)]  # the class map last: once it is there, all are
    with OutputSet(written, overwrite, list(family.values())) as outputs:
        result = _predict_into(outputs, bundle, scenes, out, prob_path, vec_path, cfg, region, client, force, start)
    return result


def output_names(out: Path) -> dict[str, Path]:
    """Every file of one prediction result, by role: all are replaced together."""
    prob = out.with_name(f"{out.stem}_probability{out.suffix}")
    return {"classes": out, "style": out.with_suffix(".qml"), "probability": prob,
            "probability_style": prob.with_suffix(".qml"), "polygons": out.with_suffix(".gpkg")}


def _predict_into(outputs: OutputSet, bundle: Bundle | str | Path, scenes: list[Scene], out: Path,
                  prob_path: Path | None, vec_path: Path | None, cfg: PredictConfig, region: gpd.GeoSeries | None,
                  client: Client | None, force: bool, start: float) -> PredictResult:
    if client is not None and isinstance(bundle, Bundle):
        raise WetmapError("Dask prediction needs the bundle's path, so that each worker loads it")
    bundle_path = str(bundle) if not isinstance(bundle, Bundle) else None
    loaded: Bundle | None = bundle if isinstance(bundle, Bundle) else None
    if bundle_path is not None and client is None:
        from wetmap.model.bundle import load_bundle

        loaded = load_bundle(bundle_path)
    device = resolve_device(cfg.device)
    info = _bundle_info(loaded, bundle_path)
    cfg = cfg.windows_for(info["chip_size"])
    check_scenes(scenes, info, force)
    scenes[:] = [scene.ready(cfg.cloud) for scene in scenes]   # inputs checked: detect clouds where asked
    notes = scene_lines(scenes)
    clip = (region.crs, tuple(region.total_bounds)) if region is not None else None
    crs = parse_crs(cfg.crs, "crs") if cfg.crs else None
    grid = mosaic_grid([scene_grid(s.spec.select(info["bands"])) for s in scenes], crs, cfg.resolution, clip)
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
    with read_env(), tracker("predict", grid.height, "rows") as advance:
        cls_dst = open_strip_writer(cls_tmp, grid, "uint8", f"{info['classes'][wet]} class", info["colors"], tags)
        prob_dst = (open_strip_writer(prob_tmp, grid, "uint8", f"{info['classes'][wet]} probability (%)", None, tags)
                    if prob_path else None)
        # Overviews from the strips as they pass, where rows come in order (one process): the COG
        # conversion then only compresses (io.cog.StreamedOverviews; Dask parts arrive in any order).
        cls_ovr = prob_ovr = None
        if client is None:
            cls_ovr = StreamedOverviews.start(grid, "NEAREST", lambda s: outputs.scratch(out, s), bool(info["colors"]))
            prob_ovr = StreamedOverviews.start(grid, "AVERAGE", lambda s: outputs.scratch(out, s)) if prob_path else None
        # What each COG must hold, from the strips themselves (io.checksum: no read-back of the strip files).
        cls_sum, prob_sum = StripChecksum(grid.width, grid.height), StripChecksum(grid.width, grid.height)

        def write(row: int, labels: np.ndarray, pct: np.ndarray) -> None:
            if inside is not None:
                outside = burn([inside], grid.window_transform(Window(0, row, grid.width, labels.shape[0])),
                               labels.shape) == 0
                labels[outside] = NODATA
                pct[outside] = NODATA
            write_strip(cls_dst, row, labels)
            cls_sum.add(row, labels)
            if cls_ovr is not None:
                cls_ovr.add(row, labels)
            if prob_dst is not None:
                write_strip(prob_dst, row, pct)
                prob_sum.add(row, pct)
            if prob_ovr is not None:
                prob_ovr.add(row, pct)
            advance(labels.shape[0])
            counts[0] += labels.size
            counts[1] += int(np.count_nonzero(labels != NODATA))
            counts[2] += int(np.count_nonzero(labels == wet))

        try:
            if loaded is not None:
                predictor = TilePredictor(loaded, device, cfg.precision, cfg.tta)
                precision = str(predictor.amp).removeprefix("torch.") if predictor.amp else "fp32"
                stack = SceneStack(scenes, grid, loaded.bands, cfg.cloud, raw=predictor.raw_input)
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
            for dst in (cls_dst, prob_dst, cls_ovr, prob_ovr):
                if dst is not None:
                    dst.close()
        # GDAL only logs a failed flush of its block cache on close: each COG must hold the pixels
        # written (io.outputs reads it back before the rename).
        outputs.expect(out, [cls_sum.value])
        to_cog(cls_tmp, outputs[out], "NEAREST", cls_ovr)
        outputs[out.with_suffix(".qml")].write_text(paletted_qml(info["classes"], info["colors"], NODATA))
        if prob_path is not None:
            outputs.expect(prob_path, [prob_sum.value])
            to_cog(prob_tmp, outputs[prob_path], "AVERAGE", prob_ovr)
            outputs[prob_path.with_suffix(".qml")].write_text(probability_qml(NODATA))
    if vec_path is not None:
        from wetmap.predict.vectorize import vectorize_classes

        vectorize_classes(outputs[out], outputs[vec_path], wet, info["classes"][wet], cfg.min_area_ha,
                          info["colors"].get(wet))
    n_pixels, n_valid, n_wetland = (int(v) for v in counts)
    return PredictResult(out, prob_path, vec_path, list(info["classes"]), len(scenes), n_pixels,
                         n_valid / max(1, n_pixels), n_wetland / max(1, n_valid), time.perf_counter() - start,
                         str(device), precision, notes)


def _bundle_info(bundle: Bundle | None, path: str | None) -> dict[str, Any]:
    """Classes, bands, colours, statistics and training scene, from a loaded bundle or (on the
    Dask path) read from the file."""
    if bundle is not None:
        return {"classes": bundle.classes, "bands": bundle.bands, "colors": bundle.colors, "mean": bundle.mean,
                "std": bundle.std, "scene": bundle.scene, "chip_size": bundle.chip_size,
                "threshold": bundle.threshold}
    from wetmap.model.bundle import read_bundle_info

    if path is None:
        raise TypeError("_bundle_info needs a bundle or its path")
    return read_bundle_info(path)


def predict_scene(bundle: Bundle | str | Path, image: str | Path, out: str | Path, *, clouds: str | Path | None = None,
                  **options: Any) -> PredictResult:
    """One scene on its own grid: `predict_mosaic` with a single image."""
    return predict_mosaic(bundle, [image], out, clouds=[clouds], **options)
