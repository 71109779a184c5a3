"""The scenes of one prediction on its output grid, read tile by tile, and their checks."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import rasterio

from wetmap.config import CloudConfig
from wetmap.errors import WetmapError, WetmapWarning
from wetmap.io.paths import gdal_path
from wetmap.io.raster import Grid
from wetmap.io.windows import Tile
from wetmap.masks.cloud import CloudMask
from wetmap.model.bundle import Bundle
from wetmap.runtime import STREAM_CACHE_MB, gdal_env
from wetmap.scenes import MaskSource, SceneReader, SceneSpec, open_scene, resolve_mask
from wetmap.scenes.check import check_range, level_mismatch
from wetmap.scenes.reader import Rescale


def read_env() -> rasterio.Env:
    """GDAL's settings while prediction reads its strips.

    Strips hold many blocks: GDAL decodes them on every core while the model waits for the batch.
    StripReader keeps what it reads, so GDAL's own cache only buffers writes: a small one keeps
    memory from growing with the scene's width.
    """
    return gdal_env(STREAM_CACHE_MB, GDAL_NUM_THREADS="ALL_CPUS")


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
        """The scene with its cloud mask detected, if it is to be (`wetmap.masks.detection`)."""
        from wetmap.masks.detection import ready_mask

        return replace(self, mask=ready_mask(self.spec, self.mask, cloud))


class SceneStack:
    """The scenes seen on the output grid, read tile by tile as (bands, valid mask) per scene.

    Each scene's bands are read through `scenes.SceneReader` (a file on the grid directly, others
    warped, bilinear); its cloud mask is seen on the grid (nearest). Pixels outside a scene read
    as no data. `raw`: bands as the files hold them, which `rescales` makes reflectance x 10000
    where the model runs; else float32 reflectance, rescaled here.
    """

    def __init__(self, scenes: Sequence[Scene], grid: Grid, bands: Sequence[str], cloud: CloudConfig,
                 raw: bool = False) -> None:
        self.raw = raw
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

    @property
    def rescales(self) -> list[Rescale | None]:
        """Per scene, the rescaling `read` left undone (None: none is left)."""
        return [reader.rescale if self.raw else None for reader, _ in self.layers]

    def read(self, tile: Tile) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per scene, (bands, clear mask)."""
        out = []
        for reader, mask in self.layers:
            raw, ok = reader.read_raw(tile.window) if self.raw else reader.read(tile.window)
            if mask is not None:
                ok &= mask.valid(tile.window)
            out.append((raw, ok))
        return out

    def close(self) -> None:
        for item in reversed(self._open):
            item.close()
        self._open.clear()


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
