"""`wetmap run`: idempotent, resumable after SIGKILL, locked, with manifests and per-run logs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
import yaml

from conftest import run_cli, write_job
from wetmap.jobs import job_lock, run_job


def pixels(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read()


@pytest.fixture(scope="module")
def finished(sample, bundle_path, tmp_path_factory) -> Path:
    """One uninterrupted run: the reference the other runs are compared with."""
    folder = tmp_path_factory.mktemp("job")
    job = write_job(folder, sample, bundle_path, folder / "out")
    result = run_job(job)
    assert result.status == "done"
    return result.run_dir


def test_run_writes_clipped_map_report_manifest_and_latest(finished: Path, sample) -> None:
    job_dir = finished.parent
    assert (job_dir / "latest").resolve() == finished.resolve()
    manifest = json.loads((finished / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["job"] == "marshes"
    assert manifest["classes"] == ["other", "wetland"]
    assert {"predict", "evaluate"} <= set(manifest["timings_s"])
    assert 0 < manifest["metrics"]["dice_micro"] <= 1
    assert {e["path"] for e in manifest["fingerprint"]["inputs"]} >= {str(sample.scene_a), str(sample.scene_b_scl)}
    assert len(manifest["fingerprint"]["model"]["sha256"]) == 64 and "torch" in manifest["versions"]
    assert set(manifest["outputs"]) >= {"wetlands.tif", "wetlands_probability.tif", "wetlands.gpkg", "report",
                                        "region.gpkg", "run.log", "manifest.json"}
    assert "run complete" in (finished / "run.log").read_text()
    assert (finished / "report" / "report.html").exists()
    with rasterio.open(finished / "wetlands.tif") as out, rasterio.open(sample.scene_a) as a:
        assert out.crs == a.crs and out.res == a.res
        assert out.transform.c >= a.bounds.left - 1e-6


def test_second_run_is_a_no_op_and_a_changed_input_recomputes(sample, bundle_path, tmp_path: Path) -> None:
    job = write_job(tmp_path, sample, bundle_path, tmp_path / "out")
    first = run_job(job)
    again = run_job(job)
    assert again.status == "up to date" and again.run_dir == first.run_dir.resolve()
    assert sorted(p.name for p in (tmp_path / "out" / "marshes").iterdir() if not p.name.startswith(".")) == \
        sorted([first.run_dir.name, "catalog.json", "latest", "logs"])
    # a config change (a different minimum polygon area) is a different job: recompute
    job = write_job(tmp_path, sample, bundle_path, tmp_path / "out", min_area_ha=0.5)
    changed = run_job(job)
    assert changed.status == "done" and changed.run_dir != first.run_dir
    assert (tmp_path / "out" / "marshes" / "latest").resolve() == changed.run_dir.resolve()
    assert first.run_dir.exists(), "earlier results are kept"


def test_changed_scene_recomputes(sample, bundle_path, tmp_path: Path) -> None:
    import shutil

    for name in ("scene_a.tif", "scene_a_scl.tif", "scene_b.tif", "scene_b_scl.tif"):
        shutil.copy(sample.scene_a.with_name(name), tmp_path / name)
    job = write_job(tmp_path, sample, bundle_path, tmp_path / "out")
    spec = yaml.safe_load(job.read_text())
    spec["scenes"]["images"] = [str(tmp_path / "scene_?.tif")]
    job.write_text(yaml.safe_dump(spec))
    assert run_job(job).status == "done"
    assert run_job(job).status == "up to date"
    os.utime(tmp_path / "scene_b.tif", ns=(time.time_ns(), time.time_ns()))   # a new delivery of scene B
    assert run_job(job).status == "done"


def test_killed_run_leaves_previous_results_and_the_next_run_completes(finished: Path, sample, bundle_path,
                                                                        tmp_path: Path) -> None:
    job = write_job(tmp_path, sample, bundle_path, tmp_path / "out")
    job_dir = tmp_path / "out" / "marshes"
    wetmap = Path(sys.executable).with_name("wetmap")
    proc = subprocess.Popen([str(wetmap), "run", str(job)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not list(job_dir.glob(".run-*/region.gpkg")):      # predicting has begun
        assert proc.poll() is None and time.monotonic() < deadline, "run ended before it could be killed"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (job_dir / "latest").exists(), "nothing looks finished"
    assert list(job_dir.glob(".run-*")), "the killed run's work folder is left, hidden"
    result = run_job(job)
    assert result.status == "done" and not list(job_dir.glob(".run-*"))
    for name in ("wetlands.tif", "wetlands_probability.tif"):
        assert np.array_equal(pixels(result.run_dir / name), pixels(finished / name)), name
    a = json.loads((result.run_dir / "report" / "report.json").read_text())
    b = json.loads((finished / "report" / "report.json").read_text())
    assert a["regions"] == b["regions"]


def test_a_second_concurrent_run_exits_with_a_clear_message(sample, bundle_path, tmp_path: Path, monkeypatch,
                                                            capsys) -> None:
    job = write_job(tmp_path, sample, bundle_path, tmp_path / "out")
    with job_lock(tmp_path / "out" / "marshes", wait=False):       # a run in progress
        code = run_cli(["run", job], monkeypatch)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and "already running (pid" in err[0]
    assert not (tmp_path / "out" / "marshes" / "latest").exists()


def test_exit_codes_bad_input_2_failure_1_with_the_traceback_in_the_log(sample, bundle_path, tmp_path: Path,
                                                                        monkeypatch, capsys) -> None:
    job = write_job(tmp_path, sample, bundle_path, tmp_path / "out", model=str(tmp_path / "missing.pt"))
    assert run_cli(["run", job], monkeypatch) == 2
    assert "missing.pt" in capsys.readouterr().err
    job = write_job(tmp_path, sample, bundle_path, tmp_path / "out")

    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr("wetmap.predict.mosaic.predict_mosaic", broken)
    assert run_cli(["run", job], monkeypatch) == 1
    assert "job failed: RuntimeError: disk on fire" in capsys.readouterr().err
    logs = list((tmp_path / "out" / "marshes" / "logs").glob("*.log"))
    assert any("Traceback" in p.read_text() and "disk on fire" in p.read_text() for p in logs)
    assert not (tmp_path / "out" / "marshes" / "latest").exists()


def test_region_as_bounds_in_another_crs(sample, bundle_path, tmp_path: Path) -> None:
    """A box in EPSG:4326: the map covers its extent on the scene's grid; the report scores it."""
    import geopandas as gpd

    box = gpd.read_file(sample.regions).to_crs(4326).total_bounds
    w, s, e, n = box
    inner = [float(v) for v in (w + (e - w) * 0.3, s + (n - s) * 0.3, w + (e - w) * 0.6, s + (n - s) * 0.6)]
    job = write_job(tmp_path, sample, bundle_path, tmp_path / "out",
                    region={"bounds": inner, "crs": "EPSG:4326"})
    result = run_job(job)
    with rasterio.open(result.run_dir / "wetlands.tif") as out, rasterio.open(sample.scene_a) as a:
        assert out.crs == a.crs and out.res == a.res
        assert out.width < a.width and out.height < a.height, "only the region's box"
        classes = out.read(1)
    assert (classes != 255).any() and (classes == 255).any(), "outside the (reprojected) box is no data"
    report = json.loads((result.run_dir / "report" / "report.json").read_text())
    assert [r["name"] for r in report["regions"]] == ["marshes"]


