"""Shared fixtures, one of each per session: a small generated sample area, a tiny trained model,
and a runner of `wetmap` commands in fresh processes."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import yaml

from wetmap import config
from wetmap.sample import SampleFiles, make_sample

if TYPE_CHECKING:
    from distributed import Client

SAMPLE_SIZE = 256


@pytest.fixture(scope="session", autouse=True)
def session_folders(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Detected cloud masks and outputs staged for object storage go to folders of this session
    (wetmap's commands run in subprocesses too, so through the environment), never to the user's
    ~/.cache or /tmp."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("WETMAP_CACHE", str(tmp_path_factory.mktemp("wetmap-cache")))
        env.setenv("WETMAP_STAGING", str(tmp_path_factory.mktemp("wetmap-staging")))
        yield


@pytest.fixture(scope="session")
def sample(tmp_path_factory: pytest.TempPathFactory) -> SampleFiles:
    return make_sample(tmp_path_factory.mktemp("sample"), size=SAMPLE_SIZE, seed=3)


@pytest.fixture(scope="session")
def bundle_path(sample: SampleFiles, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real (tiny, 2-epoch) TorchGeo U-Net trained on the sample with the masked Dice loss,
    NDWI and MNDWI as extra input channels."""
    from wetmap.train.fit import fit

    out = tmp_path_factory.mktemp("run")
    cfg = config.build(config.TrainRunConfig, {
        "seed": 0,
        "data": {"image": str(sample.scene_a), "labels": str(sample.labels), "clouds": str(sample.scene_a_scl),
                 "chip_size": 64, "split_block": 1},
        "model": {"indices": ["NDWI", "MNDWI"]},
        "train": {"epochs": 2, "batch_size": 8},
        "output": str(out),
    })
    result = fit(cfg)
    return Path(result.bundle)


def run_cli(args: list[str], monkeypatch: pytest.MonkeyPatch) -> int:
    """Run `wetmap ARGS` in-process through the real entry point; return its exit code."""
    from wetmap.cli import main

    monkeypatch.setattr(sys, "argv", ["wetmap", *map(str, args)])
    with pytest.raises(SystemExit) as exit_info:
        main()
    return int(exit_info.value.code or 0)


@dataclass
class Result:
    """What a `wetmap` command run by the Runner ended with."""

    returncode: int
    stderr: str


def _private_mount() -> list[str]:
    """How to start a process in its own mount namespace, where it may mount a tmpfs; [] if the
    machine allows neither (then the file-size tests still fill files for real)."""
    if shutil.which("unshare") is None:
        return []
    for prefix in (["unshare", "-m"], ["unshare", "-rm"]):
        probe = subprocess.run([*prefix, "sh", "-c", 'd=$(mktemp -d) && mount -t tmpfs -o size=64k tmpfs "$d"'],
                               capture_output=True)
        if probe.returncode == 0:
            return prefix
    return []


class Runner:
    """A `cli_runner.py` server; calling it runs one `wetmap` command in a fresh process."""

    def __init__(self) -> None:
        self.prefix = _private_mount()
        self.proc = subprocess.Popen([*self.prefix, sys.executable, str(Path(__file__).with_name("cli_runner.py"))],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert json.loads(self.proc.stdout.readline()) == {"ready": True}

    def __call__(self, args: list, limit: int | None = None, tmpfs_kib: int | None = None,
                 disk: Path | None = None, keep: Path | None = None) -> Result:
        request = {"args": [str(a) for a in args], "limit": limit}
        if tmpfs_kib:
            request.update(tmpfs_kib=tmpfs_kib, tmpfs_dir=str(disk), keep=str(keep))
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        answer = json.loads(self.proc.stdout.readline())
        return Result(answer["rc"], answer["stderr"])

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


@pytest.fixture(scope="session")
def wetmap() -> Iterator[Runner]:
    """Run `wetmap ARGS` in a fresh process (optionally under a file-size limit or on a tmpfs)."""
    runner = Runner()
    yield runner
    runner.close()


@dataclass
class S3Server:
    """A local S3-compatible server (moto, in its own process on 127.0.0.1)."""

    port: int
    client: object          # a boto3 S3 client of it

    def env(self, port: int | None = None) -> dict[str, str]:
        """The variables GDAL (inputs) and wetmap's uploads (s3fs) both read, for this server or a
        proxy of it on `port`."""
        return {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1",
                "AWS_S3_ENDPOINT": f"127.0.0.1:{port or self.port}", "AWS_HTTPS": "NO",
                "AWS_VIRTUAL_HOSTING": "FALSE"}

    def bucket(self, name: str) -> str:
        self.client.create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str) -> list[str]:
        return sorted(o["Key"] for o in self.client.list_objects_v2(Bucket=bucket).get("Contents", []))


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """One moto server for the session; each test makes its own buckets."""
    boto3 = pytest.importorskip("boto3")
    pytest.importorskip("moto")
    import time

    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        client = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                              aws_access_key_id="testing", aws_secret_access_key="testing")
        for _ in range(200):
            try:
                client.list_buckets()
                break
            except Exception:  # noqa: BLE001 - the server is still starting
                time.sleep(0.05)
        yield S3Server(port, client)
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.fixture()
def s3(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    """The session's S3 server, with GDAL's and s3fs's variables pointing at it for this test."""
    for var, value in s3_server.env().items():
        monkeypatch.setenv(var, value)
    return s3_server


def write_job(folder: Path, sample, bundle_path: Path, root: Path, **extra) -> Path:
    """A job file over the sample's regions and scenes (tests/jobs/test_jobs.py, tests/test_workflows.py)."""
    job = {
        "name": "marshes",
        "region": {"file": str(sample.regions), "field": "name"},
        "scenes": {"images": [str(sample.scene_a.with_name("scene_?.tif"))], "clouds": "{stem}_scl.tif"},
        "model": str(bundle_path), "reference": str(sample.labels), "output_root": str(root),
        "predict": {"tile_size": 64, "overlap": 24, "batch_size": 4, "device": "cpu"},
        **extra,
    }
    path = folder / "job.yaml"
    path.write_text(yaml.safe_dump(job))
    return path


@pytest.fixture(scope="session")
def dask_workers(s3_server: S3Server) -> Iterator[Client]:
    """A client of two Dask worker processes, shared by the session's Dask tests (a LocalCluster
    takes seconds to start). The workers start with the S3 server's variables in their
    environment, as workers deployed beside a bucket would; the tests' own process does not keep
    them."""
    from wetmap.runtime import dask_client

    with contextlib.ExitStack() as stack:
        with pytest.MonkeyPatch.context() as env:
            for var, value in s3_server.env().items():
                env.setenv(var, value)
            client = stack.enter_context(dask_client(workers=2))
        assert client is not None
        yield client


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The tests that use `dask_workers` run last, one after another, so the cluster is up only
    while they run (idle, its scheduler, nannies and workers take a share of a core)."""
    items.sort(key=lambda item: "dask_workers" in getattr(item, "fixturenames", ()))
