"""Outputs in object storage: made locally, verified, uploaded main file last; jobs kept under a URL.

Against a real S3-compatible server (moto) on 127.0.0.1, reached by s3fs through GDAL's own
variables (AWS_S3_ENDPOINT, AWS_HTTPS=NO), as a user would configure it once for inputs too.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import rasterio
import yaml

from conftest import run_cli
from wetmap.config import PredictConfig
from wetmap.errors import WetmapError
from wetmap.io.storage import Remote, output_url, staged_output
from wetmap.jobs import run_job
from wetmap.predict.mosaic import predict_mosaic

CFG = PredictConfig(tile_size=64, overlap=16, batch_size=8, device="cpu", precision="fp32")


def pixels(path: str | Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read()


def new_bucket(s3) -> str:
    return s3.bucket(f"out-{uuid.uuid4().hex[:10]}")


def predict_args(bundle_path, sample, out, *extra) -> list:
    return ["predict", bundle_path, sample.scene_a, "--clouds", sample.scene_a_scl, "-o", out, "--tile-size", "64",
            "--overlap", "16", "--set", "device=cpu", *extra]


def test_output_urls_and_their_gdal_spellings() -> None:
    assert output_url("s3://b/k.tif") == "s3://b/k.tif"
    assert output_url("/vsis3/b/maps/k.tif") == "s3://b/maps/k.tif"
    assert output_url("/vsigs/b/k.tif") == "gs://b/k.tif"
    assert output_url("file:///tmp/x.tif") == "file:///tmp/x.tif"
    assert output_url("out/x.tif") is None and output_url(Path("/tmp/x.tif")) is None
    with pytest.raises(WetmapError, match="nosuch://b/k.tif: not a storage URL"):
        Remote("nosuch://b/k.tif")


def test_predict_to_s3_uploads_the_verified_set_and_replaces_it_only_when_asked(s3, sample, bundle_path, tmp_path,
                                                                                monkeypatch, capsys) -> None:
    staging = tmp_path / "staging"
    monkeypatch.setenv("WETMAP_STAGING", str(staging))
    bucket = new_bucket(s3)
    url = f"s3://{bucket}/maps/wetlands.tif"
    assert run_cli(predict_args(bundle_path, sample, tmp_path / "wetlands.tif", "--probabilities"), monkeypatch) == 0
    assert run_cli(predict_args(bundle_path, sample, url, "--probabilities"), monkeypatch) == 0
    assert s3.keys(bucket) == ["maps/wetlands.qml", "maps/wetlands.tif", "maps/wetlands_probability.qml",
                               "maps/wetlands_probability.tif"]
    for name in ("wetlands.tif", "wetlands_probability.tif"):   # read back by GDAL from the store: the same map
        assert np.array_equal(pixels(f"/vsis3/{bucket}/maps/{name}"), pixels(tmp_path / name))
    with rasterio.open(f"/vsis3/{bucket}/maps/wetlands.tif") as src:
        assert src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
    assert not list(staging.iterdir()), "the staging folder is gone"
    capsys.readouterr()

    assert run_cli(predict_args(bundle_path, sample, url), monkeypatch) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].endswith(f"{url}: output exists; pass --overwrite to replace it")
    # replaced without a probability raster: the earlier one goes with the set it belonged to
    assert run_cli(predict_args(bundle_path, sample, url, "--overwrite"), monkeypatch) == 0
    assert s3.keys(bucket) == ["maps/wetlands.qml", "maps/wetlands.tif"]
    # evaluated from the store into the store: the same report as from and to local files
    report = ["--regions", sample.regions, "--set", "region_field=name"]
    assert run_cli(["evaluate", url, sample.labels, *report, "-o", f"s3://{bucket}/report"], monkeypatch) == 0
    assert run_cli(["evaluate", tmp_path / "wetlands.tif", sample.labels, *report, "-o", tmp_path / "report"],
                   monkeypatch) == 0
    assert {k for k in s3.keys(bucket) if k.startswith("report/")} == \
        {f"report/{p.name}" for p in (tmp_path / "report").iterdir()}
    remote = json.loads(s3.client.get_object(Bucket=bucket, Key="report/report.json")["Body"].read())
    assert remote["regions"] == json.loads((tmp_path / "report" / "report.json").read_text())["regions"]
    # an output that is one of the run's inputs, in the store too: refused, --overwrite or not
    s3.client.upload_file(str(sample.scene_a), bucket, "scene.tif")
    scene = f"s3://{bucket}/scene.tif"
    args = ["predict", bundle_path, scene, "--clouds", "none", "-o", scene, "--overwrite", "--set", "device=cpu"]
    assert run_cli(args, monkeypatch) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].endswith(f"{scene}: this output is also an input of the run; choose another "
                                             "output name")
    # an object store that refuses: one line naming the object
    assert run_cli(predict_args(bundle_path, sample, f"s3://no-such-bucket-{uuid.uuid4().hex[:6]}/m.tif"),
                   monkeypatch) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no-such-bucket" in err[0] and "bucket not found" in err[0]


def test_a_file_url_goes_up_under_a_hidden_name_and_is_renamed(sample, bundle_path, tmp_path, monkeypatch) -> None:
    out = tmp_path / "store" / "wetlands.tif"
    assert run_cli(predict_args(bundle_path, sample, f"file://{out}"), monkeypatch) == 0
    assert sorted(p.name for p in out.parent.iterdir()) == ["wetlands.qml", "wetlands.tif"]
    assert run_cli(predict_args(bundle_path, sample, tmp_path / "local.tif"), monkeypatch) == 0
    assert np.array_equal(pixels(out), pixels(tmp_path / "local.tif"))


class StallingProxy:
    """A TCP proxy to the S3 server that forwards everything until a request line it watches for
    passes, then forwards only the request's first bytes and holds the rest: an upload caught
    half way, for as long as the test needs to kill the process that makes it."""

    def __init__(self, upstream: int, watch: bytes) -> None:
        self.upstream, self.watch = upstream, watch
        self.caught = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.upstream))
            threading.Thread(target=self._pipe, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, False), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, watching: bool) -> None:
        try:
            while data := src.recv(1 << 16):
                at = data.find(self.watch) if watching else -1
                if at >= 0:
                    dst.sendall(data[:at + len(self.watch) + 200])   # the request line and a few headers
                    self.caught.set()
                    while src.recv(1 << 16):                          # the rest never reaches the server
                        pass
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for end in (src, dst):
                end.close()

    def close(self) -> None:
        self.listener.close()


@pytest.mark.slow
def test_a_killed_upload_leaves_no_object_under_the_final_key(s3, sample, bundle_path, tmp_path) -> None:
    bucket = new_bucket(s3)
    url = f"s3://{bucket}/maps/wetlands.tif"
    proxy = StallingProxy(s3.port, f"PUT /{bucket}/maps/wetlands.tif".encode())
    staging = tmp_path / "staging"
    try:
        env = {**os.environ, **s3.env(proxy.port), "WETMAP_STAGING": str(staging)}
        wetmap = Path(sys.executable).with_name("wetmap")
        proc = subprocess.Popen([str(wetmap), *map(str, predict_args(bundle_path, sample, url, "--probabilities"))],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if not proxy.caught.wait(timeout=240):
            proc.kill()
            pytest.fail(f"the class map's upload never started: {proc.communicate()[1].decode()[-2000:]}")
        time.sleep(0.2)
        assert proc.poll() is None, "the upload was held, so the process is still in it"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        proxy.close()
    keys = s3.keys(bucket)
    assert "maps/wetlands.tif" not in keys, "no half-uploaded class map"
    assert set(keys) <= {"maps/wetlands.qml", "maps/wetlands_probability.tif", "maps/wetlands_probability.qml"}
    assert list(staging.iterdir()), "the killed run left its staging folder"
    # the next run, asked to replace what is there, completes the set
    assert subprocess.run([str(wetmap), *map(str, predict_args(bundle_path, sample, url, "--probabilities",
                                                               "--overwrite"))],
                          env={**os.environ, **s3.env(), "WETMAP_STAGING": str(staging)},
                          capture_output=True).returncode == 0
    assert "maps/wetlands.tif" in s3.keys(bucket)
    assert not list(staging.iterdir()), "the killed run's staging folder was removed by the next one"


def test_staging_uploads_nothing_when_the_block_fails(s3) -> None:
    bucket = new_bucket(s3)
    with pytest.raises(RuntimeError), staged_output(f"s3://{bucket}/x.tif", overwrite=False) as local:
        local.write_bytes(b"half")
        raise RuntimeError("the stage failed")
    assert s3.keys(bucket) == []


def test_a_job_under_an_s3_output_root_writes_the_run_then_latest_and_is_idempotent(s3, sample, bundle_path,
                                                                                     tmp_path) -> None:
    bucket = new_bucket(s3)
    job = {
        "name": "marshes", "region": {"file": str(sample.regions), "field": "name"},
        "scenes": {"images": [str(sample.scene_a)], "clouds": "{stem}_scl.tif"},
        "model": str(bundle_path), "reference": str(sample.labels), "output_root": f"s3://{bucket}/jobs",
        "predict": {"tile_size": 64, "overlap": 24, "batch_size": 4, "device": "cpu"},
    }
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job))
    first = run_job(path)
    assert first.status == "done" and first.run_dir == f"s3://{bucket}/jobs/marshes/{first.run_dir.rsplit('/')[-1]}"
    name = first.run_dir.rsplit("/", 1)[-1]
    keys = s3.keys(bucket)
    assert s3.client.get_object(Bucket=bucket, Key="jobs/marshes/latest")["Body"].read().decode().strip() == name
    manifest = json.loads(s3.client.get_object(Bucket=bucket, Key=f"jobs/marshes/{name}/manifest.json")["Body"].read())
    run_keys = {k.split(f"jobs/marshes/{name}/", 1)[1] for k in keys if k.startswith(f"jobs/marshes/{name}/")}
    assert {"wetlands.tif", "wetlands_probability.tif", "report/report.html", "run.log", "manifest.json"} <= run_keys
    assert {k.split("/", 1)[0] for k in run_keys} == set(manifest["outputs"])
    assert any(k.startswith("jobs/marshes/logs/") for k in keys)
    with rasterio.open(f"/vsis3/{bucket}/jobs/marshes/{name}/wetlands.tif") as src:
        assert src.crs is not None and src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
    # the next scheduled run finds the remote manifest (not a local folder) and does nothing
    again = run_job(path)
    assert again.status == "up to date" and again.run_dir == first.run_dir
    forced = run_job(path, force=True)
    assert forced.status == "done" and forced.run_dir == f"{first.run_dir}.2"
    assert s3.client.get_object(Bucket=bucket, Key="jobs/marshes/latest")["Body"].read().decode().strip() == \
        f"{name}.2"
    # the catalogue in the bucket lists both runs, each item beside its run, and is read back by URL
    catalog = json.loads(s3.client.get_object(Bucket=bucket, Key="jobs/marshes/catalog.json")["Body"].read())
    assert [link["href"] for link in catalog["links"] if link["rel"] == "item"] == \
        [f"./{name}/item.json", f"./{name}.2/item.json"]
    item = json.loads(s3.client.get_object(Bucket=bucket, Key=f"jobs/marshes/{name}.2/item.json")["Body"].read())
    assert item["id"] == f"{name}.2" and item["properties"]["wetmap:previous_run"] == name
    assert item["assets"]["change"]["href"] == "./change.tif"


@pytest.mark.slow
def test_dask_workers_read_scenes_only_by_url(s3, sample, bundle_path, dask_workers, tmp_path) -> None:
    bucket = new_bucket(s3)
    for path in (sample.scene_a, sample.scene_a_scl):
        s3.client.upload_file(str(path), bucket, path.name)
    cfg = CFG.model_copy(update={"part_megapixels": 0.01})
    local = predict_mosaic(bundle_path, [sample.scene_a], tmp_path / "local.tif", clouds=[sample.scene_a_scl], cfg=cfg)
    # worker processes: they get the bundle path and the URLs only
    remote = predict_mosaic(bundle_path, [f"s3://{bucket}/{sample.scene_a.name}"], f"s3://{bucket}/out.tif",
                            clouds=[f"s3://{bucket}/{sample.scene_a_scl.name}"], cfg=cfg, client=dask_workers)
    assert remote.classes == f"s3://{bucket}/out.tif"
    assert np.array_equal(pixels(f"/vsis3/{bucket}/out.tif"), pixels(local.classes))
