"""Real product layouts built from the sample scene, in the tests themselves (nothing downloaded).

Each builder writes a product in the layout its provider delivers (a Sentinel-2 SAFE of JPEG 2000
files with MTD_MSIL2A.xml / MTD_MSIL1C.xml, a Landsat Collection 2 Level-2 folder with its MTL,
STAC items in Planetary Computer's and Earth Search's asset naming, a folder of band files) and
the stacked GeoTIFF a user would make by hand from it: harmonised reflectance x 10000 (float32,
no data NaN), the coarse bands resampled onto the 10 m grid with GDAL's bilinear warp.
"""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
import rasterio.warp
from affine import Affine
from rasterio.enums import Resampling

from wetmap.sample import SampleFiles

BANDS_10M = ("B02", "B03", "B04", "B08")
BANDS_20M = ("B11", "B12")
MODEL_BANDS = ("B02", "B03", "B04", "B08", "B11", "B12")
TILE, DATATAKE = "T32UPU", "20260614T103031"


@dataclass
class Scene:
    """The sample scene's bands: 10 m (uint16 reflectance x 10000, 0 = no data) and its SCL."""

    bands: dict[str, np.ndarray]   # name -> (H, W) uint16 at 10 m
    scl: np.ndarray                # (H, W) uint8 at 10 m
    crs: rasterio.crs.CRS
    transform: Affine


def read_sample(sample: SampleFiles) -> Scene:
    with rasterio.open(sample.scene_a) as src:
        data = src.read()
        names = list(src.descriptions)
        crs, transform = src.crs, src.transform
    with rasterio.open(sample.scene_a_scl) as src:
        scl = src.read(1)
    return Scene({n: data[i] for i, n in enumerate(names)}, scl, crs, transform)


def coarse(transform: Affine, factor: int) -> Affine:
    return transform * Affine.scale(factor)


def downsample(data: np.ndarray, factor: int, nodata: int = 0) -> np.ndarray:
    """Block mean of valid pixels (a coarse band as a sensor would see it); no data where none."""
    h, w = data.shape[0] // factor, data.shape[1] // factor
    blocks = data[: h * factor, : w * factor].reshape(h, factor, w, factor).astype(np.float64)
    ok = blocks != nodata
    n = ok.sum(axis=(1, 3))
    mean = np.where(n > 0, (blocks * ok).sum(axis=(1, 3)) / np.maximum(n, 1), nodata)
    return np.rint(mean).astype(data.dtype)


def write(path: Path, data: np.ndarray, crs, transform: Affine, *, driver: str = "GTiff", nodata=None,
          descriptions=None, **options) -> Path:
    data = data[None] if data.ndim == 2 else data
    profile = {"driver": driver, "width": data.shape[2], "height": data.shape[1], "count": data.shape[0],
               "dtype": data.dtype.name, "crs": crs, "transform": transform, "nodata": nodata}
    if driver == "JP2OpenJPEG":
        options = {"QUALITY": "100", "REVERSIBLE": "YES", "BLOCKXSIZE": 128, "BLOCKYSIZE": 128, **options}
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", **profile, **options) as dst:
        dst.write(data)
        for i, text in enumerate(descriptions or [], start=1):
            dst.set_band_description(i, text)
    return path


def stacked_reference(path: Path, scene: Scene, dn10: dict[str, np.ndarray], dn20: dict[str, np.ndarray],
                      scale: float, offset: float, nodata: int = 0) -> Path:
    """The stack a user makes by hand: 20 m bands warped onto the 10 m grid (bilinear, no data left
    out), every band rescaled to reflectance x 10000 in float32, NaN where any band is no data."""
    h, w = next(iter(dn10.values())).shape
    raw = {}
    for name in MODEL_BANDS:
        if name in dn10:
            raw[name] = dn10[name]
        else:
            out = np.zeros((h, w), dn20[name].dtype)
            rasterio.warp.reproject(dn20[name], out, src_transform=coarse(scene.transform, 2), src_crs=scene.crs,
                                    dst_transform=scene.transform, dst_crs=scene.crs, resampling=Resampling.bilinear,
                                    src_nodata=nodata, dst_nodata=nodata)
            raw[name] = out
    bad = np.logical_or.reduce([raw[n] == nodata for n in MODEL_BANDS])
    stack = []
    for name in MODEL_BANDS:
        values = raw[name].astype(np.float32)
        if (scale, offset) != (1.0, 0.0):
            values *= np.float32(scale)
            values += np.float32(offset)
        values[bad] = np.nan
        stack.append(values)
    return write(path, np.stack(stack), scene.crs, scene.transform, nodata=float("nan"),
                 descriptions=list(MODEL_BANDS))


