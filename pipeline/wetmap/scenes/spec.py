"""What a scene is made of: band files, how their values become reflectance, its own cloud mask.

A `SceneSpec` is small, frozen and picklable: it is resolved once from whatever the user gave
(a GeoTIFF, a SAFE, a Landsat folder, a STAC item) and sent as it is to Dask workers, which open
the files themselves.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from wetmap.bands import EQUIVALENT, canonical
from wetmap.errors import WetmapError

# The reflectance convention every model is trained on and every scene is read in.
CONVENTION = "reflectance x 10000, offsets removed"

MaskKind = Literal["scl", "qa_pixel", "mask", "classes"]


@dataclass(frozen=True)
class BandSource:
    """One band of a scene: where its pixels are and how they become reflectance x 10000.

    Harmonised value = raw * scale + offset; raw pixels equal to `nodata` are no data.
    """

    name: str | None          # the Sentinel-2 name of the band (see bands.py); None if unnamed
    path: str                 # as GDAL opens it
    index: int = 1            # 1-based band within the file
    scale: float = 1.0
    offset: float = 0.0
    nodata: float | None = None   # None: the file's own nodata value, if any
    label: str = ""           # the product's own name, for messages (SR_B5, B8A_20m, band 3)

    @property
    def identity(self) -> bool:
        return self.scale == 1.0 and self.offset == 0.0


@dataclass(frozen=True)
class MaskSource:
    """A cloud mask raster: Sentinel-2 SCL, Landsat QA_PIXEL bit flags, 0/1 (1 = cloud), or cloud
    classes (what the detector and `wetmap clouds` write)."""

    path: str
    kind: MaskKind
    # "product": came with the scene; "file": given; "detected": made by `detector`; "detect": still
    # to be detected (no file yet; `wetmap.masks.detection.ready_mask`)
    origin: str = "file"
    detector: str | None = None

    @property
    def pending(self) -> bool:
        return self.origin == "detect"

    def describe(self) -> str:
        if self.pending:
            return "to be detected"
        if self.origin == "detected":
            return f"detected by {self.detector} ({self.path})"
        name = {"scl": "SCL", "qa_pixel": "QA_PIXEL", "mask": "0/1 mask", "classes": "cloud classes"}[self.kind]
        return f"{name} ({'from the product' if self.origin == 'product' else 'given'}: {self.path})"


@dataclass(frozen=True)
class SceneSpec:
    """A scene as wetmap reads it; `select` picks the bands a model asks for."""

    source: str                       # what the user gave
    form: str                         # "raster", "Sentinel-2 SAFE", "Landsat C2", "STAC item", "band files"
    bands: tuple[BandSource, ...]
    mask: MaskSource | None = None    # the product's own cloud mask, if it has one
    sensor: str | None = None         # "sentinel-2", "landsat-8", ...
    level: str | None = None          # "L1C", "L2A", "L2SP", "L1TP", ...
    notes: tuple[str, ...] = field(default_factory=tuple)   # e.g. how reflectance was harmonised

    def select(self, wanted: Sequence[str | int]) -> tuple[BandSource, ...]:
        """The scene's bands for a model's band list, in the model's order.

        A name is matched through the alias table (`B2` = `B02` = `blue`); a band the scene lacks
        may come from its equivalent (B08 <-> B8A), recorded in the source's label; a number is a
        1-based band index. Anything else is one clear error listing what the scene has.
        """
        by_name = {b.name: b for b in self.bands if b.name}
        out, missing = [], []
        for band in wanted:
            text = str(band)
            if text.isdigit():
                index = int(text)
                if 1 <= index <= len(self.bands):
                    out.append(self.bands[index - 1])
                else:
                    missing.append(text)
                continue
            name = canonical(text) or text
            if name in by_name:
                out.append(by_name[name])
            elif EQUIVALENT.get(name) in by_name:
                src = by_name[EQUIVALENT[name]]
                out.append(replace(src, label=f"{src.label or src.name} standing in for {name}"))
            else:
                missing.append(text)
        if missing:
            if not by_name:
                have = ",".join(str(i) for i in range(1, len(self.bands) + 1))
                raise WetmapError(f"band(s) {','.join(missing)} not found: the bands have no names "
                                  f"(bands present: {have}); name them in order with --bands B02,B03,...",
                                  self.source)
            have = ",".join(b.name or str(i) for i, b in enumerate(self.bands, start=1))
            raise WetmapError(f"band(s) {','.join(missing)} not found (bands present: {have})", self.source)
        return tuple(out)

    def substitutions(self, wanted: Sequence[str | int]) -> list[str]:
        """Messages for bands read from an equivalent (a model used on another sensor)."""
        return [b.label for b in self.select(wanted) if "standing in for" in b.label]

    def describe(self) -> dict[str, object]:
        """What the scene is, for tags, manifests and chip store metadata."""
        return {"source": self.source, "form": self.form, "sensor": self.sensor, "level": self.level,
                "convention": CONVENTION, "notes": list(self.notes),
                "mask": self.mask.describe() if self.mask else None}


# The band description of a cloud classes raster (the detector's and `wetmap clouds` output).
CLASSES_DESCRIPTION = "cloud classes"


def guess_kind(path: str | Path, description: str | None) -> MaskKind:
    """SCL or QA_PIXEL by band description or file name, cloud classes by description; anything
    else is a 0/1 mask."""
    if (description or "").strip().lower() == CLASSES_DESCRIPTION:
        return "classes"
    text = f"{description or ''} {Path(path).name}".upper()
    if "SCL" in text:
        return "scl"
    if "QA_PIXEL" in text or "QA-PIXEL" in text:
        return "qa_pixel"
    return "mask"
