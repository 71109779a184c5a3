"""Sentinel-2 L1C / L2A products as ESA delivers them: a SAFE folder, its .zip, or its MTD file.

The product metadata (`MTD_MSIL2A.xml` / `MTD_MSIL1C.xml`) names every image file and says how
its digital numbers become reflectance: reflectance = (DN + offset) / quantification value, with
the offset -1000 since processing baseline 04.00 (`BOA_ADD_OFFSET` / `RADIO_ADD_OFFSET`) and none
before. Each band is taken at its finest resolution (B02-B04, B08 at 10 m; B05-B07, B8A, B11,
B12 at 20 m); L2A's scene classification (SCL, 20 m) is its cloud mask. Pixels are read by GDAL
straight from the JPEG 2000 files (in the zip through /vsizip/): nothing is unpacked.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

from wetmap.bands import band_order, canonical
from wetmap.errors import WetmapError
from wetmap.scenes import xml
from wetmap.scenes.spec import BandSource, MaskSource, SceneSpec

METADATA = ("MTD_MSIL2A.xml", "MTD_MSIL1C.xml")
_FILE = re.compile(r"_(B\d[\dA]|SCL|TCI|AOT|WVP)(?:_(\d+)m)?$")


def find_metadata(folder: Path) -> Path | None:
    for name in METADATA:
        if (folder / name).is_file():
            return folder / name
    return None


def is_safe_zip(path: Path) -> bool:
    return path.suffix.lower() == ".zip" and path.is_file()


def read_safe(source: str) -> SceneSpec:
    """A SAFE folder, a SAFE .zip or the MTD_MSIL*.xml inside a SAFE."""
    path = Path(source)
    if is_safe_zip(path):
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
                mtd = next((n for n in names if n.rsplit("/", 1)[-1] in METADATA and n.count("/") <= 1), None)
                if mtd is None:
                    raise WetmapError("zip holds no Sentinel-2 product (no MTD_MSIL2A.xml / MTD_MSIL1C.xml "
                                      "at its top level)", source)
                data = archive.read(mtd)
        except zipfile.BadZipFile:
            raise WetmapError("not a readable zip file", source) from None
        root = f"/vsizip/{path.resolve()}/{mtd.rsplit('/', 1)[0]}" if "/" in mtd else f"/vsizip/{path.resolve()}"
        members = set(names)
        prefix = mtd.rsplit("/", 1)[0] + "/" if "/" in mtd else ""
        exists = lambda rel: prefix + rel in members  # noqa: E731
        return _from_metadata(source, data, mtd, root, exists)
    mtd_path = path if path.is_file() else find_metadata(path)
    if mtd_path is None:
        raise WetmapError("no MTD_MSIL2A.xml or MTD_MSIL1C.xml in this folder", source)
    folder = mtd_path.parent
    return _from_metadata(source, mtd_path.read_bytes(), str(mtd_path), str(folder),
                          lambda rel: (folder / rel).is_file())


def _from_metadata(source: str, data: bytes, name: str, root: str, exists) -> SceneSpec:
    tree = xml.parse(data, name)
    product_type = xml.text(tree, "PRODUCT_TYPE") or ""
    level = "L2A" if "2A" in product_type else "L1C" if "1C" in product_type else None
    if level is None:
        raise WetmapError(f"unknown Sentinel-2 product type '{product_type}'", name)
    baseline = xml.text(tree, "PROCESSING_BASELINE") or "unknown"
    quant_tag = "BOA_QUANTIFICATION_VALUE" if level == "L2A" else "QUANTIFICATION_VALUE"
    quant = float(xml.text(tree, quant_tag) or 10000)
    physical = {el.get("bandId"): canonical(el.get("physicalBand"))
                for el in xml.find_all(tree, "Spectral_Information")}
    offset_tag = "BOA_ADD_OFFSET" if level == "L2A" else "RADIO_ADD_OFFSET"
    offsets = {physical.get(el.get("band_id")): float(el.text) for el in xml.find_all(tree, offset_tag) if el.text}
    nodata = 0.0
    for special in xml.find_all(tree, "Special_Values"):
        if (xml.text(special, "SPECIAL_VALUE_TEXT") or "").upper() == "NODATA":
            nodata = float(xml.text(special, "SPECIAL_VALUE_INDEX") or 0)

    best: dict[str, tuple[int, str]] = {}   # band -> (resolution, relative path)
    for entry in xml.find_all(tree, "IMAGE_FILE"):
        rel = (entry.text or "").strip()
        match = _FILE.search(rel)
        if not match:
            continue
        token, res = match.group(1), int(match.group(2) or 0)
        band = "SCL" if token == "SCL" else canonical(token)
        if band is None:
            continue
        if band in best and res == best[band][0]:
            raise WetmapError(f"lists {band} twice (a multi-granule product of before December 2016?); "
                              "give one granule's files as a folder of band files", name)
        if band not in best or res < best[band][0]:
            best[band] = (res, rel + ".jp2")
    if not any(b.startswith("B") for b in best):
        raise WetmapError("the product metadata lists no band files", name)
    for _, rel in best.values():
        if not exists(rel):
            raise WetmapError(f"band file listed in {Path(name).name} is missing: {rel}", source)

    bands = []
    for band in sorted((b for b in best if b != "SCL"), key=band_order):
        res, rel = best[band]
        off = offsets.get(band, 0.0)
        bands.append(BandSource(band, f"{root}/{rel}", 1, 10000.0 / quant, off * 10000.0 / quant, nodata,
                                f"{band}{f'_{res}m' if res else ''}"))
    mask = MaskSource(f"{root}/{best['SCL'][1]}", "scl", "product") if "SCL" in best else None
    shift = {o for o in offsets.values()}
    how = (f"DN {next(iter(shift)):+.0f}" if len(shift) == 1 and 0 not in shift else "DN") + \
          ("" if quant == 10000 else f" x 10000 / {quant:g}")
    note = f"processing baseline {baseline}: reflectance x 10000 = {how}"
    return SceneSpec(source, "Sentinel-2 SAFE", tuple(bands), mask, "sentinel-2", level, (note,))

