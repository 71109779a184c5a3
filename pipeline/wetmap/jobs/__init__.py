"""Scheduled regional mapping jobs: `wetmap run` (run.py), where runs are kept (place.py), what a
job reads (inputs.py)."""

from wetmap.errors import JobBusy
from wetmap.jobs.inputs import resolve_scenes
from wetmap.jobs.place import job_lock
from wetmap.jobs.run import JobResult, run_job

__all__ = ["JobBusy", "JobResult", "job_lock", "resolve_scenes", "run_job"]
