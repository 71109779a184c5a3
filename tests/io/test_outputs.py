"""Outputs are complete or absent: a full disk, a file-size limit, an unwritable folder or a run
killed between renames never leaves a half-written file, or an old result beside a new one,
under a final name; each failure is one line and exit code 2.

Disks fill for real here: a process file-size limit (`ulimit -f`, always available), and a small
tmpfs mounted in a private mount namespace where the machine allows one. The commands run through
the `wetmap` fixture (conftest.py): fresh processes, forked from one that imported wetmap once.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import rasterio

from conftest import Result, run_cli
from wetmap.errors import WetmapError
from wetmap.io import outputs
from wetmap.io.outputs import OutputSet, remove_stale, scratch_path, verify
from wetmap.predict.mosaic import output_names, predict_mosaic

PREDICT_SET = ("out.tif", "out.qml", "out_probability.tif", "out_probability.qml", "out.gpkg")


def assert_one_line_error(result: Result, *fragments: str) -> str:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("wetmap: error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def digests(folder: Path, names) -> dict[str, str]:
    return {n: hashlib.sha256((folder / n).read_bytes()).hexdigest() for n in names if (folder / n).exists()}


def predict_args(bundle_path, sample, out: Path) -> list:
    return ["predict", bundle_path, sample.scene_a, "--clouds", sample.scene_a_scl, "-o", out,
            "--probabilities", "--vectorize"]


# --- a file-size limit ------------------------------------------------------------------------

def test_predict_under_a_file_size_limit_leaves_nothing_and_keeps_the_old_set(wetmap, bundle_path, sample, tmp_path) -> None:
    out = tmp_path / "maps" / "out.tif"
    result = wetmap(predict_args(bundle_path, sample, out), limit=100_000)
    assert_one_line_error(result, str(out), "could not be written", "file size limit 100000 bytes")
    assert listing(out.parent) == []          # nothing under a final name, no hidden temporary

    predict_mosaic(bundle_path, [sample.scene_a], out, clouds=[sample.scene_a_scl], probabilities=True,
                   vectorize=True)
    before = digests(out.parent, PREDICT_SET)
    assert len(before) == 5
    result = wetmap([*predict_args(bundle_path, sample, out), "--overwrite"], limit=100_000)
    assert_one_line_error(result, "file size limit")
    assert listing(out.parent) == sorted(PREDICT_SET)
    assert digests(out.parent, PREDICT_SET) == before   # the previous result, whole and untouched


def test_train_under_a_file_size_limit_leaves_no_checkpoint_or_bundle(wetmap, sample, tmp_path) -> None:
    """A checkpoint (best.ckpt, the weights: about 57 MB) over the limit: Lightning's writer left
    a truncated one."""
    cfg = tmp_path / "train.yaml"
    cfg.write_text(f"data: {{image: {sample.scene_a}, labels: {sample.labels}, clouds: {sample.scene_a_scl}, "
                   f"chip_size: 64, split_block: 1}}\ntrain: {{epochs: 1, batch_size: 8}}\noutput: {tmp_path / 'run'}\n")
    result = wetmap(["train", "--config", cfg], limit=40_000_000)
    assert_one_line_error(result, "ckpt", "could not be written", "file size limit")
    checkpoints = tmp_path / "run" / "checkpoints"
    assert listing(checkpoints) == []
    assert not any(n.endswith((".pt", ".json", ".yaml")) or n.startswith(".") for n in listing(tmp_path / "run"))


@pytest.mark.parametrize("command", ["sample", "tile", "evaluate"])
def test_other_stages_under_a_file_size_limit(wetmap, command, sample, bundle_path, tmp_path) -> None:
    """The line names the file being written when the limit struck: the first scene of the
    sample, the chip store, the report's GeoPackage (its tables and JSON are smaller)."""
    out = tmp_path / "out"
    if command == "sample":
        args, failing = ["sample", out, "--size", "256"], out / "scene_a.tif"
    elif command == "tile":
        args = ["tile", "--image", sample.scene_a, "--labels", sample.labels, "--clouds", sample.scene_a_scl,
                "--size", "64", "-o", out]
        failing = out
    else:
        pred = tmp_path / "pred.tif"
        predict_mosaic(bundle_path, [sample.scene_a], pred, clouds=[sample.scene_a_scl])
        args, failing = ["evaluate", pred, sample.labels, "--regions", sample.regions, "-o", out], out / "regions.gpkg"
    result = wetmap(args, limit=20_000)
    assert_one_line_error(result, f"{failing}: could not be written", "file size limit 20000 bytes")
    assert listing(out) == []
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


# --- a full disk ------------------------------------------------------------------------------

