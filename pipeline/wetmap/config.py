"""Typed settings for every stage, loaded from YAML and overridable from the command line.

Unknown keys and bad values are errors that name the file and the dotted key, because a typo in
a scheduled job's config must fail loudly, not silently fall back to a default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from wetmap.bands import canonical
from wetmap.errors import WetmapError

DEFAULT_BANDS = ["B02", "B03", "B04", "B08", "B11", "B12"]
# Sentinel-2 L2A scene classification: no data, defective, cloud shadow, cloud medium/high, cirrus.
DEFAULT_SCL_INVALID = [0, 1, 3, 8, 9, 10]


TrainPrecision = Literal["32-true", "16-mixed", "bf16-mixed"]   # Lightning's names for the trainer


class Strict(BaseModel):
    """A config section in which an unknown key (a typo) is an error, also when set later."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def physical_bands(names: list[str]) -> list[str]:
    """A model's bands by their Sentinel-2 names (`B2`, `blue` -> `B02`), so that a chip store,
    its training config and the bundle agree however the user spelled them."""
    out = []
    for name in names:
        band = canonical(str(name))
        if band is None:
            raise ValueError(f"'{name}' is not a band name (B02, B2, blue, nir08, ...)")
        out.append(band)
    if len(set(out)) != len(out):
        raise ValueError(f"a band is named twice: {', '.join(map(str, names))}")
    return out


class CloudConfig(Strict):
    """Which scene-classification values make a pixel unusable, how far to grow clouds, and how
    the detector runs on scenes without a mask (see wetmap.detection)."""

    scl_invalid: list[int] = Field(default_factory=lambda: list(DEFAULT_SCL_INVALID))
    dilate: int = Field(0, ge=0, le=64)
    # The processing level when the scene does not say (a plain GeoTIFF): picks the detector's model.
    level: Literal["auto", "L1C", "L2A"] = "auto"
    detect_resolution: float = Field(30.0, gt=0)   # metres; ukis-csmask was trained at about 30 m
    detect_overlap: int = Field(32, ge=0, le=128)  # detector pixels shared by neighbouring tiles
    device: Literal["auto", "cpu", "cuda"] = "auto"


# DataConfig settings of on-the-fly chips, which a chip store fixed when it was cut.
ON_THE_FLY_KEYS = ("image", "labels", "clouds", "band_names", "label_values", "chip_size", "min_valid",
                   "split_block", "val_fraction", "cloud")


class DataConfig(Strict):
    """Either a chip store of `wetmap tile` (`chips`), or a scene cut into chips on the fly.

    `image` is any scene form (see wetmap.scenes); `clouds` a mask file, "none", "detect", or unset
    ("auto") for the product's own mask, else the cloud detector's; `band_names` names a stacked
    raster's bands in order when it has no descriptions; `bands` are the bands the model uses.
    """

    chips: Path | None = None
    image: str | None = None
    labels: str | None = None
    clouds: str | None = None
    band_names: list[str] | None = None
    label_values: dict[str, list[float]] | None = None   # e.g. {wetland: [2], other: [1], unknown: [0]}
    bands: list[str] = Field(default_factory=lambda: list(DEFAULT_BANDS))
    chip_size: int = Field(128, ge=32, le=2048)
    min_valid: float = Field(0.3, ge=0.0, le=1.0)
    split_block: int = Field(2, ge=1, description="chips per side of one spatial split block")
    val_fraction: float = Field(0.25, gt=0.0, lt=1.0)
    cloud: CloudConfig = Field(default_factory=CloudConfig)

    _bands = field_validator("bands")(physical_bands)

    @model_validator(mode="after")
    def _one_source(self) -> DataConfig:
        if self.chips is None and (self.image is None or self.labels is None):
            raise ValueError("give data.chips (a chip store) or both data.image and data.labels")
        if self.chips is not None:  # a chip store was cut by `wetmap tile`, with its own settings
            ignored = [k for k in ON_THE_FLY_KEYS if k in self.model_fields_set]
            if ignored:
                raise ValueError(f"{', '.join(ignored)} cut chips on the fly and do nothing with data.chips "
                                 "(the chip store has its own, from wetmap tile): remove them")
        return self


class SplitConfig(Strict):
    """Spatial split: whole blocks (or regions) go to train, val or test, never a mix."""

    block: int = Field(1024, ge=32, description="pixels per side of a split block")
    val: float = Field(0.15, ge=0.0, lt=1.0)
    test: float = Field(0.15, ge=0.0, lt=1.0)
    regions: Path | None = None
    region_field: str | None = None


