"""Sliding-window inference over whole scenes, streamed into QGIS-ready COGs.

A reader thread reads tiles (image bands and cloud mask) ahead while the model computes; batches
go to the device (bf16/fp16 autocast and channels_last on GPUs and bf16-capable CPUs); blended probabilities are written strip by
strip as soon as rows are final. Cloud, shadow and no-data pixels are written as 255: the clear
part is predicted, the cloudy part is never guessed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
import torch

from wetmap.cloud import CloudMask, nodata_valid
from wetmap.config import PredictConfig
from wetmap.errors import WetmapError
from wetmap.io.raster import (
    GDAL_ENV,
    Grid,
    atomic_output,
    band_indexes,
    check_writable,
    open_raster,
    read_window,
    scratch_file,
)
from wetmap.io.readahead import read_ahead
from wetmap.model import Bundle
from wetmap.mosaic import (
    NODATA,
    StripAccumulator,
    class_labels,
    open_strip_writer,
    percent,
    to_cog,
    write_strip,
)
from wetmap.styles import paletted_qml, probability_qml, write_qml
from wetmap.tiling import Tile, TileGrid


@dataclass
class PredictResult:
    classes: Path
    probabilities: Path | None
    pixels: int
    valid_fraction: float
    wetland_fraction: float
    seconds: float
    device: str
    precision: str


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


class TilePredictor:
    """Runs the bundle's network on batches of raw tiles and returns class probabilities."""

    def __init__(self, bundle: Bundle, device: torch.device, precision: str = "auto") -> None:
        self.bundle, self.device = bundle, device
        self.model = bundle.model.to(device).eval()
        self.amp = autocast_dtype(device, precision)
        self.channels_last = device.type == "cuda" or self.amp is not None
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)

    @torch.inference_mode()
    def __call__(self, raw: np.ndarray, valid: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(raw).to(self.device, non_blocking=True)
        ok = torch.from_numpy(valid).to(self.device, non_blocking=True)
        x = self.bundle.normalize(x, ok)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=self.amp or torch.float32, enabled=self.amp is not None):
            logits = self.model(x)
        return self.bundle.probabilities(logits).cpu().numpy()


def predict_scene(bundle: Bundle, image: str | Path, out: str | Path, *, clouds: str | Path | None = None,
                  cfg: PredictConfig | None = None, probabilities: bool = False,
                  overwrite: bool = False) -> PredictResult:
    """Predict one scene into a class COG (and optionally a probability COG) beside a QGIS style."""
    cfg = cfg or PredictConfig()
    start = time.perf_counter()
    out = check_writable(out, overwrite)
    prob_path = out.with_name(f"{out.stem}_probability{out.suffix}") if probabilities else None
    if prob_path is not None:
        check_writable(prob_path, overwrite)
    device = resolve_device(cfg.device)
    predictor = TilePredictor(bundle, device, cfg.precision)

    with rasterio.Env(**GDAL_ENV), open_raster(image) as src:
        indexes = band_indexes(src, bundle.bands)
        grid = Grid.of(src)
        mask = CloudMask(clouds, grid, cfg.cloud, image_name=image) if clouds else None
        tiles = TileGrid(grid.width, grid.height, cfg.tile_size, cfg.overlap)
        crop = min(8, cfg.overlap // 4)
        acc = StripAccumulator(tiles, len(bundle.classes), crop)

        def read(tile: Tile) -> tuple[np.ndarray, np.ndarray]:
            raw = read_window(src, tile.window, indexes).astype(np.float32)
            ok = nodata_valid(raw, src.nodata)
            if mask is not None:
                ok &= mask.valid(tile.window)
            return raw, ok

        tags = {"CLASSES": ",".join(bundle.classes), "MODEL_BANDS": ",".join(bundle.bands),
                "SOURCE": Path(image).name}
        counts = np.zeros(3, np.int64)  # pixels, valid, wetland
        wet = bundle.classes.index("wetland") if "wetland" in bundle.classes else 1
        with scratch_file(out, ".strips.tif") as cls_tmp, scratch_file(out, ".pstrips.tif") as prob_tmp:
            cls_dst = open_strip_writer(cls_tmp, grid, "uint8", "wetland class", bundle.colors, tags)
            prob_dst = (open_strip_writer(prob_tmp, grid, "uint8", "wetland probability (%)", None, tags)
                        if prob_path else None)
            try:
                batch: list[tuple[Tile, np.ndarray, np.ndarray]] = []
                for item in read_ahead(tiles, read, depth=2 * cfg.batch_size):
                    batch.append(item)
                    if len(batch) == cfg.batch_size:
                        _run_batch(batch, predictor, acc, cls_dst, prob_dst, counts, wet)
                        batch = []
                if batch:
                    _run_batch(batch, predictor, acc, cls_dst, prob_dst, counts, wet)
            finally:
                cls_dst.close()
                if prob_dst is not None:
                    prob_dst.close()
                if mask is not None:
                    mask.close()
            with atomic_output(out, overwrite) as final_tmp:
                to_cog(cls_tmp, final_tmp, "NEAREST")
            write_qml(out, paletted_qml(bundle.classes, bundle.colors, NODATA))
            if prob_path is not None:
                with atomic_output(prob_path, overwrite) as final_tmp:
                    to_cog(prob_tmp, final_tmp, "AVERAGE")
                write_qml(prob_path, probability_qml(NODATA))
    pixels, valid, wet = (int(v) for v in counts)
    return PredictResult(out, prob_path, pixels, valid / max(1, pixels), wet / max(1, valid),
                         time.perf_counter() - start, str(device),
                         str(predictor.amp).removeprefix("torch.") if predictor.amp else "fp32")


def _run_batch(batch, predictor: TilePredictor, acc: StripAccumulator, cls_dst, prob_dst,
               counts: np.ndarray, wet: int) -> None:
    """Predict the tiles that have a valid pixel, blend all, write the strips that completed."""
    live = [i for i, (_, _, ok) in enumerate(batch) if ok.any()]
    probs: dict[int, np.ndarray] = {}
    if live:
        shapes = {batch[i][1].shape for i in live}
        for shape in shapes:  # edge tiles of a small raster may differ in size
            group = [i for i in live if batch[i][1].shape == shape]
            out = predictor(np.stack([batch[i][1] for i in group]), np.stack([batch[i][2] for i in group]))
            probs.update(zip(group, out))
    for i, (tile, raw, ok) in enumerate(batch):
        p = probs.get(i)
        if p is None:
            p = np.zeros((len(predictor.bundle.classes), *ok.shape), np.float32)
        for row, strip, valid in acc.add(tile, p, ok):
            labels = class_labels(strip, valid)
            write_strip(cls_dst, row, labels)
            if prob_dst is not None:
                write_strip(prob_dst, row, percent(strip[wet], valid))
            counts += (labels.size, int(valid.sum()), int((labels == wet).sum()))
