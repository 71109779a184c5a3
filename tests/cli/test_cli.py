"""The command line: help, and bad input as one line on stderr with exit code 2."""

import subprocess
import sys
from pathlib import Path

import pytest
import rasterio
import rasterio.shutil

from conftest import run_cli
from wetmap.io.raster import Grid, write_raster


def one_line_error(capsys, *fragments: str) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, err
    return err


def test_help_lists_the_commands(monkeypatch, capsys) -> None:
    assert run_cli(["--help"], monkeypatch) == 0
    out = capsys.readouterr().out
    for command in ("sample", "train", "predict", "evaluate"):
        assert command in out


def test_missing_input_file(monkeypatch, capsys, bundle_path, tmp_path) -> None:
    code = run_cli(["predict", bundle_path, tmp_path / "nope.tif", "-o", tmp_path / "o.tif"], monkeypatch)
    assert code == 2
    one_line_error(capsys, "nope.tif", "file not found")
    assert not (tmp_path / "o.tif").exists()


def test_unreadable_raster(monkeypatch, capsys, bundle_path, tmp_path) -> None:
    bad = tmp_path / "broken.tif"
    bad.write_bytes(b"this is not a GeoTIFF")
    assert run_cli(["predict", bundle_path, bad, "-o", tmp_path / "o.tif"], monkeypatch) == 2
    one_line_error(capsys, "broken.tif", "not a readable raster")


def test_wrong_band_name(monkeypatch, capsys, bundle_path, sample, tmp_path) -> None:
    with rasterio.open(sample.scene_a) as src:
        grid, data = Grid.of(src), src.read([1, 2, 3])
    rgb = tmp_path / "rgb.tif"
    write_raster(rgb, data, grid, nodata=0, descriptions=["B02", "B03", "B04"])
    assert run_cli(["predict", bundle_path, rgb, "-o", tmp_path / "o.tif"], monkeypatch) == 2
    one_line_error(capsys, "rgb.tif", "B08,B11,B12 not found")
    assert not list(tmp_path.glob("o*.tif"))


def test_bad_config_value_and_unknown_key(monkeypatch, capsys, tmp_path) -> None:
    cfg = tmp_path / "train.yaml"
    cfg.write_text("data: {image: a.tif, labels: b.tif}\ntrain: {epochs: -3}\n")
    assert run_cli(["train", "--config", cfg], monkeypatch) == 2
    one_line_error(capsys, "train.yaml", "'train.epochs'")
    cfg.write_text("data: {image: a.tif, labels: b.tif, chipz: 3}\n")
    assert run_cli(["train", "--config", cfg], monkeypatch) == 2
    one_line_error(capsys, "unknown key 'data.chipz'")
    assert run_cli(["train", "--config", tmp_path / "missing.yaml"], monkeypatch) == 2
    one_line_error(capsys, "missing.yaml", "config file not found")


def test_override_with_bad_value(monkeypatch, capsys, sample, tmp_path) -> None:
    code = run_cli(["predict", "model.pt", sample.scene_a, "-o", tmp_path / "o.tif", "--set", "batch_size=zero"],
                   monkeypatch)
    assert code == 2
    one_line_error(capsys, "'batch_size'")


def test_existing_output_needs_overwrite(monkeypatch, capsys, sample, tmp_path) -> None:
    out = tmp_path / "s"
    assert run_cli(["sample", out, "--size", "128"], monkeypatch) == 0
    capsys.readouterr()
    assert run_cli(["sample", out, "--size", "128"], monkeypatch) == 2
    one_line_error(capsys, "output exists", "--overwrite")
    assert run_cli(["sample", out, "--size", "128", "--overwrite"], monkeypatch) == 0


def test_console_script_prints_no_traceback(tmp_path) -> None:
    """The installed `wetmap` entry point itself, in a fresh process."""
    exe = Path(sys.executable).with_name("wetmap")
    result = subprocess.run([str(exe), "evaluate", str(tmp_path / "p.tif"), str(tmp_path / "t.tif"), "--regions",
                             str(tmp_path / "r.gpkg"), "-o", str(tmp_path / "rep")], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"wetmap: error: {tmp_path / 'p.tif'}: file not found"]


