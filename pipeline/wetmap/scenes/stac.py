"""STAC items (a JSON file or URL): one asset per band, as Planetary Computer, Earth Search and
USGS publish them.

An asset's band comes from its `eo:bands` name or its key (`B04`, `red`, `nir08`); for Landsat
from the common name, as its `eo:bands` names (`B5`) are Landsat's own numbers. Reflectance:
`raster:bands` scale / offset when the item has them (they give reflectance 0-1); otherwise
Sentinel-2's offset of -1000 from processing baseline 04.00 on (`s2:processing_baseline`, unless
`earthsearch:boa_offset_applied`), and USGS's Collection 2 Level-2 rescaling for Landsat L2. An
item that cannot say is refused, never guessed. The `SCL` / `qa_pixel` asset is the cloud mask.
Assets are read by GDAL where they are (https and s3 hrefs through /vsicurl/ and /vsis3/).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from wetmap.bands import band_order, canonical
from wetmap.errors import WetmapError
from wetmap.io.paths import gdal_path, join, read_json
from wetmap.scenes.landsat import C2_L2_OFFSET, C2_L2_SCALE
from wetmap.scenes.spec import BandSource, MaskSource, SceneSpec

# Baseline 04.00 (the -1000 offset) went live on 25 January 2022; only a product processed before
# it can lack the field and the offset.
BASELINE_04 = dt.datetime(2022, 1, 25, tzinfo=dt.UTC)


def is_item(doc: Any) -> bool:
    return isinstance(doc, dict) and doc.get("type") == "Feature" and isinstance(doc.get("assets"), dict)


def read_item(source: str) -> SceneSpec:
    doc = read_json(source)
    if not is_item(doc):
        raise WetmapError("not a STAC item (a GeoJSON Feature with assets)", source)
    props = doc.get("properties", {})
    platform = str(props.get("platform") or props.get("constellation") or "").lower()
    landsat = "landsat" in platform or str(doc.get("id", "")).upper().startswith(("LC0", "LE0", "LT0", "LO0"))
    sentinel2 = "sentinel-2" in platform or "sentinel2" in platform
    if not (landsat or sentinel2):
        raise WetmapError(f"STAC item of platform '{platform or 'unknown'}': wetmap reads Sentinel-2 and Landsat", source)
    item_id = str(doc.get("id", ""))
    level = _level(doc, props, landsat)
    rescaled = any(_rescale(a) for a in doc["assets"].values())
    if rescaled:
        default_scale, default_offset = 1.0, 0.0
        note = "reflectance x 10000 = 10000 x (DN x scale + offset), from the assets' raster:bands"
    else:
        default_scale, default_offset, note = (_landsat_rescale(item_id, source) if landsat
                                               else _sentinel2_offset(props, source))
    bands: dict[str, BandSource] = {}
    mask = None
    for key, asset in doc["assets"].items():
        href = asset.get("href")
        if not href:
            continue
        path = gdal_path(join(source, href))
        if key.lower() in ("scl",):
            mask = MaskSource(path, "scl", "product")
            continue
        if key.lower() in ("qa_pixel",):
            mask = MaskSource(path, "qa_pixel", "product")
            continue
        roles = asset.get("roles") or ["data"]
        if "data" not in roles or "image/" not in str(asset.get("type", "image/")):
            continue
        eo = asset.get("eo:bands") or []
        if len(eo) > 1:
            continue   # visual / composite assets
        info = eo[0] if eo else {}
        name = (canonical(info.get("common_name")) if landsat else
                canonical(info.get("name")) or canonical(key)) or canonical(key)
        if name is None or name in bands:
            continue
        raster = _rescale(asset) or (asset.get("raster:bands") or [{}])[0]
        scale, offset = default_scale, default_offset
        if "scale" in raster or "offset" in raster:
            scale = float(raster.get("scale", 1.0)) * 10000.0
            offset = float(raster.get("offset", 0.0)) * 10000.0
        nodata = raster.get("nodata", 0)
        bands[name] = BandSource(name, path, 1, scale, offset, None if nodata is None else float(nodata), key)
    if not bands:
        raise WetmapError("STAC item has no single-band reflectance asset", source)
    ordered = tuple(sorted(bands.values(), key=lambda b: band_order(b.name)))
    sensor = ("landsat-" + platform.rsplit("_", 1)[-1].lstrip("0")) if landsat else "sentinel-2"
    return SceneSpec(source, "STAC item", ordered, mask, sensor, level, (note,))


def _rescale(asset: dict[str, Any]) -> dict[str, Any] | None:
    """An asset's raster:bands entry if it sets a scale or an offset."""
    raster = (asset.get("raster:bands") or [{}])[0]
    return raster if isinstance(raster, dict) and ("scale" in raster or "offset" in raster) else None


def _level(doc: dict[str, Any], props: dict[str, Any], landsat: bool) -> str | None:
    text = " ".join(str(v) for v in (doc.get("id"), doc.get("collection"), props.get("s2:product_type"),
                                     props.get("landsat:correction"))).upper()
    for level in (("L2SP", "L2SR", "L1TP", "L1GT", "L1GS") if landsat else ("L2A", "L1C")):
        if level in text:
            return level
    if not landsat and "MSI2A" in text:
        return "L2A"
    if not landsat and "MSI1C" in text:
        return "L1C"
    return None


def _landsat_rescale(item_id: str, source: str) -> tuple[float, float, str]:
    if "_L2SP_" in item_id or "_L2SR_" in item_id:
        return (C2_L2_SCALE * 10000.0, C2_L2_OFFSET * 10000.0,
                "surface reflectance x 10000 = DN x 0.275 - 2000 (USGS Collection 2 Level-2)")
    raise WetmapError("Landsat STAC item that is not Collection 2 Level-2 and has no raster:bands scale: "
                      "cannot tell how its values become reflectance", source)


def _sentinel2_offset(props: dict[str, Any], source: str) -> tuple[float, float, str]:
    baseline = props.get("s2:processing_baseline") or props.get("processing:version")
    if props.get("earthsearch:boa_offset_applied") is True:
        return 1.0, 0.0, "offset already applied by the provider (earthsearch:boa_offset_applied)"
    if baseline is not None:
        number = float(str(baseline))
        offset = -1000.0 if number >= 4.0 else 0.0
        return 1.0, offset, f"processing baseline {baseline}: reflectance x 10000 = DN{offset:+.0f}" if offset \
            else f"processing baseline {baseline}: reflectance x 10000 = DN"
    when = props.get("datetime")
    try:
        date = dt.datetime.fromisoformat(str(when).replace("Z", "+00:00"))
    except ValueError:
        date = None
    if date is not None and date.tzinfo is not None and date < BASELINE_04:
        return 1.0, 0.0, f"acquired {date.date()}, before processing baseline 04.00: reflectance x 10000 = DN"
    raise WetmapError("Sentinel-2 STAC item with no s2:processing_baseline and no raster:bands offset, "
                      "acquired after January 2022: cannot tell whether its values carry the -1000 offset",
                      source)
