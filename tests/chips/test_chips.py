"""`wetmap tile`: the Zarr chip store, its split, statistics, cloud skipping and Dask scale-out."""

import os
from pathlib import Path

import numpy as np
import pytest
import rasterio
import zarr
from rasterio.windows import Window

from conftest import run_cli
from wetmap import config
from wetmap.chips.build import build_chip_store
from wetmap.chips.chunks import FLAT_KEYS, _raw_chunk_folder, _store_chunks
from wetmap.chips.reader import ChipInputs, ChipReader
from wetmap.chips.split import split_by_blocks
from wetmap.chips.store import open_chip_store
from wetmap.config import DEFAULT_BANDS, CloudConfig
from wetmap.errors import WetmapError
from wetmap.io.raster import Grid, open_lazy, stack_bands, write_raster
from wetmap.io.windows import TileGrid


def tile_cfg(sample, **extra) -> config.TileConfig:
    base = {"image": str(sample.scene_a), "labels": str(sample.labels), "clouds": str(sample.scene_a_scl),
            "size": 64, "overlap": 16, "min_valid": 0.3, "split": {"block": 128, "val": 0.25, "test": 0.0}}
    return config.build(config.TileConfig, {**base, **extra})


@pytest.fixture(scope="module")
def store(sample, tmp_path_factory):
    out = tmp_path_factory.mktemp("chips") / "store"
    build_chip_store(tile_cfg(sample), out)
    return open_chip_store(out)


def test_chips_match_a_direct_read(store, sample) -> None:
    index = store.index[store.index["kept"]]
    assert len(index) > 0
    inputs = ChipInputs.of(sample.scene_a, sample.labels, sample.scene_a_scl, DEFAULT_BANDS, CloudConfig())
    with ChipReader(inputs) as reader:
        for _, row in index.head(5).iterrows():
            tile = list(TileGrid(reader.grid.width, reader.grid.height, 64, 16))[row["chip"]]
            chip = reader.read(tile.window)
            assert (store.image[row["chip"]] == chip.raw).all()
            assert (store.label[row["chip"]] == chip.label).all()
            assert (store.valid[row["chip"]] == chip.valid).all()
            assert (store.clear[row["chip"]] == chip.clear).all() and (chip.clear >= chip.valid).all()
            assert row["valid_fraction"] == pytest.approx(chip.valid.mean(), abs=1e-6)


def test_compressed_store_holds_the_same_chips_and_only_kept_ones_are_written(store, sample, tmp_path: Path) -> None:
    out = tmp_path / "lz4"
    build_chip_store(tile_cfg(sample, compress=True), out)
    packed = open_chip_store(out)
    assert [c.to_dict()["name"] for c in packed.image.compressors] == ["blosc"]
    assert not store.image.compressors   # the default: chips stored raw, written as plain files
    assert all(_raw_chunk_folder(getattr(store, name)) is not None for name in ("image", "label", "valid"))
    assert len(store.index) % 16, "the last batch is short, so the raw labels' last chunk is padded"
    for name in ("image", "label", "valid"):
        assert (getattr(packed, name)[:] == getattr(store, name)[:]).all(), name
    for s in (store, packed):   # one image chunk file per kept chip; dropped chips read as fill
        files = sorted(int(f.name.split(".")[1]) for f in (s.path / "chips.zarr" / "image").glob("c.*"))
        assert files == sorted(s.index.loc[s.index["kept"], "chip"]) and len(files) < len(s.index)
        dropped = s.index.loc[~s.index["kept"], "chip"].to_numpy()
        assert (s.image[:][dropped] == 0).all() and not s.valid[:][dropped].any()
        assert (s.label[:][dropped] == 255).all()   # also where a batch chunk holds kept chips


@pytest.mark.parametrize(("dtype", "shape", "chunks"), [("uint16", (5, 3, 4, 4), (1, 3, 4, 4)),
                                                       ("bool", (6, 4, 4), (4, 4, 4)), ("uint8", (3, 4, 4), (2, 4, 4))])