class TileConfig(Strict):
    """`wetmap tile`: chips of `size` px overlapping by `overlap`, kept when enough is clear."""

    image: str                          # any scene form (see wetmap.scenes)
    labels: str
    clouds: str | None = None           # a mask file, "none", "detect", or unset / "auto": the product's own, else detected
    band_names: list[str] | None = None  # a stacked raster's bands, in order, if it has no descriptions
    classes: list[str] = Field(default_factory=lambda: ["other", "wetland"], min_length=2)
    label_values: dict[str, list[float]] | None = None   # label codes -> classes (wetmap.labels)
    bands: list[str] = Field(default_factory=lambda: list(DEFAULT_BANDS))
    size: int = Field(256, ge=32, le=4096)
    overlap: int = Field(32, ge=0)
    min_valid: float = Field(0.5, ge=0.0, le=1.0)
    seed: int = 0
    # LZ4-compress the chips (image, labels, valid masks): a store about half the size, but
    # slower tiling and slower random reads in training (bench_tile.py prints all three). Off by
    # default: a chip store is scratch space on local disk, read at random by training.
    compress: bool = False
    # Also store the image and clear mask of chips without enough labels (at least half clear),
    # for pretraining on the scene's unlabelled pixels (train.pretrain_epochs).
    unlabelled: bool = False
    split: SplitConfig = Field(default_factory=SplitConfig)
    cloud: CloudConfig = Field(default_factory=CloudConfig)

    _bands = field_validator("bands")(physical_bands)

    @model_validator(mode="after")
    def _overlap_fits(self) -> TileConfig:
        if self.overlap >= self.size:
            raise ValueError(f"overlap {self.overlap} must be smaller than size {self.size}")
        return self


class ModelConfig(Strict):
    """The network: architecture, encoder, pretrained weights and input channels."""

    arch: Literal["unet", "deeplabv3+", "fcn"] = "unet"
    backbone: str = "resnet18"
    # A local weights file (wetmap.pretrained): a wetmap bundle, a checkpoint or an encoder's
    # state dict; never a download. Its input bands (default by its channel count: 13 Sentinel-2
    # L1C, 12 L2A, 3 RGB) and, for a state dict, the normalisation it was trained with.
    weights: str | None = None
    weights_bands: list[str] | None = None
    weights_mean: list[float] | None = None
    weights_std: list[float] | None = None
    classes: list[str] = Field(default_factory=lambda: ["other", "wetland"], min_length=2)
    # Spectral indices computed from the bands in the input step (wetmap.inputs), extra channels.
    indices: list[str] = Field(default_factory=list)
    # The clear mask as one more input channel (1 clear, 0 cloud / shadow / no data).
    clear_channel: bool = False

    @field_validator("indices")
    @classmethod
    def _known_indices(cls, value: list[str]) -> list[str]:
        from wetmap.inputs import INDICES

        names = [str(v).upper() for v in value]
        unknown = [n for n in names if n not in INDICES]
        if unknown:
            raise ValueError(f"unknown index {unknown[0]!r} (known: {', '.join(INDICES)})")
        if len(set(names)) != len(names):
            raise ValueError("an index is named twice")
        return names

    @model_validator(mode="after")
    def _known_backbone(self) -> ModelConfig:
        """U-Net and DeepLabV3+ take a segmentation-models-pytorch encoder (or `tu-` + a timm model)."""
        if self.arch == "fcn":
            return self
        import segmentation_models_pytorch as smp

        name = self.backbone
        if name.startswith("tu-"):
            import timm

            if not timm.is_model(name[3:]):
                raise ValueError(f"backbone {name!r}: {name[3:]!r} is not a timm model")
        elif name not in smp.encoders.get_encoder_names():
            close = [n for n in smp.encoders.get_encoder_names() if n.startswith(name.rstrip("0123456789"))][:6]
            raise ValueError(f"unknown backbone {name!r}" + (f" (did you mean {', '.join(close)}?)" if close else ""))
        return self


class LossConfig(Strict):
    """The training loss and whether cloudy / unlabelled pixels are masked out of it."""

    name: Literal["dice", "generalized_dice", "tversky", "focal", "bce", "ce", "composite"] = "dice"
    masked: bool = True
    options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _known_options(self) -> LossConfig:
        from wetmap.losses import check_options

        check_options(self.name, self.options)
        return self


