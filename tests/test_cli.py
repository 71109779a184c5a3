"""The command line: help, and bad input as one line on stderr with exit code 2."""

import subprocess
import sys
from pathlib import Path

import rasterio

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