def test_a_job_passes_cloud_choices_on_and_finds_mask_files_beside_scenes(sample, tmp_path: Path) -> None:
    from wetmap import config
    from wetmap.jobs import resolve_scenes

    def pairs(clouds: str | None) -> list:
        cfg = config.build(config.JobConfig, {
            "name": "j", "region": {"bounds": [0, 0, 1, 1], "crs": "EPSG:4326"}, "model": "m.pt",
            "output_root": str(tmp_path), "scenes": {"images": [str(sample.scene_a)], "clouds": clouds}})
        return resolve_scenes(cfg, tmp_path / "job.yaml")

    for choice in ("auto", "detect", "none"):
        assert pairs(choice) == [(str(sample.scene_a), choice)]
    assert pairs(None) == [(str(sample.scene_a), None)]
    assert pairs("{stem}_scl.tif") == [(str(sample.scene_a), str(sample.scene_a_scl))]


def test_a_job_refuses_output_settings_under_predict(tmp_path: Path) -> None:
    """A job writes probabilities always and takes polygons from its own keys: the same under predict: is refused."""
    from wetmap import config
    from wetmap.errors import WetmapError

    job = {"name": "j", "region": {"bounds": [0, 0, 1, 1], "crs": "EPSG:4326"}, "model": "m.pt",
           "output_root": str(tmp_path), "scenes": {"images": ["a.tif"]}}
    assert config.build(config.JobConfig, {**job, "vectorize": False, "predict": {"crs": "EPSG:3035"}})
    for key, value in (("vectorize", False), ("min_area_ha", 1.0), ("probabilities", False)):
        with pytest.raises(WetmapError, match=f"predict.{key} is not a job setting"):
            config.build(config.JobConfig, {**job, "predict": {key: value}})
