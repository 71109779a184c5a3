"""Two scheduled runs over the sample, the second after a wetland was drained and land flooded in
the scene itself (by construction) and a cloud came over part of it: the comparison the second run
writes matches a brute-force count on the two runs' maps, cloudy pixels are unknown, `--since`
picks the run to compare with, `wetmap history` lists every run.

(How far the tiny test model follows the constructed change is not under test here: the change
classes are checked against maps made by construction in tests/change.)
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import shutil
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import rasterio.features
from rasterio.windows import Window

from conftest import run_cli, write_job
from wetmap.change.raster import GAINED, LOST, STABLE_OTHER, STABLE_WETLAND
from wetmap.jobs import run_job

pytestmark = pytest.mark.slow   # three real job runs
BLOCK = 16


def read(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(1)


def find_block(classes: np.ndarray, value: int) -> tuple[int, int]:
    """A BLOCK x BLOCK window (row, col) that the first run mapped all as `value`."""
    for r in range(0, classes.shape[0] - BLOCK, 2):
        for c in range(0, classes.shape[1] - BLOCK, 2):
            if (classes[r:r + BLOCK, c:c + BLOCK] == value).all():
                return r, c
    raise AssertionError(f"no {BLOCK}px block mapped all as class {value} in the first run")


@pytest.fixture(scope="module")
def two_runs(sample, bundle_path, tmp_path_factory) -> dict[str, object]:
    folder = tmp_path_factory.mktemp("change-job")
    scenes = folder / "scenes"
    scenes.mkdir()
    scene, scl = (Path(shutil.copy(p, scenes / p.name)) for p in (sample.scene_a, sample.scene_a_scl))
    job = write_job(folder, sample, bundle_path, folder / "out",
                    scenes={"images": [str(scene)], "clouds": "{stem}_scl.tif"})
    first = run_job(job)
    with rasterio.open(first.run_dir / "wetlands.tif") as src:
        classes, transform = src.read(1), src.transform
    corners = {name: transform * (c + 0.5, r + 0.5) for name, (r, c) in
               (("wet", find_block(classes, 1)), ("dry", find_block(classes, 0)))}
    with rasterio.open(scene, "r+") as dst:   # drain the wetland with the land's pixels, flood the land
        windows = {name: Window(*dst.index(*xy)[::-1], BLOCK, BLOCK) for name, xy in corners.items()}
        pixels = {name: dst.read(window=w) for name, w in windows.items()}
        dst.write(pixels["dry"], window=windows["wet"])
        dst.write(pixels["wet"], window=windows["dry"])
    with rasterio.open(scl, "r+") as dst:      # and a cloud over the left half of the flooded land
        row, col = dst.index(*corners["dry"])
        dst.write(np.full((1, BLOCK, BLOCK // 2), 9, np.uint8), window=Window(col, row, BLOCK // 2, BLOCK))
    second = run_job(job)
    return {"job": job, "first": first, "second": second, "cloud": corners["dry"]}


def test_the_second_run_maps_the_change_since_the_first(two_runs) -> None:
    first, second = two_runs["first"], two_runs["second"]
    assert first.status == second.status == "done"
    assert first.manifest["change"] == {"previous": None, "not_compared": "the job's first run",
                                        "wetland_ha": pytest.approx(first.manifest["change"]["wetland_ha"]),
                                        "previous_wetland_ha": None, "gained_ha": None, "lost_ha": None}
    assert second.manifest["change"]["previous"] == first.run_dir.name
    before, now = read(first.run_dir / "wetlands.tif"), read(second.run_dir / "wetlands.tif")
    with rasterio.open(second.run_dir / "change.tif") as src:
        change, transform, crs = src.read(1), src.transform, src.crs
    clear = (before != 255) & (now != 255)
    assert np.array_equal(change == 255, ~clear)
    for code, was, becomes in ((STABLE_OTHER, 0, 0), (STABLE_WETLAND, 1, 1), (GAINED, 0, 1), (LOST, 1, 0)):
        assert np.array_equal(change == code, clear & (before == was) & (now == becomes))
    row, col = rasterio.transform.rowcol(transform, *two_runs["cloud"])
    assert (change[row:row + BLOCK, col:col + BLOCK // 2] == 255).all()   # cloudy in the second run: unknown
    table = json.loads((second.run_dir / "change.json").read_text())
    regions = gpd.read_file(second.run_dir / "region.gpkg").to_crs(crs)
    for entry, geom in zip(table["regions"], regions.geometry):
        inside = rasterio.features.geometry_mask([geom], change.shape, transform, invert=True)
        assert entry["gained_ha"] == pytest.approx(((change == GAINED) & inside).sum() * 0.01, abs=1e-9)
        assert entry["lost_ha"] == pytest.approx(((change == LOST) & inside).sum() * 0.01, abs=1e-9)
        assert entry["wetland_ha"] == pytest.approx(((now == 1) & inside).sum() * 0.01, abs=1e-9)
        assert entry["clear_fraction"] == pytest.approx(((now != 255) & inside).sum() / inside.sum())
    assert {"change.tif", "change.qml", "change.gpkg", "change.csv", "change.json", "change.html", "change_map.png",
            "wetland_by_run.png"} <= set(second.manifest["outputs"])
    assert f"Since run {first.run_dir.name}" in (second.run_dir / "report" / "report.html").read_text()
    assert "Not compared: the job&#x27;s first run" in (first.run_dir / "change.html").read_text()


def test_history_lists_every_run_per_region(two_runs, monkeypatch, capsys) -> None:
    job, first, second = two_runs["job"], two_runs["first"], two_runs["second"]
    assert run_cli(["history", job, "--csv"], monkeypatch) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["run"] for r in rows][::5] == [first.run_dir.name, second.run_dir.name]   # 5 regions each
    later = [r for r in rows if r["run"] == second.run_dir.name]
    table = json.loads((second.run_dir / "change.json").read_text())
    assert [float(r["lost_ha"]) for r in later] == pytest.approx([r["lost_ha"] for r in table["regions"]])
    assert all(r["previous"] == first.run_dir.name for r in later)
    assert all(r["gained_ha"] == "" for r in rows if r["run"] == first.run_dir.name)
    assert run_cli(["history", job], monkeypatch) == 0
    assert "wetland per region and run" in capsys.readouterr().out


EXTENSION_SCHEMAS = Path(__file__).resolve().parents[1] / "data" / "stac-extensions"


def test_the_catalogue_lists_every_run_and_validates(two_runs) -> None:
    """catalog.json links one item per run, each with its COGs (raster:bands) and the grid (proj:),
    and validates with pystac against the STAC 1.1.0 schemas pystac carries and the projection
    and raster extensions' own schemas (tests/data/stac-extensions, copied from their repositories:
    this machine cannot download them)."""
    import pystac
    from pystac.validation import JsonSchemaSTACValidator, set_validator

    first, second = two_runs["first"], two_runs["second"]
    validator = JsonSchemaSTACValidator()
    for uri, name in (("https://stac-extensions.github.io/projection/v2.0.0/schema.json", "projection-v2.0.0.json"),
                      ("https://stac-extensions.github.io/raster/v1.1.0/schema.json", "raster-v1.1.0.json")):
        validator.schema_cache[uri] = json.loads((EXTENSION_SCHEMAS / name).read_text())
    set_validator(validator)
    try:
        catalog = pystac.Catalog.from_file(str(second.run_dir.parent / "catalog.json"))
        catalog.validate_all()
        items = {item.id: item for item in catalog.get_items(recursive=True)}
        for item in items.values():
            item.validate()
    finally:
        set_validator(JsonSchemaSTACValidator())
    assert list(items) == [first.run_dir.name, second.run_dir.name]
    later = items[second.run_dir.name]
    assert {"classes", "probability", "change", "change_polygons", "manifest"} <= set(later.assets)
    assert "change" not in items[first.run_dir.name].assets
    with rasterio.open(later.assets["classes"].get_absolute_href()) as src:
        assert later.properties["proj:code"] == f"EPSG:{src.crs.to_epsg()}"
        assert later.properties["proj:shape"] == list(src.shape)
        assert later.properties["proj:transform"] == pytest.approx(list(src.transform)[:6])
    assert later.assets["change"].extra_fields["raster:bands"][0]["nodata"] == 255
    assert later.properties["wetmap:previous_run"] == first.run_dir.name
    standalone = pystac.Item.from_file(str(second.run_dir / "item.json"))   # as a STAC browser opens one run
    assert standalone.get_root().id == catalog.id == "marshes"


def test_since_picks_the_run_to_compare_with(two_runs, monkeypatch, capsys) -> None:
    job, first, second = two_runs["job"], two_runs["first"], two_runs["second"]
    assert run_job(job).status == "up to date"
    today = dt.date.fromisoformat(second.run_dir.name[:10])
    assert run_job(job, since=today).status == "up to date"   # today's newest run is the latest itself
    assert run_cli(["run", job, "--since", "1999-01-01"], monkeypatch) == 2
    assert "no complete run of this job on or before 1999-01-01" in capsys.readouterr().err
    first.run_dir.rename(first.run_dir.with_name("2020-01-01"))   # as if the first run were older
    third = run_job(job, since=dt.date(2020, 6, 1))
    assert third.status == "done" and third.manifest["change"]["previous"] == "2020-01-01"
    (first.run_dir.with_name("2020-01-01") / "change.json").unlink()   # as a run made before change.json
    assert run_cli(["history", job], monkeypatch) == 0
    assert "runs without change.json (made by an older wetmap): 2020-01-01" in capsys.readouterr().out


def test_a_run_without_cloud_masks_compares_only_where_the_masked_run_was_clear(sample, bundle_path,
                                                                                 tmp_path: Path) -> None:
    """`scenes.clouds: none` (a mask word, not a file) runs; compared with a masked run, every
    pixel the masked run could not see is unknown, whatever the unmasked run says there."""
    masked = run_job(write_job(tmp_path, sample, bundle_path, tmp_path / "out"))
    job = write_job(tmp_path, sample, bundle_path, tmp_path / "out",
                    scenes={"images": [str(sample.scene_a.with_name("scene_?.tif"))], "clouds": "none"})
    bare = run_job(job)
    assert bare.status == "done" and bare.manifest["change"]["previous"] == masked.run_dir.name
    assert not any(entry["path"] == "none" for entry in bare.manifest["fingerprint"]["inputs"])
    before, now = read(masked.run_dir / "wetlands.tif"), read(bare.run_dir / "wetlands.tif")
    change = read(bare.run_dir / "change.tif")
    assert (before == 255).any() and np.array_equal(change == 255, (before == 255) | (now == 255))