# --- Sentinel-2 -----------------------------------------------------------------------------------

def _spectral(offset_tag: str, offset: int | None) -> tuple[str, str]:
    physical = ["B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12"]
    info = "".join(f'<Spectral_Information bandId="{i}" physicalBand="{b}"><RESOLUTION>10</RESOLUTION>'
                   f"</Spectral_Information>" for i, b in enumerate(physical))
    offsets = ""
    if offset is not None:
        tag = "BOA_ADD_OFFSET_VALUES_LIST" if offset_tag == "BOA_ADD_OFFSET" else "Radiometric_Offset_List"
        offsets = f"<{tag}>" + "".join(f'<{offset_tag} band_id="{i}">{offset}</{offset_tag}>'
                                       for i in range(len(physical))) + f"</{tag}>"
    return info, offsets


def make_safe(root: Path, sample: SampleFiles, *, level: str = "L2A", baseline: str = "04.00") -> tuple[Path, Path]:
    """A SAFE of the sample scene (B02-B04, B08 at 10 m; B11, B12 and SCL at 20 m, as ESA cuts
    them) and the equivalent stacked GeoTIFF. Returns (SAFE folder, stacked reference)."""
    scene = read_sample(sample)
    offset = -1000 if float(baseline) >= 4 else 0
    shift = -offset
    dn10 = {n: np.where(scene.bands[n] > 0, scene.bands[n] + shift, 0).astype(np.uint16) for n in BANDS_10M}
    dn20 = {n: np.where(downsample(scene.bands[n], 2) > 0, downsample(scene.bands[n], 2) + shift, 0).astype(np.uint16)
            for n in BANDS_20M}
    product = f"S2A_MSI{level}_{DATATAKE}_N{baseline.replace('.', '')}_R065_{TILE}_{DATATAKE}"
    safe = root / f"{product}.SAFE"
    granule = f"GRANULE/{level}_{TILE}_A000001_{DATATAKE}/IMG_DATA"
    files = []
    for name, data in {**dn10, **dn20}.items():
        res = 10 if name in BANDS_10M else 20
        if level == "L2A":
            rel = f"{granule}/R{res}m/{TILE}_{DATATAKE}_{name}_{res}m"
        else:
            rel = f"{granule}/{TILE}_{DATATAKE}_{name}"
        write(safe / f"{rel}.jp2", data, scene.crs, coarse(scene.transform, res // 10), driver="JP2OpenJPEG")
        files.append(rel)
    scl_path = None
    if level == "L2A":
        rel = f"{granule}/R20m/{TILE}_{DATATAKE}_SCL_20m"
        scl_path = write(safe / f"{rel}.jp2", scene.scl[::2, ::2].copy(), scene.crs, coarse(scene.transform, 2),
                         driver="JP2OpenJPEG")
        files.append(rel)
    info, offsets = _spectral("BOA_ADD_OFFSET" if level == "L2A" else "RADIO_ADD_OFFSET",
                              offset if offset else None)
    quant = ("<QUANTIFICATION_VALUES_LIST><BOA_QUANTIFICATION_VALUE unit=\"none\">10000</BOA_QUANTIFICATION_VALUE>"
             "</QUANTIFICATION_VALUES_LIST>") if level == "L2A" else \
        '<QUANTIFICATION_VALUE unit="none">10000</QUANTIFICATION_VALUE>'
    images = "".join(f"<IMAGE_FILE>{rel}</IMAGE_FILE>" for rel in files)
    ns = "https://psd-14.sentinel2.eo.esa.int/PSD/User_Product_Level-" + level[1:] + ".xsd"
    mtd = f"""<?xml version="1.0" encoding="UTF-8"?>
<n1:Level-{level[1:]}_User_Product xmlns:n1="{ns}">
  <n1:General_Info><Product_Info><PRODUCT_TYPE>S2MSI{level[1:]}</PRODUCT_TYPE>
    <PROCESSING_BASELINE>{baseline}</PROCESSING_BASELINE>
    <Product_Organisation><Granule_List><Granule>{images}</Granule></Granule_List></Product_Organisation>
  </Product_Info>
  <Product_Image_Characteristics>
    <Special_Values><SPECIAL_VALUE_TEXT>NODATA</SPECIAL_VALUE_TEXT><SPECIAL_VALUE_INDEX>0</SPECIAL_VALUE_INDEX></Special_Values>
    <Special_Values><SPECIAL_VALUE_TEXT>SATURATED</SPECIAL_VALUE_TEXT><SPECIAL_VALUE_INDEX>65535</SPECIAL_VALUE_INDEX></Special_Values>
    {quant}{offsets}
    <Spectral_Information_List>{info}</Spectral_Information_List>
  </Product_Image_Characteristics></n1:General_Info>
</n1:Level-{level[1:]}_User_Product>
"""
    (safe / f"MTD_MSI{level}.xml").write_text(mtd)
    reference = stacked_reference(root / f"{product}_stacked.tif", scene, dn10, dn20, 1.0, float(offset))
    if scl_path is not None:
        write(root / f"{product}_scl.tif", scene.scl[::2, ::2].copy(), scene.crs, coarse(scene.transform, 2),
              descriptions=["SCL"])
    return safe, reference


def zip_safe(safe: Path) -> Path:
    """The SAFE as it is downloaded: a zip whose top-level entry is the .SAFE folder."""
    archive = safe.with_suffix(".zip")
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
        for path in sorted(safe.rglob("*")):
            if path.is_file():
                zf.write(path, str(path.relative_to(safe.parent)))
    return archive


# --- Landsat --------------------------------------------------------------------------------------

LANDSAT_ID = "LC08_L2SP_193023_20260614_20260620_02_T1"
LANDSAT_BANDS = {2: "B02", 3: "B03", 4: "B04", 5: "B08", 6: "B11", 7: "B12"}   # OLI -> the sample's bands


def qa_pixel(scl: np.ndarray) -> np.ndarray:
    """QA_PIXEL bits from the sample's SCL: 0 fill, 2 cirrus, 3 cloud, 4 shadow, 6 clear."""
    qa = np.full(scl.shape, 1 << 6, np.uint16)
    qa[np.isin(scl, (8, 9))] = 1 << 3
    qa[scl == 10] = 1 << 2
    qa[scl == 3] = 1 << 4
    qa[scl == 0] = 1
    return qa


def make_landsat(root: Path, sample: SampleFiles, mtl: str = "txt") -> tuple[Path, Path]:
    """A Landsat 8 Collection 2 Level-2 folder of the sample (SR_B2-B7 with C2 rescaling, QA_PIXEL,
    MTL) and the equivalent stacked GeoTIFF."""
    scene = read_sample(sample)
    folder = root / LANDSAT_ID
    dn = {}
    for number, name in LANDSAT_BANDS.items():
        refl = scene.bands[name].astype(np.float64)
        dn[number] = np.where(refl > 0, np.rint((refl + 2000) / 0.275), 0).astype(np.uint16)
        write(folder / f"{LANDSAT_ID}_SR_B{number}.TIF", dn[number], scene.crs, scene.transform)
    write(folder / f"{LANDSAT_ID}_QA_PIXEL.TIF", qa_pixel(scene.scl), scene.crs, scene.transform)
    names = {f"FILE_NAME_BAND_{n}": f"{LANDSAT_ID}_SR_B{n}.TIF" for n in LANDSAT_BANDS}
    names["FILE_NAME_QUALITY_L1_PIXEL"] = f"{LANDSAT_ID}_QA_PIXEL.TIF"
    rescale = {}
    for n in LANDSAT_BANDS:
        rescale[f"REFLECTANCE_MULT_BAND_{n}"] = "2.75e-05"
        rescale[f"REFLECTANCE_ADD_BAND_{n}"] = "-0.2"
    tree = {"LANDSAT_METADATA_FILE": {
        "PRODUCT_CONTENTS": {"LANDSAT_PRODUCT_ID": LANDSAT_ID, "PROCESSING_LEVEL": "L2SP", **names},
        "IMAGE_ATTRIBUTES": {"SPACECRAFT_ID": "LANDSAT_8", "SENSOR_ID": "OLI_TIRS", "SUN_ELEVATION": "55.1"},
        "LEVEL2_SURFACE_REFLECTANCE_PARAMETERS": rescale}}
    if mtl == "json":
        (folder / f"{LANDSAT_ID}_MTL.json").write_text(json.dumps(tree, indent=2))
    else:
        lines = []

        def emit(name: str, node: dict, depth: int) -> None:
            lines.append("  " * depth + f"GROUP = {name}")
            for key, value in node.items():
                if isinstance(value, dict):
                    emit(key, value, depth + 1)
                else:
                    quoted = value if value.replace(".", "").replace("-", "").replace("e", "").isdigit() else f'"{value}"'
                    lines.append("  " * (depth + 1) + f"{key} = {quoted}")
            lines.append("  " * depth + f"END_GROUP = {name}")

        emit("LANDSAT_METADATA_FILE", tree["LANDSAT_METADATA_FILE"], 0)
        (folder / f"{LANDSAT_ID}_MTL.txt").write_text("\n".join(lines + ["END"]) + "\n")
    dn10 = {name: dn[number] for number, name in LANDSAT_BANDS.items()}
    reference = stacked_reference(root / f"{LANDSAT_ID}_stacked.tif", scene, dn10, {}, 2.75e-05 * 10000.0,
                                  -0.2 * 10000.0)
    return folder, reference


# --- STAC items -----------------------------------------------------------------------------------

def stac_item(path: Path, safe: Path, scheme: str) -> Path:
    """A STAC item for the SAFE's band files: Planetary Computer's keys (B04, SCL, with
    s2:processing_baseline) or Earth Search's (red, scl, with raster:bands scale / offset)."""
    common = {"B02": "blue", "B03": "green", "B04": "red", "B08": "nir", "B11": "swir16", "B12": "swir22"}
    assets = {}
    for jp2 in sorted(safe.rglob("*.jp2")):
        token = jp2.stem.split("_")[2]
        href = os.path.relpath(jp2, path.parent)
        if token == "SCL":
            assets["SCL" if scheme == "pc" else "scl"] = {"href": href, "type": "image/jp2", "roles": ["data"]}
            continue
        asset = {"href": href, "type": "image/jp2", "roles": ["data"],
                 "eo:bands": [{"name": token, "common_name": common[token]}]}
        if scheme == "earthsearch":
            asset["raster:bands"] = [{"nodata": 0, "data_type": "uint16", "scale": 0.0001, "offset": -0.1}]
        assets[token if scheme == "pc" else common[token]] = asset
    props = {"datetime": "2026-06-14T10:30:31Z", "platform": "sentinel-2a", "s2:product_type": "S2MSI2A"}
    if scheme == "pc":
        props["s2:processing_baseline"] = "04.00"
    item = {"type": "Feature", "stac_version": "1.0.0", "id": f"S2A_MSIL2A_{DATATAKE}_{TILE}",
            "geometry": None, "properties": props, "assets": assets, "links": []}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(item, indent=2))
    return path


# --- band files -------------------------------------------------------------------------------------

def band_folder(root: Path, sample: SampleFiles, naming: str = "plain") -> tuple[Path, Path]:
    """Single-band files of the sample scene (10 m and 20 m, values as stored) and the stack."""
    scene = read_sample(sample)
    folder = root / f"bands-{naming}"
    dn10 = {n: scene.bands[n] for n in BANDS_10M}
    dn20 = {n: downsample(scene.bands[n], 2) for n in BANDS_20M}
    for name, data in {**dn10, **dn20}.items():
        res = 10 if name in BANDS_10M else 20
        file = f"{name}.tif" if naming == "plain" else f"T32UPU_20200612T103031_{name}_{res}m.jp2"
        driver = "GTiff" if naming == "plain" else "JP2OpenJPEG"
        write(folder / file, data, scene.crs, coarse(scene.transform, res // 10), driver=driver,
              nodata=0 if naming == "plain" else None)
    reference = stacked_reference(root / f"bands-{naming}_stacked.tif", scene, dn10, dn20, 1.0, 0.0)
    return folder, reference


def copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst
