"""Scenes as plain rasters: one stacked GeoTIFF / COG / VRT, or a set of single-band files.

A stacked raster's bands are named by their descriptions (or by `--bands`, in order), through the
alias table; GDAL's band scale / offset, where a file sets them, give reflectance 0-1 and are
applied. Single-band files are named as ESA (`T32UPU_20240612T103031_B04_10m.jp2`), USGS
(`LC09_L2SP_..._SR_B4.TIF`) or people (`B04.tif`, `red.tif`) name them; the finest resolution of a
band wins. Loose files carry no product metadata, so their values are taken as reflectance x 10000
as stored, except USGS's Level-2 files, whose rescaling is the same for every scene.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from pathlib import Path

from wetmap.bands import band_order, canonical, landsat_bands
from wetmap.errors import WetmapError, WetmapWarning
from wetmap.io.raster import open_raster
from wetmap.scenes.landsat import C2_L2_OFFSET, C2_L2_SCALE
from wetmap.scenes.spec import BandSource, MaskSource, SceneSpec

RASTER_SUFFIXES = {".tif", ".tiff", ".jp2", ".vrt", ".img"}
_ESA = re.compile(r"_(\d{8})T\d{6}_(B\d[\dA]|SCL)(?:_(\d+)m)?$", re.IGNORECASE)
_USGS = re.compile(r"^(L[COTE]0\d)_(L\d\w\w)_.*_(SR_B|B)(\d+)$", re.IGNORECASE)
_USGS_QA = re.compile(r"^(L[COTE]0\d)_.*_QA_PIXEL$", re.IGNORECASE)


def read_raster(source: str, band_names: Sequence[str] | None = None) -> SceneSpec:
    """One stacked raster; `band_names` name its bands in order (for files without descriptions)."""
    with open_raster(source) as src:
        count, descriptions = src.count, list(src.descriptions)
        scales, offsets = list(src.scales), list(src.offsets)
        level = tagged_level(src.tags())
    if band_names is not None:
        if len(band_names) != count:
            raise WetmapError(f"--bands names {len(band_names)} bands, the file has {count}", source)
        names: list[str | None] = []
        for given in band_names:
            name = canonical(given)
            if name is None:
                raise WetmapError(f"--bands: '{given}' is not a band name (B02, B2, blue, nir08, ...)", source)
            names.append(name)
    else:
        names = [canonical(d) for d in descriptions]
    bands, notes = [], []
    for i in range(count):
        scale, offset = scales[i], offsets[i]
        if (scale, offset) != (1.0, 0.0):    # GDAL's rescaling gives reflectance 0-1
            scale, offset = scale * 10000.0, offset * 10000.0
            notes.append(f"band {i + 1}: reflectance x 10000 = 10000 x (DN x {scales[i]:g} {offsets[i]:+g}) "
                         "(GDAL scale/offset)")
        bands.append(BandSource(names[i], source, i + 1, scale, offset, None, descriptions[i] or f"band {i + 1}"))
    return SceneSpec(source, "raster", tuple(bands), None, None, level, tuple(notes))


def tagged_level(tags: dict[str, str]) -> str | None:
    """The processing level a raster's metadata states: GDAL's Sentinel-2 driver writes
    PROCESSING_LEVEL=Level-1C / Level-2A and PRODUCT_TYPE=S2MSI1C, and gdal_translate keeps them."""
    text = f"{tags.get('PROCESSING_LEVEL', '')} {tags.get('PRODUCT_TYPE', '')}".upper()
    for token, level in (("LEVEL-1C", "L1C"), ("LEVEL-2A", "L2A"), ("MSI1C", "L1C"), ("MSI2A", "L2A")):
        if token in text:
            return level
    match = re.search(r"\b(L1C|L2A|L1TP|L1GT|L1GS|L2SP|L2SR)\b", text)
    return match.group(1) if match else None


def band_files(paths: Sequence[Path], source: str) -> SceneSpec:
    """Single-band files, each named for its band; a QA_PIXEL or SCL file among them is the mask."""
    best: dict[str, tuple[int, BandSource]] = {}
    mask, sensor, level, dates = None, None, None, set()
    mask_res = 1 << 30
    for path in sorted(paths):
        stem = path.stem
        if _USGS_QA.match(stem):
            mask = MaskSource(str(path), "qa_pixel", "product")
            continue
        esa, usgs = _ESA.search(stem), _USGS.match(stem)
        res, scale, offset, nodata = 0, 1.0, 0.0, None
        if esa:
            token, res = esa.group(2).upper(), int(esa.group(3) or 0)
            dates.add(esa.group(1))
            sensor = "sentinel-2"
            if token == "SCL":
                if mask is None or res < mask_res:
                    mask, mask_res = MaskSource(str(path), "scl", "product"), res
                continue
            name, nodata = canonical(token), 0.0
        elif usgs:
            sensor = "landsat-" + usgs.group(1)[-1]
            name = landsat_bands(usgs.group(1)).get(int(usgs.group(4)))
            level, nodata = usgs.group(2).upper(), 0.0
            if usgs.group(3).upper() == "SR_B":
                scale, offset = C2_L2_SCALE * 10000.0, C2_L2_OFFSET * 10000.0
        else:
            name = canonical(stem) or canonical(stem.rsplit("_", 1)[-1])
        if name is None:
            continue
        source_band = BandSource(name, str(path), 1, scale, offset, nodata, path.name)
        if name not in best or res < best[name][0]:
            best[name] = (res, source_band)
    if not best:
        raise WetmapError("no band file found (names like B04.tif, T32UPU_..._B04_10m.jp2, LC09_..._SR_B4.TIF)",
                          source)
    notes = ["no product metadata: values taken as reflectance x 10000 as stored"]
    if any(b.scale != 1.0 for _, b in best.values()):
        notes = ["surface reflectance x 10000 = DN x 0.275 - 2000 (USGS Collection 2 Level-2 file names)"]
    if sensor == "sentinel-2" and any(d >= "20220125" for d in dates):
        warnings.warn(f"{source}: Sentinel-2 band files from {max(dates)} without their product metadata: "
                      "products of processing baseline 04.00 and later store reflectance + 1000; "
                      "give the SAFE (or its MTD_MSIL*.xml) so that the offset is removed", WetmapWarning,
                      stacklevel=2)
    ordered = tuple(b for _, b in sorted(best.values(), key=lambda item: band_order(item[1].name)))
    return SceneSpec(source, "band files", ordered, mask, sensor, level, tuple(notes))


def folder_files(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in RASTER_SUFFIXES]