def test_predict_on_a_full_tmpfs_is_complete_or_absent(wetmap, bundle_path, sample, tmp_path) -> None:
    """From no room for the working strips to room for everything: every run either writes the
    whole verified set or exits 2 with one line and leaves the disk empty."""
    if not wetmap.prefix:
        pytest.skip("this machine allows no private tmpfs mount (unshare)")
    failures = 0
    for kib in (300, 440, 520, 530, 540, 548, 4096):
        disk, keep = tmp_path / f"disk{kib}", tmp_path / f"kept{kib}"
        disk.mkdir()
        result = wetmap(predict_args(bundle_path, sample, disk / "out.tif"), tmpfs_kib=kib, disk=disk, keep=keep)
        assert result.returncode != 99, result.stderr
        if result.returncode == 0:
            assert listing(keep) == sorted(PREDICT_SET), (kib, listing(keep))
            for name in ("out.tif", "out_probability.tif", "out.gpkg"):
                verify(keep / name, keep / name)
        else:
            failures += 1
            assert_one_line_error(result, str(disk), "written")
            assert listing(keep) == [], (kib, listing(keep))
    assert failures >= 1 and result.returncode == 0  # the smallest disk failed; the largest held everything


# --- an interrupted --overwrite ---------------------------------------------------------------

class Killed(BaseException):
    """The process dying at that instant (not an Exception: nothing may catch it)."""


def test_a_run_killed_between_renames_never_leaves_old_beside_new(bundle_path, sample, tmp_path, monkeypatch) -> None:
    out = tmp_path / "out.tif"
    options = {"clouds": [sample.scene_a_scl], "probabilities": True, "vectorize": True}
    predict_mosaic(bundle_path, [sample.scene_a], out, **options)
    old = digests(tmp_path, PREDICT_SET)
    real_replace = os.replace
    for survive in range(len(PREDICT_SET)):
        calls = []

        def dying_replace(src, dst, survive=survive, calls=calls):
            if len(calls) == survive:
                raise Killed
            calls.append(dst)
            real_replace(src, dst)

        monkeypatch.setattr(outputs.os, "replace", dying_replace)
        with pytest.raises(Killed):
            predict_mosaic(bundle_path, [sample.scene_b], out, clouds=[sample.scene_b_scl], probabilities=True,
                           vectorize=True, overwrite=True)
        monkeypatch.setattr(outputs.os, "replace", real_replace)
        present = digests(tmp_path, PREDICT_SET)
        stale = {n for n in ("out.tif", "out_probability.tif", "out.gpkg") if present.get(n) == old.get(n)}
        assert not stale, (survive, stale)                 # no file of the old result is left
        assert "out.tif" not in present                    # the class map comes last: its absence says "incomplete"
        assert len(present) == survive
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]
        predict_mosaic(bundle_path, [sample.scene_a], out, overwrite=True, **options)  # the old set again
        old = digests(tmp_path, PREDICT_SET)


def test_a_run_without_probabilities_removes_the_old_probability_raster(bundle_path, sample, tmp_path) -> None:
    out = tmp_path / "out.tif"
    predict_mosaic(bundle_path, [sample.scene_a], out, clouds=[sample.scene_a_scl], probabilities=True,
                   vectorize=True)
    predict_mosaic(bundle_path, [sample.scene_b], out, clouds=[sample.scene_b_scl], overwrite=True)
    assert listing(tmp_path) == ["out.qml", "out.tif"]
    assert set(output_names(out).values()) >= {tmp_path / n for n in PREDICT_SET}


def test_a_member_of_an_earlier_set_needs_overwrite(bundle_path, sample, tmp_path, monkeypatch, capsys) -> None:
    out = tmp_path / "out.tif"
    (tmp_path / "out_probability.tif").write_bytes(b"an earlier run's")
    code = run_cli(["predict", bundle_path, sample.scene_a, "-o", out], monkeypatch)
    assert code == 2
    assert "out_probability.tif: output exists; pass --overwrite" in capsys.readouterr().err
    assert (tmp_path / "out_probability.tif").read_bytes() == b"an earlier run's"


# --- hidden temporaries of killed runs ----------------------------------------------------------

def test_the_next_run_removes_temporaries_of_dead_processes_only(bundle_path, sample, tmp_path) -> None:
    out = tmp_path / "out.tif"
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    host = outputs._HOST
    dead = tmp_path / f".out.tif.{host}-{gone.pid}-aaaaaa.tmp.strips.tif"
    old = tmp_path / ".out.gpkg.otherhost-1-bbbbbb.tmp.gpkg"
    alive = tmp_path / f".out.tif.{host}-{os.getpid()}-cccccc.tmp.tif"
    fresh_elsewhere = tmp_path / ".out.tif.otherhost-1-dddddd.tmp.tif"
    for path in (dead, old, alive, fresh_elsewhere):
        path.write_bytes(b"left behind")
    os.utime(old, (1, 1))
    predict_mosaic(bundle_path, [sample.scene_a], out, clouds=[sample.scene_a_scl], vectorize=True)
    assert not dead.exists() and not old.exists()
    assert alive.exists() and fresh_elsewhere.exists()    # another run's, still being written



