"""Aligned chips: the image, labels and cloud mask of a scene read window by window on the image grid."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from rasterio.windows import Window

from wetmap.chips.mask import ChipCounts, mask_chip
from wetmap.chips.store import LABEL_UNKNOWN
from wetmap.config import DEFAULT_BANDS, CloudConfig
from wetmap.io.labels import LabelCodes
from wetmap.io.vector import open_labels
from wetmap.masks.cloud import CloudMask
from wetmap.scenes import MaskSource, SceneReader, SceneSpec, open_scene, resolve_mask, scene_grid


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
        """These inputs with their cloud mask detected, if it is to be (`wetmap.masks.detection`)."""
        from wetmap.masks.detection import ready_mask

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
