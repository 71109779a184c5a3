"""The scheduling files run real jobs: systemd and cron call `wetmap run` on a job that exists,
and the Prefect flow (when the `prefect` extra is installed) runs a job end to end."""

from __future__ import annotations

import configparser
import shlex
from pathlib import Path

import pytest
import yaml

from wetmap import config

from test_jobs import write_job

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
