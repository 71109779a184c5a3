"""Settings shared by several stages: strict sections, band names, cloud masking."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from wetmap.bands import canonical

DEFAULT_BANDS = ["B02", "B03", "B04", "B08", "B11", "B12"]

# Sentinel-2 L2A scene classification: no data, defective, cloud shadow, cloud medium/high, cirrus.
DEFAULT_SCL_INVALID = [0, 1, 3, 8, 9, 10]


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
    the detector runs on scenes without a mask (see wetmap.masks.detection)."""

    scl_invalid: list[int] = Field(default_factory=lambda: list(DEFAULT_SCL_INVALID))
    dilate: int = Field(0, ge=0, le=64)
    # The processing level when the scene does not say (a plain GeoTIFF): picks the detector's model.
    level: Literal["auto", "L1C", "L2A"] = "auto"
    detect_resolution: float = Field(30.0, gt=0)   # metres; ukis-csmask was trained at about 30 m
    detect_overlap: int = Field(32, ge=0, le=128)  # detector pixels shared by neighbouring tiles
    device: Literal["auto", "cpu", "cuda"] = "auto"