def test_raw_chunks_written_as_files_are_what_zarr_writes(tmp_path: Path, dtype, shape, chunks) -> None:
    """The tiler writes raw chunks as plain files: byte for byte Zarr's own, short edge chunk included."""
    group = zarr.open_group(str(tmp_path / "s.zarr"), mode="w")
    made = {name: group.create_array(name, shape=shape, chunks=chunks, dtype=dtype, fill_value=1,
                                     compressors=None, chunk_key_encoding=FLAT_KEYS) for name in ("ours", "zarrs")}
    data = np.random.default_rng(0).integers(0, 2 if dtype == "bool" else 3000, shape).astype(dtype)
    assert _raw_chunk_folder(made["ours"]) == tmp_path / "s.zarr" / "ours"
    _store_chunks(made["ours"], 0, data)
    made["zarrs"][:] = data
    files = {name: {f.name: f.read_bytes() for f in (tmp_path / "s.zarr" / name).glob("c.*")} for name in made}
    assert len(files["ours"]) == -(-shape[0] // chunks[0]) and files["ours"] == files["zarrs"]
    assert (zarr.open_array(str(tmp_path / "s.zarr" / "ours"), mode="r")[:] == data).all()
    packed = group.create_array("packed", shape=shape, chunks=chunks, dtype=dtype,
                                compressors=[zarr.codecs.BloscCodec(cname="lz4")])
    assert _raw_chunk_folder(packed) is None   # compressed chunks go through Zarr


def test_split_is_spatial_and_no_chip_straddles(store) -> None:
    kept = store.index[store.index["kept"]]
    assert set(kept["split"]) <= {"train", "val"} and {"train", "val"} <= set(kept["split"])
    train = kept[kept["split"] == "train"].geometry.union_all()
    val = kept[kept["split"] == "val"].geometry.union_all()
    assert train.intersection(val).area == 0, "no pixel belongs to chips of two splits"


def test_statistics_are_over_clear_training_pixels(store) -> None:
    """Clear, labelled or not: they normalise what the network sees."""
    ids = store.chips("train")
    image, clear = store.image[:][ids], store.clear[:][ids]
    px = image.transpose(1, 0, 2, 3)[:, clear].astype(np.float64)
    stats = store.meta["stats"]
    assert np.allclose(stats["mean"], px.mean(1)) and np.allclose(stats["std"], px.std(1))


def test_all_cloud_chips_are_skipped(sample, tmp_path: Path) -> None:
    with rasterio.open(sample.scene_a_scl) as src:
        scl, grid = src.read(1), Grid.of(src)
    scl[:, :128] = 9  # the left half is under thick cloud
    cloudy = tmp_path / "cloudy_scl.tif"
    write_raster(cloudy, scl, grid, nodata=0, descriptions=["SCL"])
    out = tmp_path / "store"
    build_chip_store(tile_cfg(sample, clouds=str(cloudy), min_valid=0.5), out)
    index = open_chip_store(out).index
    left = index.geometry.bounds["maxx"] <= grid.transform.c + 128 * 10
    assert len(index[left]) > 0 and not index[left]["kept"].any()
    assert (index[left]["valid_fraction"] == 0).all()


def test_block_split_covers_and_is_seeded() -> None:
    tiles = TileGrid(1000, 800, 100, 0)
    a = split_by_blocks(tiles, 200, 0.25, 0.25, seed=1)
    assert a == split_by_blocks(tiles, 200, 0.25, 0.25, seed=1)
    assert a != split_by_blocks(tiles, 200, 0.25, 0.25, seed=2)
    assert set(a) == {"train", "val", "test"}  # overlap 0, blocks aligned: nothing dropped


def test_split_by_regions(sample, tmp_path: Path) -> None:
    out = tmp_path / "store"
    build_chip_store(tile_cfg(sample, split={"regions": str(sample.regions), "val": 0.3, "test": 0.2}), out)
    index = open_chip_store(out).index
    assert set(index["split"]) <= {"train", "val", "test", "buffer", "none"}
    kept = index[index["kept"]]
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        ga, gb = kept[kept["split"] == a].geometry, kept[kept["split"] == b].geometry
        if len(ga) and len(gb):
            assert ga.union_all().intersection(gb.union_all()).area == 0


def test_two_dask_workers_give_identical_store(sample, store, dask_workers, tmp_path: Path) -> None:
    out = tmp_path / "store2"
    build_chip_store(tile_cfg(sample), out, client=dask_workers)
    # Workers inherit glibc's malloc settings untouched (Dask's default would switch off the
    # dynamic mmap threshold; see wetmap/runtime.py).
    trim = dask_workers.run(os.environ.get, "MALLOC_TRIM_THRESHOLD_")
    assert set(trim.values()) == {os.environ.get("MALLOC_TRIM_THRESHOLD_")}
    other = open_chip_store(out)
    assert (other.image[:] == store.image[:]).all()
    assert (other.label[:] == store.label[:]).all() and (other.valid[:] == store.valid[:]).all()
    assert other.index.drop(columns="geometry").equals(store.index.drop(columns="geometry"))
    assert other.meta["stats"] == store.meta["stats"]


def test_tile_cli_errors(monkeypatch, capsys, sample, tmp_path: Path) -> None:
    def fails(args: list, *fragments: str) -> None:
        assert run_cli(["tile", *args], monkeypatch) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and all(f in err for f in fragments), err

    base = ["--labels", sample.labels, "-o", tmp_path / "out", "--size", "64", "--overlap", "0"]
    corrupt = tmp_path / "corrupt.tif"
    corrupt.write_bytes(b"II*\x00garbage")
    fails(["--image", corrupt, *base], "corrupt.tif", "not a readable raster")
    fails(["--image", sample.scene_a, *base, "--set", "bands=[B02,B05]"], "B05 not found")
    nocrs = tmp_path / "nocrs.tif"
    with rasterio.open(nocrs, "w", driver="GTiff", width=8, height=8, count=1, dtype="uint8") as dst:
        dst.write(np.ones((1, 8, 8), np.uint8))
    fails(["--image", nocrs, *base], "nocrs.tif", "no CRS")
    with rasterio.open(sample.labels) as src:
        far = Grid(src.crs, src.transform @ rasterio.Affine.translation(100_000, 0), src.width, src.height)
    faraway = tmp_path / "far_labels.tif"
    write_raster(faraway, np.zeros((far.height, far.width), np.uint8), far, nodata=255)
    fails(["--image", sample.scene_a, "--labels", faraway, "-o", tmp_path / "out"], "far_labels.tif",
          "does not overlap", "scene_a.tif")
    (tmp_path / "exists").mkdir()
    fails(["--image", sample.scene_a, "--labels", sample.labels, "-o", tmp_path / "exists"], "output folder exists")


def test_tile_cli_runs(monkeypatch, capsys, sample, tmp_path: Path) -> None:
    args = ["tile", "--image", sample.scene_a, "--labels", sample.wetlands, "--clouds", sample.scene_a_scl,
            "-o", tmp_path / "chips", "--size", "64", "--overlap", "0", "--set", "split.block=128", "--compress"]
    assert run_cli(args, monkeypatch) == 0
    assert "chips kept" in capsys.readouterr().out
    assert (tmp_path / "chips" / "chips.zarr").is_dir() and (tmp_path / "chips" / "chips.gpkg").exists()
    store = open_chip_store(tmp_path / "chips")
    assert store.meta["compress"] and store.image.compressors


def test_open_lazy_is_dask_backed_on_file_blocks(sample) -> None:
    da = open_lazy(sample.scene_a, ["B08", "B02"])
    assert da.chunks is not None and da.data.chunksize[1:] == (64, 64)
    assert list(da.band.values) == ["B08", "B02"]
    with rasterio.open(sample.scene_a) as src:
        assert (da[:, 10:20, 30:50].values == src.read([4, 1], window=Window(30, 10, 20, 10))).all()


def test_stack_bands_puts_20m_bands_on_the_10m_grid(sample, tmp_path: Path) -> None:
    with rasterio.open(sample.scene_a) as src:
        grid, b08, b11 = Grid.of(src), src.read(4), src.read(5)
    coarse = Grid(grid.crs, grid.transform @ rasterio.Affine.scale(2), grid.width // 2, grid.height // 2)
    b11_20m = b11.reshape(coarse.height, 2, coarse.width, 2).mean((1, 3)).astype(np.uint16)
    write_raster(tmp_path / "B08.tif", b08, grid, nodata=0)
    write_raster(tmp_path / "B11.tif", b11_20m, coarse, nodata=0)
    stack = stack_bands({"B08": tmp_path / "B08.tif", "B11": tmp_path / "B11.tif"}, reference="B08")
    assert stack.shape == (2, grid.height, grid.width) and stack.chunks is not None
    expected = np.zeros((grid.height, grid.width), np.uint16)
    rasterio.warp.reproject(b11_20m, expected, src_transform=coarse.transform, src_crs=grid.crs, src_nodata=0,
                            dst_transform=grid.transform, dst_crs=grid.crs, dst_nodata=0,
                            resampling=rasterio.enums.Resampling.bilinear)
    assert (stack.sel(band="B11").values == expected).all()
    assert (stack.sel(band="B08").values == b08).all()


def test_training_reads_the_chip_store(store, tmp_path: Path) -> None:
    from wetmap.model.bundle import load_bundle
    from wetmap.train.fit import fit

    cfg = config.build(config.TrainRunConfig, {"data": {"chips": str(store.path)},
                                               "train": {"epochs": 1, "batch_size": 8}, "output": str(tmp_path)})
    result = fit(cfg)
    assert result.chips_train == len(store.chips("train")) and result.chips_val == len(store.chips("val"))
    bundle = load_bundle(result.bundle)
    assert np.allclose(bundle.mean, store.meta["stats"]["mean"])


def test_chip_store_with_other_bands_is_refused(store) -> None:
    from wetmap.errors import WetmapError
    from wetmap.train.dataset import load_chip_store

    with pytest.raises(WetmapError, match="chip store has bands"):
        load_chip_store(store.path, ["B02", "B03"])


def test_training_scores_the_test_split_when_there_is_one(sample, tmp_path: Path) -> None:
    from wetmap.train.fit import fit

    build_chip_store(tile_cfg(sample, overlap=0, split={"block": 64, "val": 0.25, "test": 0.25}), tmp_path / "s")
    cfg = config.build(config.TrainRunConfig, {"data": {"chips": str(tmp_path / "s")},
                                               "train": {"epochs": 1, "batch_size": 8}, "output": str(tmp_path / "r")})
    result = fit(cfg)
    assert result.chips_test == len(open_chip_store(tmp_path / "s").chips("test")) > 0
    # The test Dice is the wetland class's, from exact counts over the test chips' clear pixels.
    tp, fp, fn, _ = result.metrics["test_counts"][1]
    assert tp + fp + fn > 0 and result.test_dice == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert result.metrics["test_dice"] != result.metrics["val_dice"] or result.metrics["test_counts"] != \
        result.metrics["val_counts"]   # scored on its own chips, not a copy of validation


def test_no_chip_kept_names_the_file_that_explains_it(sample, tmp_path: Path) -> None:
    """All cloud, all-unknown labels, regions beside the scene: each names its own file."""
    with rasterio.open(sample.scene_a_scl) as src:
        grid, scl = Grid.of(src), src.read(1)
    cloud = tmp_path / "all_cloud_scl.tif"
    write_raster(cloud, np.full_like(scl, 9), grid, nodata=0, descriptions=["SCL"])
    streaks = tmp_path / "streaks_scl.tif"
    scl[::8] = 9  # a cloudy row in every 8: no 64 px tile is wholly clear
    write_raster(streaks, scl, grid, nodata=0, descriptions=["SCL"])
    with rasterio.open(sample.labels) as src:
        world = Grid.of(src)
        unknown = tmp_path / "unknown_labels.tif"
        write_raster(unknown, np.full((src.height, src.width), 255, np.uint8), world, nodata=255)
    import geopandas as gpd
    import shapely

    away = tmp_path / "away.gpkg"
    gpd.GeoDataFrame({"split": ["train"]}, geometry=[shapely.box(0, 0, 1, 1)], crs=4326).to_file(away)
    for extra, fragments in (
            ({"clouds": str(cloud)}, ("all_cloud_scl.tif", "no clear pixel", "all cloud")),
            ({"labels": str(unknown)}, ("unknown_labels.tif", "no labelled pixel")),
            ({"split": {"regions": str(away)}}, ("away.gpkg", "do not overlap")),
            ({"min_valid": 1.0, "clouds": str(streaks)}, ("no train tile has 100%", "streaks_scl.tif",
                                                          "lower --min-valid"))):
        with pytest.raises(WetmapError) as info:
            build_chip_store(tile_cfg(sample, **extra), tmp_path / "store")
        assert all(f in str(info.value) for f in fragments), str(info.value)
        assert not (tmp_path / "store").exists()


def test_an_empty_split_is_said_with_its_reason(monkeypatch, capsys, sample, tmp_path: Path) -> None:
    """The default 1024 px split block on a 256 px scene leaves no validation block; tile says so
    in one warning line and in its summary (it was silent until train failed)."""
    args = ["tile", "--image", sample.scene_a, "--labels", sample.labels, "--clouds", sample.scene_a_scl,
            "--size", "64", "-o", tmp_path / "a"]
    assert run_cli(args, monkeypatch) == 0
    captured = capsys.readouterr()
    warning = [line for line in captured.err.splitlines() if "val split is empty" in line]
    assert len(warning) == 1 and "256 x 256 px scene holds 1 split block of 1024 px" in warning[0]
    assert "--set split.block=" in warning[0]
    assert "val split empty" in captured.out
    assert open_chip_store(tmp_path / "a").meta["empty_splits"]["val"]

    regions = ["--split-regions", sample.regions, "--set", "split.val=0.01", "--set", "split.test=0.0"]
    assert run_cli([*args[:-1], tmp_path / "b", *regions], monkeypatch) == 0
    err = capsys.readouterr().err
    assert "drawn at random and none fell to val" in err and "split.region_field" in err

    assert run_cli([*args[:-1], tmp_path / "c", "--set", "split.block=128"], monkeypatch) == 0
    assert "split is empty" not in capsys.readouterr().err


def test_a_chip_store_of_the_old_format_is_refused_in_one_line(store, tmp_path: Path) -> None:
    import json
    import shutil

    from wetmap.train.dataset import load_chip_store

    old = tmp_path / "old"
    shutil.copytree(store.path, old)
    meta = json.loads((old / "chips.json").read_text())
    (old / "chips.json").write_text(json.dumps({**meta, "format": "wetmap-chips/1"}))
    with pytest.raises(WetmapError, match="format wetmap-chips/1.*cut it again with wetmap tile"):
        load_chip_store(old, DEFAULT_BANDS)


def test_sparse_labels_leave_the_unlabelled_pixels_visible_to_the_network(sample, tmp_path: Path) -> None:
    """Labels on a few pixels: the loss sees those (valid), the network all clear ones (clear)."""
    import rasterio

    with rasterio.open(sample.labels) as src:
        labels, profile = src.read(1), src.profile
    sparse = np.full_like(labels, 255)
    sparse[::7, ::7] = labels[::7, ::7]
    path = tmp_path / "sparse.tif"
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(sparse, 1)
    build_chip_store(tile_cfg(sample, labels=str(path), min_valid=0.01), tmp_path / "s")
    opened = open_chip_store(tmp_path / "s")
    ids = opened.chips("train")
    valid, clear = opened.valid[:][ids], opened.clear[:][ids]
    assert 0 < valid.mean() < 0.03 and clear.mean() > 0.5 and (clear >= valid).all()


def test_unlabelled_chips_are_stored_for_pretraining_and_change_nothing_else(sample, store, tmp_path: Path) -> None:
    """--unlabelled adds the image and clear mask of chips without enough labels; the kept
    chips, their labels, masks and the statistics are those of a store without it."""
    import rasterio

    with rasterio.open(sample.labels) as src:
        labels, profile = src.read(1), src.profile
    labels[:, : labels.shape[1] // 2] = 255   # the west half unlabelled
    path = tmp_path / "half.tif"
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(labels, 1)
    build_chip_store(tile_cfg(sample, labels=str(path)), tmp_path / "plain")
    build_chip_store(tile_cfg(sample, labels=str(path), unlabelled=True), tmp_path / "all")
    plain, full = open_chip_store(tmp_path / "plain"), open_chip_store(tmp_path / "all")
    assert plain.meta["stats"] == full.meta["stats"]
    assert (plain.index["kept"] == full.index["kept"]).all() and (plain.index["stored"] == plain.index["kept"]).all()
    extra = full.index[full.index["stored"] & ~full.index["kept"]]["chip"].to_numpy()
    assert len(extra) > 5
    assert (full.label[:][extra] == 255).all() and not full.valid[:][extra].any() and full.clear[:][extra].mean() > 0.5
    assert (full.image[:][extra] > 0).any()
    kept = full.index[full.index["kept"]]["chip"].to_numpy()
    assert (full.image[:][kept] == plain.image[:][kept]).all() and (full.valid[:][kept] == plain.valid[:][kept]).all()
