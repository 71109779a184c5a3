"""Settings of prediction, evaluation and scheduled regional jobs."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from wetmap.config.sections import CloudConfig, Strict
from wetmap.errors import WetmapError


class PredictConfig(Strict):
    """Sliding-window prediction: window, overlap, batches, device, precision, clouds."""

    # Unset: the window the model was trained on (its chip size; 256 for older bundles), and a
    # quarter of it as overlap. A U-Net trained on small chips misreads larger windows: one
    # trained on 32 px chips scored test Dice 1.00 in 32 px tiles and 0.21 in 256 px tiles
    # (tucurui-landsat5, benchmarks/bench_realdata.py).
    tile_size: int | None = Field(None, ge=32, le=4096)
    overlap: int | None = Field(None, ge=0)
    batch_size: int = Field(8, ge=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # auto: bf16 autocast on GPUs and on CPUs with native bf16 (AVX512-BF16 / AMX), else fp32
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    # Test-time augmentation: each tile also predicted flipped (flips: 4 views) or under all
    # eight flips and 90° rotations (dihedral), probabilities averaged before the blend.
    tta: Literal["none", "flips", "dihedral"] = "none"
    # With Dask: each task predicts whole tile rows making about this many output megapixels (at
    # least one row), and at most two tasks per worker are in flight: the memory of a worker and of
    # the client stays the same however tall the scene (a part re-predicts one tile row above it).
    part_megapixels: float = Field(64.0, gt=0)
    cloud: CloudConfig = Field(default_factory=CloudConfig)
    # Outputs beside the class map: the wetland probability (uint8 percent, 255 no data) and
    # wetland polygons with their hectares; polygons smaller than `min_area_ha` are left out.
    probabilities: bool = False
    vectorize: bool = False
    min_area_ha: float = Field(0.0, ge=0)
    # The output grid: unset, the first scene's CRS and pixel size (e.g. crs: EPSG:3035, resolution: 20).
    crs: str | None = None
    resolution: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _overlap_fits(self) -> PredictConfig:
        if self.overlap is not None and self.tile_size is not None and self.overlap * 2 >= self.tile_size:
            raise ValueError(f"overlap {self.overlap} must be less than half of tile_size {self.tile_size}")
        return self

    def windows_for(self, chip_size: int | None) -> PredictConfig:
        """This config with the window and overlap set: unset ones follow the model's chip size."""
        tile = self.tile_size or chip_size or 256
        overlap = self.overlap if self.overlap is not None else tile // 4
        if overlap * 2 >= tile:
            raise WetmapError(f"overlap {overlap} must be less than half of the {tile} px window", "--overlap")
        return self.model_copy(update={"tile_size": tile, "overlap": overlap})

    @property
    def window(self) -> tuple[int, int]:
        """(tile size, overlap) of a config that `windows_for` has completed."""
        if self.tile_size is None or self.overlap is None:
            raise RuntimeError("the prediction window is not set yet: PredictConfig.windows_for")
        return self.tile_size, self.overlap


class EvaluateConfig(Strict):
    """Scoring per region: the region name field, the reference's codes and cloud masking."""

    region_field: str | None = None
    label_values: dict[str, list[float]] | None = None   # the reference's codes -> classes (wetmap.io.labels)
    cloud: CloudConfig = Field(default_factory=CloudConfig)


class RegionSpec(Strict):
    """The area a job maps: polygons of a vector file (optionally some features), or a box."""

    file: str | None = None
    field: str | None = None            # attribute that names the features (default: name / region / id)
    values: list[str] | None = None     # keep only features whose `field` is one of these
    bounds: tuple[float, float, float, float] | None = None   # west, south, east, north
    crs: str | None = None              # of `bounds`

    @model_validator(mode="after")
    def _one_kind(self) -> RegionSpec:
        if (self.file is None) == (self.bounds is None):
            raise ValueError("give region.file (polygons) or region.bounds + region.crs")
        if self.bounds is not None and self.crs is None:
            raise ValueError("region.bounds needs region.crs")
        return self


class ScenesSpec(Strict):
    """Input scenes: paths or glob patterns (sorted), and where each scene's cloud mask is."""

    images: list[str] = Field(min_length=1)
    # beside each image, from its name: "{stem}_scl.tif"; "detect", "none"; unset / "auto": the
    # product's own mask, else the cloud detector's
    clouds: str | None = None
    band_names: list[str] | None = None   # stacked rasters' bands, in order, if they have no descriptions


class JobConfig(Strict):
    """A scheduled regional mapping job (configs/jobs/<region>.yaml)."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    region: RegionSpec
    scenes: ScenesSpec
    model: str
    reference: str | None = None
    output_root: str
    vectorize: bool = True
    min_area_ha: float = Field(0.0, ge=0)
    predict: PredictConfig = Field(default_factory=PredictConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)

    @model_validator(mode="after")
    def _outputs_set_once(self) -> JobConfig:
        """A job always writes probabilities, and its own `vectorize` / `min_area_ha` decide the
        polygons: the same setting under `predict:` too would leave a reader unsure which holds."""
        twice = sorted(self.predict.model_fields_set & {"probabilities", "vectorize", "min_area_ha"})
        if twice:
            raise ValueError(f"predict.{twice[0]} is not a job setting: a job always writes probabilities, and "
                             "its top-level vectorize / min_area_ha decide the polygons")
        return self
