"""Prefect flow for scheduled regional mapping: one `wetmap run` per job config.

Install the extra first: `.venv/bin/pip install -e '.[prefect]'`. Then

    .venv/bin/python workflows/prefect_flow.py configs/jobs/demo-marshes.yaml        # run now
    .venv/bin/python workflows/prefect_flow.py --serve configs/jobs/*.yaml            # every Monday 03:00

Each job is a task. A job that is already running elsewhere is retried after 10 minutes; bad
input (a WetmapError) fails at once, without retries: it needs a person, not another try.
Up-to-date jobs finish in seconds, so the schedule can be frequent.
"""

from __future__ import annotations

import sys
from typing import Any

from prefect import flow, get_run_logger, task

from wetmap.jobs import JobBusy, run_job


def _retry_if_busy(task_, task_run, state) -> bool:
    """Retry only when the job was locked by another run."""
    try:
        state.result()
    except JobBusy:
        return True
    except Exception:  # noqa: BLE001 - any other failure is final
        return False
    return False


@task(retries=3, retry_delay_seconds=600, retry_condition_fn=_retry_if_busy)
def map_region(job: str) -> dict[str, Any]:
    result = run_job(job)
    get_run_logger().info("%s: %s (%s)", job, result.status, result.run_dir)
    return {"job": job, "status": result.status, "run_dir": str(result.run_dir),
            "metrics": result.manifest.get("metrics", {})}


@flow(name="wetmap-regional-maps", log_prints=True)
def map_regions(jobs: list[str]) -> list[dict[str, Any]]:
    """Run every job config in `jobs` (one after the other: each uses all cores)."""
    return [map_region(job) for job in jobs]


if __name__ == "__main__":
    args = sys.argv[1:]
    if args[:1] == ["--serve"]:
        map_regions.serve(name="weekly", cron="0 3 * * 1", parameters={"jobs": args[1:]})
    else:
        for row in map_regions(args):
            print(row["job"], row["status"], row["run_dir"])
