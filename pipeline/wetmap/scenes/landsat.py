"""Landsat Collection 2 products as USGS delivers them: a scene folder or its MTL file.

The MTL (ODL text, JSON or XML: the same tree) names the band files and their rescaling. Level 2
(L2SP / L2SR) surface reflectance = DN x REFLECTANCE_MULT_BAND_n + REFLECTANCE_ADD_BAND_n
(2.75e-05 and -0.2 for every Collection 2 sensor); Level 1 top-of-atmosphere reflectance is the
same rescaling divided by the sine of the sun elevation. DN 0 is fill; QA_PIXEL is the cloud
mask. Bands are given their Sentinel-2 equivalents by wavelength (bands.py).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from wetmap.bands import band_order, landsat_bands
from wetmap.errors import WetmapError
from wetmap.scenes import xml
from wetmap.scenes.spec import BandSource, MaskSource, SceneSpec

MTL_SUFFIXES = ("_MTL.json", "_MTL.txt", "_MTL.xml")
# USGS's Collection 2 Level-2 surface reflectance rescaling, the same for every sensor.
C2_L2_SCALE, C2_L2_OFFSET = 2.75e-05, -0.2


def find_mtl(folder: Path) -> Path | None:
    for suffix in MTL_SUFFIXES:
        found = sorted(folder.glob(f"*{suffix}"))
        if found:
            return found[0]
    return None


def is_mtl(path: Path) -> bool:
    return path.name.endswith(MTL_SUFFIXES)


def parse_odl(text: str) -> dict[str, Any]:
    """USGS's ODL text (GROUP = ... / KEY = VALUE / END_GROUP) as nested dicts."""
    root: dict[str, Any] = {}
    stack = [root]
    for line in text.splitlines():
        key, sep, value = line.strip().partition("=")
        key, value = key.strip(), value.strip()
        if not sep:
            continue
        if key == "GROUP":
            child: dict[str, Any] = {}
            stack[-1].setdefault(value, child)
            stack.append(child)
        elif key == "END_GROUP":
            if len(stack) > 1:
                stack.pop()
        else:
            stack[-1][key] = value.strip('"')
    return root


def _xml_tree(element) -> dict[str, Any] | str:
    children = list(element)
    if not children:
        return (element.text or "").strip()
    return {xml.local(c.tag): _xml_tree(c) for c in reversed(children)}  # the first of a repeated tag wins


def read_mtl(path: Path) -> dict[str, Any]:
    """The MTL's LANDSAT_METADATA_FILE tree, whichever encoding it is in."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise WetmapError(f"cannot read ({exc.strerror})", path) from None
    if path.suffix.lower() == ".json":
        try:
            tree = json.loads(raw)
        except ValueError:
            raise WetmapError("not valid JSON", path) from None
    elif path.suffix.lower() == ".xml":
        root = xml.parse(raw, str(path))
        tree = {xml.local(root.tag): _xml_tree(root)}
    else:
        tree = parse_odl(raw.decode("utf-8", "replace"))
    meta = tree.get("LANDSAT_METADATA_FILE") if isinstance(tree, dict) else None
    if not isinstance(meta, dict):
        raise WetmapError("not a Landsat Collection 2 MTL (no LANDSAT_METADATA_FILE)", path)
    return meta


def read_landsat(source: str) -> SceneSpec:
    """A Landsat Collection 2 scene folder or one of its MTL files."""
    path = Path(source)
    mtl = path if path.is_file() else find_mtl(path)
    if mtl is None:
        raise WetmapError("no *_MTL.json / *_MTL.txt / *_MTL.xml in this folder", source)
    meta = read_mtl(mtl)
    contents = meta.get("PRODUCT_CONTENTS", {})
    image = meta.get("IMAGE_ATTRIBUTES", {})
    level = str(contents.get("PROCESSING_LEVEL", "")) or None
    spacecraft = str(image.get("SPACECRAFT_ID", ""))
    if not spacecraft:
        raise WetmapError("MTL names no SPACECRAFT_ID", mtl)
    equivalents = landsat_bands(spacecraft)
    level2 = level is not None and level.startswith("L2")
    rescale = meta.get("LEVEL2_SURFACE_REFLECTANCE_PARAMETERS" if level2 else "LEVEL1_RADIOMETRIC_RESCALING", {})
    sun = 1.0
    if not level2:
        elevation = image.get("SUN_ELEVATION")
        if elevation is None:
            raise WetmapError("Level-1 MTL without SUN_ELEVATION: cannot compute reflectance", mtl)
        sun = math.sin(math.radians(float(elevation)))
    bands = []
    for key, name in sorted(contents.items()):
        match = re.fullmatch(r"FILE_NAME_BAND_(\d+)", key)
        if not match:
            continue
        number = int(match.group(1))
        mult, add = rescale.get(f"REFLECTANCE_MULT_BAND_{number}"), rescale.get(f"REFLECTANCE_ADD_BAND_{number}")
        if mult is None or add is None or number not in equivalents:
            continue   # thermal and panchromatic bands: no reflectance wetmap uses
        file = mtl.parent / str(name)
        if not file.is_file():
            raise WetmapError(f"band file named in {mtl.name} is missing: {name}", source)
        label = f"band {number} ({Path(str(name)).stem.rsplit('_', 1)[-1]})"
        bands.append(BandSource(equivalents[number], str(file), 1, float(mult) / sun * 10000.0,
                                float(add) / sun * 10000.0, 0.0, label))
    if not bands:
        raise WetmapError("MTL lists no reflectance band", mtl)
    mask = None
    qa = contents.get("FILE_NAME_QUALITY_L1_PIXEL")
    if qa and (mtl.parent / str(qa)).is_file():
        mask = MaskSource(str(mtl.parent / str(qa)), "qa_pixel", "product")
    first = bands[0]
    kind = "surface" if level2 else "top-of-atmosphere"
    formula = f"DN x {first.scale / 10000 * sun:g} {first.offset / 10000 * sun:+g}"
    note = (f"{kind} reflectance x 10000 = 10000 x ({formula})"
            f"{'' if level2 else ' / sin(sun elevation)'} (MTL)")
    sensor = "landsat-" + (re.findall(r"\d+", spacecraft) or ["?"])[-1].lstrip("0")
    return SceneSpec(source, "Landsat C2", tuple(sorted(bands, key=lambda b: band_order(b.name))), mask, sensor, level,
                     (note,))
