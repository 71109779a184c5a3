"""The scheduling files run real jobs: systemd and cron call `wetmap run` on a job that exists,
and the Prefect flow (when the `prefect` extra is installed) runs a job end to end."""

from __future__ import annotations

import configparser
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import write_job
from wetmap import config

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("job", sorted((ROOT / "configs" / "jobs").glob("*.yaml")), ids=lambda p: p.name)
def test_job_configs_are_valid(job: Path) -> None:
    config.load(config.JobConfig, job)


def test_systemd_units_run_a_job_config_on_a_timer() -> None:
    service = configparser.ConfigParser(interpolation=None, strict=False)
    service.read(ROOT / "workflows" / "systemd" / "wetmap-job@.service")
    command = shlex.split(service["Service"]["ExecStart"])
    assert command[1:] == ["run", "configs/jobs/%i.yaml"] and command[0].endswith("/.venv/bin/wetmap")
    assert service["Service"]["Type"] == "oneshot"
    timer = configparser.ConfigParser(interpolation=None, strict=False)
    timer.read(ROOT / "workflows" / "systemd" / "wetmap-job@.timer")
    assert timer["Timer"]["OnCalendar"] and timer["Install"]["WantedBy"] == "timers.target"


def test_cron_line_runs_an_existing_job() -> None:
    lines = [ln for ln in (ROOT / "workflows" / "crontab.example").read_text().splitlines()
             if ln.strip() and not ln.startswith("#")]
    assert len(lines) == 1
    fields = lines[0].split(None, 5)
    command = shlex.split(fields[5].split("&&", 1)[1].split(">>")[0])
    assert command[:2] == [".venv/bin/wetmap", "run"] and (ROOT / command[2]).exists()


def test_prefect_flow_runs_a_job(sample, bundle_path, tmp_path: Path, monkeypatch) -> None:
    pytest.importorskip("prefect")
    import importlib.util

    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect"))
    monkeypatch.setenv("PREFECT_SERVER_ALLOW_EPHEMERAL_MODE", "true")
    spec = importlib.util.spec_from_file_location("prefect_flow", ROOT / "workflows" / "prefect_flow.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    job = write_job(tmp_path, sample, bundle_path, tmp_path / "out")
    first, = module.map_regions([str(job)])
    again, = module.map_regions([str(job)])
    assert first["status"] == "done" and again["status"] == "up to date"
    assert yaml.safe_load(job.read_text())["name"] in first["run_dir"]


def test_the_container_installs_the_pins_and_runs_wetmap() -> None:
    lines = [ln.strip() for ln in (ROOT / "Dockerfile").read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    assert lines[0].startswith("FROM python:3.11")
    run = " ".join(ln for ln in lines if ln.startswith(("RUN", "&&")))
    assert "pip install -c constraints.txt ." in run
    assert 'ENTRYPOINT ["wetmap"]' in lines
    copied = [ln.split()[1:-1] for ln in lines if ln.startswith("COPY")]
    assert all((ROOT / path.rstrip("/")).exists() for paths in copied for path in paths)
    assert ".venv/" in (ROOT / ".dockerignore").read_text().split()


def test_the_indexed_job_runs_one_valid_job_file_per_index() -> None:
    docs = list(yaml.safe_load_all((ROOT / "workflows" / "kubernetes" / "regions-indexed-job.yaml").read_text()))
    jobs = next(d for d in docs if d["kind"] == "ConfigMap")
    batch = next(d for d in docs if d["kind"] == "Job")
    assert batch["spec"]["completionMode"] == "Indexed"
    n = batch["spec"]["completions"]
    assert sorted(jobs["data"]) == [f"region-{i}.yaml" for i in range(n)]
    for text in jobs["data"].values():
        config.build(config.JobConfig, yaml.safe_load(text))
    pod = batch["spec"]["template"]["spec"]
    command = pod["containers"][0]["command"]
    mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    volume = next(v for v in pod["volumes"] if v["name"] == "jobs")
    assert volume["configMap"]["name"] == jobs["metadata"]["name"]
    for i in range(n):   # what the shell line names for each index is a file of the ConfigMap
        line = command[-1].replace("${JOB_COMPLETION_INDEX}", str(i))
        assert line.split()[-3:-1] == ["wetmap", "run"] and line.split()[-1] == f"{mounts['jobs']}/region-{i}.yaml"


def test_the_dask_cluster_has_cpu_workers_and_a_gpu_worker_group() -> None:
    docs = list(yaml.safe_load_all((ROOT / "workflows" / "kubernetes" / "daskcluster.yaml").read_text()))
    cluster = next(d for d in docs if d["kind"] == "DaskCluster")
    group = next(d for d in docs if d["kind"] == "DaskWorkerGroup")
    assert cluster["apiVersion"] == group["apiVersion"] == "kubernetes.dask.org/v1"
    assert group["spec"]["cluster"] == cluster["metadata"]["name"]
    worker = group["spec"]["worker"]["spec"]["containers"][0]
    assert worker["command"][:2] == ["dask", "worker"] and worker["resources"]["limits"]["nvidia.com/gpu"] == 1
    scheduler = cluster["spec"]["scheduler"]["spec"]["containers"][0]
    assert scheduler["command"] == ["dask", "scheduler"]
    assert {p["port"] for p in cluster["spec"]["scheduler"]["service"]["ports"]} == {8786, 8787}


def test_the_slurm_array_maps_each_task_to_one_job_file(tmp_path: Path) -> None:
    script = ROOT / "workflows" / "slurm" / "wetmap-array.sbatch"
    env = {"PATH": "/usr/bin:/bin", "SLURM_SUBMIT_DIR": str(ROOT), "WETMAP": "echo"}
    jobs = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "configs" / "jobs").glob("*.yaml"))
    for i, job in enumerate(jobs):
        done = subprocess.run(["bash", str(script)], env={**env, "SLURM_ARRAY_TASK_ID": str(i)},
                              capture_output=True, text=True, check=True)
        assert done.stdout.split() == ["run", job]
    beyond = subprocess.run(["bash", str(script)], env={**env, "SLURM_ARRAY_TASK_ID": str(len(jobs))},
                            capture_output=True, text=True)
    assert beyond.returncode != 0 and "no job file for this task id" in beyond.stderr