def test_a_link_is_swapped_in_one_rename_and_a_killed_swap_leaves_no_link_behind(tmp_path) -> None:
    from wetmap.io.outputs import point_link

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    for name in ("2026-01-01", "2026-01-02"):
        (tmp_path / name).mkdir()
    left = tmp_path / f".latest.{outputs._HOST}-{gone.pid}-aaaaaa.tmp"   # a swap killed before its rename
    left.symlink_to("2026-01-01")
    point_link(tmp_path / "latest", "2026-01-01")
    point_link(tmp_path / "latest", "2026-01-02")
    assert os.readlink(tmp_path / "latest") == "2026-01-02"
    assert listing(tmp_path) == ["2026-01-01", "2026-01-02", "latest"]

def test_scratch_names_say_who_wrote_them(tmp_path) -> None:
    final = tmp_path / "a [1].txt"
    tmp = scratch_path(final)
    assert tmp.name.startswith(".a [1].txt.") and tmp.name.endswith(".tmp.txt") and f"-{os.getpid()}-" in tmp.name
    tmp.write_bytes(b"x")
    assert remove_stale(final) == []                       # this process is alive
    with OutputSet([final], overwrite=False) as outputs_:
        outputs_[final].write_bytes(b"done")
    assert final.read_bytes() == b"done" and listing(tmp_path) == [tmp.name, final.name]


def test_a_raster_missing_a_tile_is_not_renamed_into_place(tmp_path) -> None:
    """A tile GDAL never wrote reads back as no data, without an error: only the checksum of
    what was written finds it."""
    import numpy as np

    profile = {"driver": "GTiff", "width": 512, "height": 512, "count": 1, "dtype": "uint8", "tiled": True,
               "blockxsize": 256, "blockysize": 256, "crs": "EPSG:32632", "transform": rasterio.Affine(10, 0, 0, 0, -10, 0)}
    whole = tmp_path / "whole.tif"
    with rasterio.open(whole, "w", **profile) as dst:
        dst.write(np.full((1, 512, 512), 7, np.uint8))
    final = tmp_path / "out.tif"
    with pytest.raises(WetmapError, match="out.tif: was not written completely .* pixels differ"):
        with OutputSet([final], overwrite=False) as outputs_:
            outputs_.expect(final, verify(whole, whole))
            with rasterio.open(outputs_[final], "w", SPARSE_OK=True, **profile) as dst:
                dst.write(np.full((1, 256, 512), 7, np.uint8), window=((0, 256), (0, 512)))  # lower half unwritten
    assert listing(tmp_path) == ["whole.tif"]


def test_a_truncated_raster_is_not_renamed_into_place(sample, tmp_path) -> None:
    final = tmp_path / "copy.tif"
    with pytest.raises(WetmapError) as info:
        with OutputSet([final], overwrite=False) as outputs_:
            data = Path(sample.scene_a).read_bytes()
            outputs_[final].write_bytes(data[: len(data) * 2 // 3])
    assert "copy.tif: was not written completely" in str(info.value)
    assert listing(tmp_path) == []
    with rasterio.open(sample.scene_a) as src:
        assert src.count == 6   # the source itself is fine: the check is about the copy


# --- places that cannot be written ------------------------------------------------------------

def _unwritable(tmp_path: Path) -> Path:
    """A folder this process cannot write in: /sys (refused even to root), else a read-only one."""
    probe = Path("/sys/wetmap-probe")
    try:
        probe.mkdir()
    except OSError:
        return Path("/sys")
    probe.rmdir()
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o500)
    if os.access(folder, os.W_OK):
        pytest.skip("no unwritable folder on this machine")
    return folder


@pytest.mark.parametrize("command", ["sample", "tile", "train", "predict", "evaluate"])
def test_an_unwritable_place_is_one_line(command, sample, bundle_path, tmp_path, monkeypatch, capsys) -> None:
    place = _unwritable(tmp_path) / "new" / "folder"
    args = {
        "sample": ["sample", place, "--size", "128"],
        "tile": ["tile", "--image", sample.scene_a, "--labels", sample.labels, "--clouds", "none", "--size", "64",
                 "-o", place],
        "train": ["train", "--config", tmp_path / "t.yaml", "-o", place],
        "predict": ["predict", bundle_path, sample.scene_a, "-o", place / "out.tif"],
        "evaluate": ["evaluate", sample.labels, sample.labels, "--regions", sample.regions, "-o", place],
    }[command]
    (tmp_path / "t.yaml").write_text(f"data: {{image: {sample.scene_a}, labels: {sample.labels}, clouds: none, "
                                     "chip_size: 64, split_block: 1}\ntrain: {epochs: 1}\n")
    assert run_cli(args, monkeypatch) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "could not be written: not writable" in err, err
