"""Where a job's runs are kept (a folder, or a URL with local staging), and the job's lock."""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from wetmap.errors import JobBusy, WetmapError, WetmapWarning
from wetmap.io.outputs import atomic_output, commit_dir, point_link
from wetmap.io.storage import Remote, join, output_url, staging_root

MANIFEST = "manifest.json"
RUN_NAME = re.compile(r"^(\d{4}-\d{2}-\d{2})(?:\.(\d+))?$")


def run_order(name: str) -> tuple[str, int]:
    """Runs in the order they were made: by day, then .2, .3, ... within a day."""
    match = RUN_NAME.match(name)
    if match is None:
        raise ValueError(f"not a run name: {name}")
    return match[1], int(match[2] or 1)


class Place:
    """Where a job's runs are kept: a local folder, or a URL with a local staging folder.

    `local` holds the lock, the work folder of the run in progress and the logs either way."""

    def __init__(self, output_root: str, name: str) -> None:
        self.url = output_url(output_root)
        if self.url is None:
            self.local = Path(output_root) / name
            self.remote = None
        else:
            self.url = join(self.url, name)
            digest = hashlib.sha256(self.url.encode()).hexdigest()[:12]
            self.local = staging_root() / "wetmap-jobs" / f"{name}-{digest}"
            self.remote = Remote(self.url)

    def run_dir(self, name: str) -> Path | str:
        return self.local / name if self.url is None else join(self.url, name)

    def latest_manifest(self) -> tuple[str, dict[str, Any]] | None:
        """The latest complete run's name and manifest, None when there is none."""
        if self.remote is None:
            latest = self.local / "latest"
            try:
                return latest.resolve().name, json.loads((latest / MANIFEST).read_text())
            except (OSError, ValueError):
                return None
        name = (self.remote.read_text("latest") or "").strip()
        text = self.remote.read_text(name, MANIFEST) if name else None
        try:
            return (name, json.loads(text)) if text else None
        except ValueError:
            return None

    def run_file(self, name: str, file: str) -> str:
        """A file of run `name` as GDAL opens it: a local path or a URL."""
        return str(self.local / name / file) if self.url is None else join(self.url, name, file)

    def read_text(self, name: str, file: str) -> str | None:
        """A text file of run `name`, None when it is not there."""
        if self.remote is not None:
            return self.remote.read_text(name, file)
        try:
            return (self.local / name / file).read_text()
        except OSError:
            return None

    def manifest(self, name: str) -> dict[str, Any] | None:
        """Run `name`'s manifest, None when the run is not complete."""
        text = self.read_text(name, MANIFEST)
        try:
            return json.loads(text) if text else None
        except ValueError:
            return None

    def runs(self) -> list[str]:
        """The names of the job's complete runs (those with a manifest), oldest first."""
        if self.remote is not None:
            names = self.remote.names()
        elif self.local.is_dir():
            names = [p.name for p in self.local.iterdir() if p.is_dir() and not p.is_symlink()]
        else:
            names = []
        return sorted((n for n in names if RUN_NAME.match(n) and self.manifest(n) is not None), key=run_order)

    def baseline(self, since: dt.date | None) -> str | None:
        """The run a new one is compared with: the latest complete one, or with `since` the newest
        complete run made on or before that day; None for a job's first run."""
        if since is None:
            latest = self.latest_manifest()
            return latest[0] if latest is not None else None
        chosen = [n for n in self.runs() if run_order(n)[0] <= since.isoformat()]
        if not chosen:
            raise WetmapError(f"no complete run of this job on or before {since.isoformat()} to compare with",
                              self.url or self.local)
        return chosen[-1]

    def run_name(self) -> str:
        """Today's date; a second changed run on the same day gets .2, .3, ..."""
        taken = set(self.remote.names()) if self.remote is not None else \
            {p.name for p in self.local.iterdir()} if self.local.is_dir() else set()
        base = dt.date.today().isoformat()
        name, n = base, 1
        while name in taken:
            n += 1
            name = f"{base}.{n}"
        return name

    def commit(self, work: Path, name: str) -> None:
        """Put the finished run in place under its name (`run_name`), then point `latest` at it."""
        if self.remote is None:
            commit_dir(work, self.local / name, overwrite=False)
            point_link(self.local / "latest", name)
        else:
            self.remote.put_folder(work, name, last=MANIFEST)
            self.remote.put_text(name + "\n", "latest")
            shutil.rmtree(work, ignore_errors=True)

    def put_text(self, text: str, name: str) -> None:
        """A small file of the job folder (catalog.json), replaced in one rename (or as one object)."""
        if self.remote is not None:
            self.remote.put_text(text, name)
            return
        with atomic_output(self.local / name, overwrite=True) as tmp:
            tmp.write_text(text)

    def keep_log(self, log_path: Path) -> None:
        """This invocation's log, moved up beside the remote runs (a warning if it cannot go up,
        so that it never hides the run's own outcome)."""
        if self.remote is not None:
            try:
                self.remote.put(log_path, "logs", log_path.name)
            except WetmapError as exc:
                warnings.warn(f"the log stays in {log_path}: {exc}", WetmapWarning, stacklevel=2)
            else:
                log_path.unlink()


@contextlib.contextmanager
def job_lock(job_dir: Path, wait: bool) -> Iterator[None]:
    """An exclusive flock on job_dir/.lock; the kernel drops it when the holder dies."""
    job_dir.mkdir(parents=True, exist_ok=True)
    with open(job_dir / ".lock", "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                fh.seek(0)
                holder = fh.read().strip() or "another process"
                raise JobBusy(f"job is already running ({holder}); try again later or pass --wait") from None
            raise
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} since {dt.datetime.now().isoformat(timespec='seconds')}")
        fh.flush()
        try:
            yield
        finally:
            fh.truncate(0)
            fcntl.flock(fh, fcntl.LOCK_UN)
