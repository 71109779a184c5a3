"""Settings of training data: chip stores, on-the-fly chips, tiling and the spatial split."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator, model_validator

from wetmap.config.sections import DEFAULT_BANDS, CloudConfig, Strict, physical_bands

# DataConfig settings of on-the-fly chips, which a chip store fixed when it was cut.
ON_THE_FLY_KEYS = ("image", "labels", "clouds", "band_names", "label_values", "chip_size", "min_valid",
                   "split_block", "val_fraction", "cloud", "store")


class DataConfig(Strict):
    """Either a chip store of `wetmap tile` (`chips`), or a scene to cut into one first.

    `image` is any scene form (see wetmap.scenes); `clouds` a mask file, "none", "detect", or unset
    ("auto") for the product's own mask, else the cloud detector's; `band_names` names a stacked
    raster's bands in order when it has no descriptions; `bands` are the bands the model uses.
    Chips cut from `image` go to `store` (kept, replaced on the next run), else to a temporary
    folder removed when training ends.
    """

    chips: Path | None = None
    image: str | None = None
    store: Path | None = None
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
    label_values: dict[str, list[float]] | None = None   # label codes -> classes (wetmap.io.labels)
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