class TrainConfig(Strict):
    """Optimisation and the trainer: epochs, batches, learning rate, devices, precision."""

    epochs: int = Field(30, ge=1)
    batch_size: int = Field(16, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    # Early stopping: epochs without a better validation Dice (default: a third of the epochs, at least 5).
    patience: int | None = Field(None, ge=1)
    # none | dihedral (flips, 90° rotations) | full (dihedral + per-band brightness / contrast jitter)
    augment: Literal["none", "dihedral", "full"] = "dihedral"
    jitter: float = Field(0.1, ge=0, le=1, description="full: largest contrast change and brightness shift, in std")
    # uniform: every chip once per epoch; balanced: chips with and without wetland equally often.
    sampling: Literal["uniform", "balanced"] = "uniform"
    # The resume point (last.ckpt, with optimiser state) is written at most this often, and when
    # training ends; 0: after every epoch. The best weights are written only when they improve.
    checkpoint_minutes: float = Field(5.0, ge=0)
    # Binary models: the probability threshold of the class map is the one with the best
    # validation Dice (recorded in the bundle); false: 0.5.
    calibrate_threshold: bool = True
    # Masked-reconstruction pretraining on every stored chip, labelled or not (wetmap.pretrain;
    # a chip store cut with --unlabelled), before the supervised epochs; 0: none.
    pretrain_epochs: int = Field(0, ge=0)
    pretrain_mask: float = Field(0.5, gt=0, lt=1, description="share of squares hidden")
    pretrain_patch: int = Field(8, ge=1, description="side of a hidden square, px")
    accelerator: Literal["auto", "cpu", "gpu", "cuda"] = "auto"
    devices: int | str = "auto"
    strategy: str = "auto"  # e.g. "ddp" for several GPUs
    precision: TrainPrecision | None = None
    num_workers: int = Field(0, ge=0)


class TrainRunConfig(Strict):
    """One training run (configs/train.yaml): data, model, loss, trainer and output folder."""

    seed: int = 0
    data: DataConfig
    model: ModelConfig = Field(default_factory=ModelConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    output: Path = Path("runs/train")

    @model_validator(mode="after")
    def _indices_computable(self) -> TrainRunConfig:
        from wetmap.inputs import check_indices

        check_indices(self.model.indices, self.data.bands)
        return self


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
    label_values: dict[str, list[float]] | None = None   # the reference's codes -> classes (wetmap.labels)
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


M = TypeVar("M", bound=BaseModel)


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    node = tree
    *parents, leaf = dotted.split(".")
    for key in parents:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise WetmapError(f"cannot set '{dotted}': '{key}' is not a section", "--set")
        node = child
    node[leaf] = value


def parse_overrides(pairs: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Turn ['train.epochs=3', ...] into a nested dict; values are read as YAML scalars."""
    tree: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise WetmapError(f"override '{pair}' is not KEY=VALUE", "--set")
        _set_dotted(tree, key.strip(), yaml.safe_load(raw) if raw else None)
    return tree


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise WetmapError("config file not found", path) from None
    except OSError as exc:
        raise WetmapError(f"cannot read config: {exc.strerror}", path) from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise WetmapError(f"not valid YAML{where}", path) from None
    if not isinstance(data, dict):
        raise WetmapError("a config must be a mapping of keys to values", path)
    return data


def build(model: type[M], data: dict[str, Any], source: str | Path = "config",
          overrides: dict[str, Any] | None = None, sets: dict[str, Any] | None = None) -> M:
    """Validate `data` + `sets` (from --set) + `overrides` (from other options) into `model`; the
    first problem becomes a one-line error naming where the bad key came from."""
    try:
        return model.model_validate(_merge(_merge(data, sets or {}), overrides or {}))
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = [str(part) for part in err["loc"]]
        key = ".".join(loc) or "(top level)"
        if _holds(overrides, loc):
            source = "command line"
        elif _holds(sets, loc):
            source = "--set"
        if err["type"] == "extra_forbidden":
            raise WetmapError(f"unknown key '{key}'", source) from None
        if err["type"] == "missing":
            raise WetmapError(f"missing key '{key}'", source) from None
        message = err["msg"].removeprefix("Value error, ")
        raise WetmapError(f"bad value for '{key}': {message}", source) from None


def _holds(tree: dict[str, Any] | None, loc: list[str]) -> bool:
    """Whether the nested dict `tree` sets the key at `loc` (or a section above it)."""
    node: Any = tree
    for part in loc:
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return bool(loc)


def load(model: type[M], path: str | Path | None, overrides: dict[str, Any] | None = None,
         sets: list[str] | tuple[str, ...] = ()) -> M:
    """Load a stage config from a YAML file (or defaults when `path` is None), with the
    command line's `--set KEY=VALUE` pairs and other options (`overrides`) on top."""
    data = read_yaml(path) if path is not None else {}
    return build(model, data, path if path is not None else "config", overrides, parse_overrides(sets))


def dump(config: BaseModel) -> dict[str, Any]:
    """A plain, YAML/JSON-safe dict of a config (paths as strings), for bundles and manifests."""
    return config.model_dump(mode="json")
