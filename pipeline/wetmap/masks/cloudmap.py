"""`wetmap clouds`: the cloud mask a scene would be read with, as a map to look at in QGIS.

Whatever the mask is (the product's SCL or QA_PIXEL, a file, or the detector's), it is written in
one set of classes (`cloud.CLASS_NAMES`: clear, cloud, shadow, grown by `cloud.dilate`, no data)
on the scene's grid, as a COG with a colour table and a `.qml` beside it in which clear pixels are
transparent, so the map lies over the image. The file is itself a mask file: `--clouds MAP.tif`
reads it back (0 clear, anything else masked), in every stage.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from wetmap.config import CloudConfig
from wetmap.errors import WetmapError
from wetmap.io.cog import open_strip_writer, to_cog
from wetmap.io.outputs import OutputSet
from wetmap.io.storage import output_url, staged_output
from wetmap.io.styles import paletted_qml
from wetmap.io.windows import blocks
from wetmap.masks.cloud import CLASS_COLORS, CLASS_NAMES, NO_DATA, CloudMask
from wetmap.masks.detection import ready_mask
from wetmap.progress import tracker
from wetmap.scenes import SceneReader, open_scene, resolve_mask, scene_grid
from wetmap.scenes.spec import CLASSES_DESCRIPTION, MaskSource, SceneSpec

BLOCK = 512

@dataclass
class CloudMap:
    """What `wetmap clouds` wrote, with the share of each class, for the summary it prints."""

    path: Path | str     # a str when the map went to a URL
    scene: SceneSpec
    mask: MaskSource
    pixels: int
    fractions: dict[str, float] = field(default_factory=dict)   # class name -> fraction of the scene


def write_cloud_map(image: str | Path, out: str | Path, *, clouds: str | None = None, cloud: CloudConfig | None = None,
                    band_names: list[str] | None = None, overwrite: bool = False) -> CloudMap:
    """Write the mask `clouds` resolves to for `image` (see `resolve_mask`) to `out` and `out.qml`."""
    with staged_output(out, overwrite, [Path(os.fspath(out)).with_suffix(".qml").name]) as local:
        result = _write_cloud_map(image, local, clouds, cloud or CloudConfig(), band_names, overwrite)
    url = output_url(out)
    return result if url is None else replace(result, path=url)


def _write_cloud_map(image: str | Path, out: Path, clouds: str | None, cloud: CloudConfig,
                     band_names: list[str] | None, overwrite: bool) -> CloudMap:
    spec = open_scene(image, band_names)
    source = ready_mask(spec, resolve_mask(spec, clouds), cloud)
    if source is None:
        raise WetmapError("--clouds none: there is no mask to write", out)
    grid = scene_grid(spec.bands)
    counts = np.zeros(256, np.int64)
    tags = {"CLOUD_MASK": source.describe(), "SCENE": spec.source, "DILATE": str(cloud.dilate),
            "CLASSES": ",".join(f"{value}={name}" for value, name in CLASS_NAMES.items())}
    qml = out.with_suffix(".qml")
    with OutputSet([qml, out], overwrite) as outputs:
        strips = outputs.scratch(out, ".strips.tif")
        mask = CloudMask(source.path, grid, cloud, kind=source.kind, image_name=spec.source)
        try:
            windows = list(blocks(grid.width, grid.height, BLOCK))
            with SceneReader(spec.bands, grid) as reader, tracker("cloud map", len(windows), "blocks") as advance:
                dst = open_strip_writer(strips, grid, "uint8", CLASSES_DESCRIPTION, CLASS_COLORS, tags)
                try:
                    for window in windows:
                        classes = mask.classes(window)
                        classes[~reader.read(window)[1]] = NO_DATA   # no data in the image itself
                        counts += np.bincount(classes.ravel(), minlength=256)
                        dst.write(classes, 1, window=window)
                        advance(1)
                finally:
                    dst.close()
        finally:
            mask.close()
        to_cog(strips, outputs[out], "mode")
        strips.unlink()
        outputs[qml].write_text(paletted_qml(CLASS_NAMES, CLASS_COLORS, NO_DATA))
    total = int(counts.sum())
    fractions = {name: float(counts[value]) / max(total, 1) for value, name in CLASS_NAMES.items()}
    return CloudMap(out, spec, source, total, fractions)
