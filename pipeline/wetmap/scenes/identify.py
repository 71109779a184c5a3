"""From what the user typed to a SceneSpec: which product form it is, decided by its layout."""

from __future__ import annotations

import urllib.parse
from collections.abc import Sequence
from pathlib import Path

from wetmap.errors import WetmapError
from wetmap.io.paths import check_local, gdal_path, is_remote, url_of
from wetmap.scenes import files, landsat, sentinel2, stac
from wetmap.scenes.spec import SceneSpec


def open_scene(scene: str | Path | Sequence[str | Path], band_names: Sequence[str] | None = None) -> SceneSpec:
    """Resolve a scene argument.

    Accepted: a raster (GeoTIFF, COG, VRT, JP2; local or remote); a Sentinel-2 SAFE folder, its
    .zip or its MTD_MSIL*.xml; a Landsat Collection 2 folder or its MTL; a STAC item (JSON file or
    URL); a folder of single-band files, or a list of them (also as one comma-separated string).
    `band_names` names a stacked raster's bands in order.
    """
    if not isinstance(scene, (str, Path)):
        return _with_names(files.band_files([Path(p) for p in scene], ",".join(map(str, scene))), band_names)
    text = str(scene)
    if "," in text and not is_remote(text):
        parts = [p.strip() for p in text.split(",") if p.strip()]
        for part in parts:
            check_local(part)
        return _with_names(files.band_files([Path(p) for p in parts], text), band_names)
    path = gdal_path(text)
    url = url_of(path)
    if path.lower().endswith(".json") or (url is not None and not _raster_name(url)):
        # a STAC item: a .json file or URL, or an API URL (.../collections/C/items/ID)
        if path.upper().endswith("_MTL.JSON") and not is_remote(path):
            return _with_names(landsat.read_landsat(path), band_names)
        return _with_names(stac.read_item(text), band_names)
    if is_remote(path):
        return files.read_raster(path, band_names)
    check_local(path)
    local = Path(path)
    if local.is_dir():
        if sentinel2.find_metadata(local):
            return _with_names(sentinel2.read_safe(path), band_names)
        if landsat.find_mtl(local):
            return _with_names(landsat.read_landsat(path), band_names)
        found = files.folder_files(local)
        if not found:
            raise WetmapError("folder holds no raster, SAFE product or Landsat MTL", path)
        return _with_names(files.band_files(found, path), band_names)
    if sentinel2.is_safe_zip(local) or local.name in sentinel2.METADATA:
        return _with_names(sentinel2.read_safe(path), band_names)
    if landsat.is_mtl(local):
        return _with_names(landsat.read_landsat(path), band_names)
    return files.read_raster(path, band_names)


def _raster_name(url: str) -> bool:
    """Whether a URL names a raster file (by its suffix) rather than a document."""
    name = urllib.parse.urlparse(url).path.rsplit("/", 1)[-1].lower()
    return any(name.endswith(suffix) for suffix in files.RASTER_SUFFIXES)


def _with_names(spec: SceneSpec, band_names: Sequence[str] | None) -> SceneSpec:
    """`--bands` names the bands of a stacked raster; a product names its own."""
    if band_names is not None:
        raise WetmapError(f"--bands names the bands of a stacked raster; a {spec.form} names its own", spec.source)
    return spec



