"""Label codes: a label raster's values are classes, unknown or its nodata, or mapped explicitly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio

from conftest import run_cli
from wetmap.chips.store import open_chip_store

TILE = ["--size", "64", "--min-valid", "0.3", "--set", "split.block=128", "--set", "split.test=0"]


def recode(sample, path: Path, codes: dict[int, float], dtype: str = "uint8", nodata=None) -> Path:
    """The sample's labels (0 other, 1 wetland, 255 unknown) written with other codes."""
    with rasterio.open(sample.labels) as src:
        profile, data = src.profile, src.read(1)
    out = np.zeros(data.shape, dtype)
    for old, new in codes.items():
        out[data == old] = new
    profile.update(dtype=dtype, nodata=nodata)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(out, 1)
    return path


def tile(sample, labels: Path, out: Path, monkeypatch, *extra: str) -> int:
    return run_cli(["tile", "--image", sample.scene_a, "--labels", labels, "--clouds", sample.scene_a_scl,
                    "-o", out, *TILE, *extra], monkeypatch)


@pytest.fixture(scope="module")
def reference(sample, tmp_path_factory) -> Path:
    """The chip store of the correctly coded labels."""
    from wetmap import config
    from wetmap.chips.build import build_chip_store

    out = tmp_path_factory.mktemp("labels") / "reference"
    cfg = config.build(config.TileConfig, {"image": str(sample.scene_a), "labels": str(sample.labels),
                                           "clouds": str(sample.scene_a_scl), "size": 64, "min_valid": 0.3,
                                           "split": {"block": 128, "test": 0.0}})
    build_chip_store(cfg, out)
    return out


def same_labels(a: Path, b: Path) -> bool:
    sa, sb = open_chip_store(a), open_chip_store(b)
    return sa.label[:].tobytes() == sb.label[:].tobytes() and sa.valid[:].tobytes() == sb.valid[:].tobytes()


def test_labels_coded_1_2_are_refused_and_mapped_on_request(sample, reference, tmp_path, monkeypatch,
                                                            capsys) -> None:
    coded = recode(sample, tmp_path / "coded.tif", {0: 1, 1: 2, 255: 0})
    assert tile(sample, coded, tmp_path / "refused", monkeypatch) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "coded.tif" in err and "label values 2" in err and "--label-map" in err
    assert not (tmp_path / "refused").exists()
    assert tile(sample, coded, tmp_path / "mapped", monkeypatch, "--label-map", "wetland=2;other=1;unknown=0") == 0
    assert same_labels(tmp_path / "mapped", reference)


def test_a_land_cover_map_with_a_wetland_class_is_used_through_a_map(sample, reference, tmp_path,
                                                                     monkeypatch, capsys) -> None:
    rng = np.random.default_rng(0)
    cover = recode(sample, tmp_path / "cover.tif", {1: 5, 255: 99})
    with rasterio.open(cover, "r+") as dst:   # "other" split over land-cover classes 1-4, 6, 7
        data = dst.read(1)
        other = data == 0
        data[other] = rng.choice([1, 2, 3, 4, 6, 7], other.sum())
        dst.write(data, 1)
    assert tile(sample, cover, tmp_path / "refused", monkeypatch) == 2
    assert "label values 2, 3, 4" in capsys.readouterr().err
    assert tile(sample, cover, tmp_path / "mapped", monkeypatch,
                "--label-map", "wetland=5;other=1,2,3,4,6,7;unknown=99") == 0
    assert same_labels(tmp_path / "mapped", reference)


def test_a_float_files_nodata_is_unknown_and_undeclared_it_is_refused(sample, reference, tmp_path,
                                                                       monkeypatch, capsys) -> None:
    declared = recode(sample, tmp_path / "declared.tif", {0: 0, 1: 1, 255: -99999}, "float32", nodata=-99999)
    assert tile(sample, declared, tmp_path / "declared", monkeypatch) == 0
    assert same_labels(tmp_path / "declared", reference)
    bare = recode(sample, tmp_path / "bare.tif", {0: 0, 1: 1, 255: -99999}, "float32")
    assert tile(sample, bare, tmp_path / "bare", monkeypatch) == 2
    assert "label values -99999" in capsys.readouterr().err


def test_a_nodata_value_that_is_also_a_class_must_be_said(sample, tmp_path, monkeypatch, capsys) -> None:
    zero = recode(sample, tmp_path / "zero.tif", {0: 0, 1: 1, 255: 0}, nodata=0)
    assert tile(sample, zero, tmp_path / "a", monkeypatch) == 2
    err = capsys.readouterr().err
    assert "nodata value 0 is also class 0 (other)" in err and "zero.tif" in err
    assert tile(sample, zero, tmp_path / "b", monkeypatch, "--label-map", "other=0;wetland=1") == 0


def test_evaluate_checks_the_reference_codes_too(sample, bundle_path, tmp_path, monkeypatch, capsys) -> None:
    out = tmp_path / "map.tif"
    assert run_cli(["predict", bundle_path, sample.scene_a, "--clouds", sample.scene_a_scl, "-o", out,
                    "--set", "device=cpu", "--tile-size", "64", "--overlap", "16"], monkeypatch) == 0
    coded = recode(sample, tmp_path / "coded.tif", {0: 1, 1: 2, 255: 0})
    args = ["evaluate", out, coded, "--regions", sample.regions]
    assert run_cli([*args, "-o", tmp_path / "r1"], monkeypatch) == 2
    assert "label values 2" in capsys.readouterr().err
    assert not (tmp_path / "r1" / "report.json").exists()
    assert run_cli([*args, "-o", tmp_path / "r2", "--label-map", "wetland=2;other=1;unknown=0"], monkeypatch) == 0
    assert run_cli(["evaluate", out, sample.labels, "--regions", sample.regions, "-o", tmp_path / "r3"],
                   monkeypatch) == 0
    assert (tmp_path / "r2" / "regions.csv").read_text() == (tmp_path / "r3" / "regions.csv").read_text()


def test_evaluate_refuses_what_is_not_a_class_map(sample, bundle_path, tmp_path, monkeypatch, capsys) -> None:
    out = tmp_path / "map.tif"
    assert run_cli(["predict", bundle_path, sample.scene_a, "--clouds", sample.scene_a_scl, "-o", out, "--probabilities",
                    "--set", "device=cpu", "--tile-size", "64", "--overlap", "16"], monkeypatch) == 0
    for wrong, says in ((tmp_path / "map_probability.tif", "not a class map"), (sample.scene_a, "not a class map")):
        code = run_cli(["evaluate", wrong, sample.labels, "--regions", sample.regions, "-o", tmp_path / "report"],
                       monkeypatch)
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1 and says in err and str(wrong) in err
        assert not any((tmp_path / "report").glob("*")), "no report is left behind"