def test_config_mistakes_are_one_line_naming_their_source(monkeypatch, capsys, sample, tmp_path) -> None:
    """Typos and settings that would do nothing are errors, blamed on the file or on --set."""
    cfg = tmp_path / "train.yaml"
    cfg.write_text(f"data: {{image: {sample.scene_a}, labels: {sample.labels}}}\n")
    for sets, fragments in (
            (["model.backbone=resnet999"], ("--set", "unknown backbone 'resnet999'", "resnet18")),
            (["loss.options.smoth=1"], ("--set", "unknown key 'loss.options.smoth' (did you mean smooth_nr", "smooth_dr")),
            (["loss.options.alpha=0.3"], ("--set", "options.alpha is not an option of the dice loss", "smooth_nr")),
            (["loss.options.batch=maybe"], ("--set", "bad value for 'loss.options.batch'", "boolean")),
            (["loss.name=composite", "loss.options.terms={dize: 1}"], ("'loss.options.terms.dize'", "'dice'")),
            (["spilt.block=1"], ("--set: unknown key 'spilt'",))):
        assert run_cli(["train", "--config", cfg, *[f"--set={s}" for s in sets]], monkeypatch) == 2
        one_line_error(capsys, *fragments)
    cfg.write_text("data: {chips: store, chip_size: 64, val_fraction: 0.3}\n")
    assert run_cli(["train", "--config", cfg], monkeypatch) == 2
    one_line_error(capsys, "train.yaml", "chip_size, val_fraction", "data.chips", "remove them")


@pytest.mark.parametrize("args, fragment", [
    (["--seed", "-1"], "--seed must be 0 or more"),
    (["--size", "abc"], "sample: Invalid value for '--size': 'abc'"),
    (["--size", "50"], "50 is not in the range"),
])
def test_bad_command_line_values_are_one_line(args, fragment, monkeypatch, capsys, tmp_path) -> None:
    assert run_cli(["sample", tmp_path / "s", *args], monkeypatch) == 2
    one_line_error(capsys, fragment)
    assert not (tmp_path / "s").exists()


def test_a_damaged_bundle_is_one_line(monkeypatch, capsys, bundle_path, sample, tmp_path) -> None:
    import torch

    payload = torch.load(bundle_path, weights_only=True)
    for change, fragment in (({"bands": None}, "'bands' is missing"), ({"mean": [1.0]}, "'mean' is not a Tensor"),
                             ({"model": {"arch": "unet", "backbone": "resnet34", "classes": ["other", "wetland"]}},
                              "weights do not fit its model")):
        damaged = {k: v for k, v in {**payload, **change}.items() if v is not None}
        torch.save(damaged, tmp_path / "damaged.pt")
        assert run_cli(["predict", tmp_path / "damaged.pt", sample.scene_a, "-o", tmp_path / "o.tif"], monkeypatch) == 2
        one_line_error(capsys, "damaged.pt", "damaged model bundle", fragment)


def test_what_c_libraries_print_does_not_add_lines(wetmap, bundle_path, sample, tmp_path) -> None:
    """PROJ and libtiff print to file descriptor 2 themselves; the user still sees one line."""
    jpeg = tmp_path / "photo.tif"
    with rasterio.open(sample.scene_a) as src:
        data = src.read([3, 2, 1])
    with rasterio.open(tmp_path / "mem.tif", "w", driver="GTiff", width=data.shape[2], height=data.shape[1],
                       count=3, dtype="uint8") as dst:
        dst.write((data // 40).astype("uint8"))
    rasterio.shutil.copy(tmp_path / "mem.tif", jpeg, driver="JPEG")   # a JPEG with a .tif name
    for args, fragment in (
            (["predict", bundle_path, jpeg, "-o", tmp_path / "a.tif"], "photo.tif"),
            (["predict", bundle_path, sample.scene_a, "--crs", "EPSG:999999", "-o", tmp_path / "b.tif"],
             "--crs: not a CRS: 'EPSG:999999'")):
        result = wetmap(args)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1, result.stderr
        assert lines[0].startswith("wetmap: error: ") and fragment in lines[0], result.stderr
