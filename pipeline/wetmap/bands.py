"""One table of band names: a model asks for physical bands, every scene that has them works.

Bands are named as Sentinel-2 names them (`B01` ... `B12`, `B8A`). Also understood: the short
forms (`B2` = `B02`, `B8` = `B08`) and STAC's `eo` common names (`blue`, `green`, `red`, `nir`,
`nir08`, `swir16`, `swir22`, ...). Landsat bands are given their Sentinel-2 equivalent by
wavelength (OLI band 5, 865 nm, is `B8A`; TM / ETM+ band 4, 770-900 nm, is `B08`), and a model
that asks for one NIR band takes the other where a scene has only that one (`EQUIVALENT`): the
substitution is reported, never silent.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

S2_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12")

COMMON_NAMES = {
    "coastal": "B01", "blue": "B02", "green": "B03", "red": "B04", "rededge071": "B05",
    "rededge075": "B06", "rededge078": "B07", "nir": "B08", "nir08": "B8A", "nir09": "B09",
    "cirrus": "B10", "swir16": "B11", "swir22": "B12",
}

# Landsat Collection 2 band numbers -> Sentinel-2 equivalents, by sensor family.
LANDSAT_OLI = {1: "B01", 2: "B02", 3: "B03", 4: "B04", 5: "B8A", 6: "B11", 7: "B12", 9: "B10"}
LANDSAT_TM = {1: "B02", 2: "B03", 3: "B04", 4: "B08", 5: "B11", 7: "B12"}

# A band a scene lacks may be read from its nearest neighbour in wavelength.
EQUIVALENT = {"B08": "B8A", "B8A": "B08"}

_SHORT = re.compile(r"^B0?([1-9]|1[0-2])(A?)$")


def canonical(name: str | None) -> str | None:
    """The Sentinel-2 name of a band name or STAC common name; None if it names no band."""
    if not name:
        return None
    text = name.strip()
    if text.lower() in COMMON_NAMES:
        return COMMON_NAMES[text.lower()]
    match = _SHORT.match(text.upper())
    if not match:
        return None
    number, a = int(match.group(1)), match.group(2)
    if a:
        return "B8A" if number == 8 else None
    return f"B{number:02d}"


def landsat_bands(spacecraft: str) -> dict[int, str]:
    """Band number -> Sentinel-2 equivalent for a Landsat spacecraft id (LANDSAT_8, LC09, LT05...)."""
    digits = re.findall(r"\d+", spacecraft)
    number = int(digits[-1]) if digits else 0
    return LANDSAT_OLI if number >= 8 else LANDSAT_TM


def band_order(name: str | None) -> tuple[int, str]:
    """Sort key putting bands in wavelength order (B08 before B8A before B09)."""
    if not name:
        return (99, "")
    return (int(name[1:3]) if name[1:3].isdigit() else 8, name)


# Normalised differences (a - b) / (a + b) of two bands, in [-1, 1].
INDICES: dict[str, tuple[str, str]] = {
    "NDWI": ("B03", "B08"),    # McFeeters 1996: open water
    "MNDWI": ("B03", "B11"),   # Xu 2006: water, built-up suppressed
    "NDVI": ("B08", "B04"),    # vegetation
    "NDMI": ("B08", "B11"),    # Gao 1996 (NDWI of moisture): wet vegetation, which open-water indices miss
}


def check_indices(indices: Sequence[str], bands: Sequence[str]) -> None:
    """Raise ValueError naming the first index that `bands` cannot compute."""
    for name in indices:
        missing = [b for b in INDICES[name] if b not in bands]
        if missing:
            raise ValueError(f"index {name} needs band(s) {', '.join(missing)}, which the model's bands "
                             f"({', '.join(bands)}) lack")
