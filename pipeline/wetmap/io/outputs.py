"""Writing outputs so that a half-written one never exists under its final name.

Every output is written under a hidden name beside its final one, checked complete, flushed to
disk and only then renamed into place. "Checked" means read back, not trusted: GDAL reports some
write failures (a full disk while it flushes its block cache) only as a logged message and
returns success, which once left truncated COGs that passed `rio cogeo validate` and failed on
their pixels. So every raster block and overview is decoded again, a GeoPackage passes SQLite's
own integrity check, a checkpoint or bundle passes its zip CRCs, a JSON file parses.

Outputs read together (a class map with its probability raster, polygons and styles; a report's
tables and pages) are committed as one `OutputSet`: all are written and checked first, then the
whole previous set is removed, then the new one renamed in, main file last. A killed run leaves
an incomplete new set at worst, never an old one beside a new one looking like one result.

Hidden temporaries carry their host and process id; the next run of the same output removes
those of a process that is gone (or of any process, a day later).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import resource
import shutil
import socket
import sqlite3
import time
import uuid
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType

from wetmap.errors import WetmapError
from wetmap.io.failures import detail, free_space, messages, nearly_full, write_failure
from wetmap.io.readback import decode_all

_HOST = re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:24] or "host"
STALE_AFTER_S = 24 * 3600


def check_writable(path: str | Path, overwrite: bool) -> Path:
    """Refuse to replace an existing output unless asked; make sure its folder exists."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise WetmapError("output exists; pass --overwrite to replace it", path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise (write_failure(path.parent, exc) or exc) from None
    return path


def scratch_path(final: str | Path, suffix: str | None = None) -> Path:
    """A hidden name beside `final` that says who wrote it: `.NAME.HOST-PID-RANDOM.tmpSUFFIX`.

    The suffix keeps the real extension last, so GDAL picks the right driver for the file."""
    final = Path(final)
    owner = f"{_HOST}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    return final.with_name(f".{final.name}.{owner}.tmp{final.suffix if suffix is None else suffix}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale(final: str | Path) -> list[Path]:
    """Remove hidden temporaries of `final` left by killed runs: those of a process on this host
    that no longer exists, and any not touched for a day. Returns what was removed."""
    final = Path(final)
    if not final.parent.is_dir():
        return []
    prefix = f".{final.name}."
    removed = []
    for leftover in final.parent.glob(f"{_glob_escape(prefix)}*.tmp*"):
        owner = leftover.name[len(prefix):].split(".tmp", 1)[0]
        host, _, rest = owner.rpartition("-")[0].rpartition("-")
        pid = rest if host else ""
        try:
            age = time.time() - leftover.lstat().st_mtime
        except FileNotFoundError:
            continue
        dead = host == _HOST and pid.isdigit() and not _alive(int(pid))
        if dead or age > STALE_AFTER_S:
            _remove(leftover)
            removed.append(leftover)
    return removed


def _glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _with_sides(tmp: Path) -> list[Path]:
    """A temporary and the files GDAL and SQLite keep beside it."""
    return [tmp, *(tmp.with_name(tmp.name + side) for side in (".aux.xml", "-journal", "-wal", "-shm"))]


def _remove_scratch(tmp: Path) -> None:
    for leftover in _with_sides(tmp):
        if leftover.exists() or leftover.is_symlink():
            _remove(leftover)


def verify(path: Path, final: Path, pixels: list[int] | None = None) -> list[int] | None:
    """Read `path` back as what its final name says it is; a WetmapError when it is incomplete.

    A raster's every block and overview is decoded (io.readback: a block that cannot be read
    fails) and its bands checksummed as GDAL does; with `pixels`, the checksums must equal them (a
    tile GDAL never wrote reads back as no data, not as an error). Returns the raster's checksums."""
    kind = final.suffix.lower()
    try:
        if kind in (".tif", ".tiff"):
            found = decode_all(path)
            if pixels is not None and found != pixels:
                raise WetmapError(f"was not written completely ({free_space(final)}): its pixels differ from "
                                  "what was written", final)
            return found
        elif kind == ".gpkg":
            with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
                result = db.execute("PRAGMA integrity_check").fetchone()
            if not result or result[0] != "ok":
                raise ValueError(f"SQLite integrity check: {result}")
        elif kind in (".pt", ".ckpt"):
            with zipfile.ZipFile(path) as archive:
                bad = archive.testzip()
            if bad is not None:
                raise ValueError(f"record {bad} fails its CRC")
        elif kind == ".json":
            json.loads(path.read_text())
    except WetmapError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure to read it back means it is not complete
        raise WetmapError(f"was not written completely ({free_space(final)}): {detail(exc)}", final) from exc
    return None


def _fsync(path: Path) -> None:
    if path.is_file():
        with path.open("rb") as fh:
            os.fsync(fh.fileno())


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class OutputSet:
    """Files that together are one result, committed all or nothing.

    `outputs` are the files this run writes, main file last (it is renamed in last, so its
    presence means the set is complete); `family` are further names that belong to the same
    result and are removed with it (an earlier run's probability raster when this one writes
    none). Use as a context manager; `set[final]` is the hidden path to write `final` to.
    """

    def __init__(self, outputs: Sequence[str | Path], overwrite: bool, family: Sequence[str | Path] = ()) -> None:
        self.outputs = [Path(p) for p in outputs]
        self.family = [Path(p) for p in family if Path(p) not in set(map(Path, outputs))]
        self.overwrite = overwrite
        self._tmp: dict[Path, Path] = {}
        self._work: list[Path] = []
        self._pixels: dict[Path, list[int]] = {}
        self._current: Path | None = None   # the output asked for last: the one being written

    def __enter__(self) -> OutputSet:
        for path in (*self.outputs, *self.family):
            check_writable(path, self.overwrite)
            remove_stale(path)
        return self

    def scratch(self, near: str | Path, suffix: str) -> Path:
        """A hidden working file (never renamed into place), removed with the set's temporaries
        after any error message is made, so the free space it gives is the space at the failure."""
        path = scratch_path(near, suffix)
        self._work.append(path)
        return path

    def expect(self, final: str | Path, pixels: list[int] | None) -> None:
        """The band checksums that raster output `final` must have: of the strips written
        (io.checksum.StripChecksum) or of a file it was copied from (`verify`'s result)."""
        if pixels is None:
            raise TypeError(f"no checksums to expect for {final}: verify returns them for rasters only")
        self._pixels[Path(final)] = pixels

    def __getitem__(self, final: str | Path) -> Path:
        final = Path(final)
        if final not in self.outputs:
            raise KeyError(f"{final} is not an output of this set")
        self._current = final
        return self._tmp.setdefault(final, scratch_path(final))

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        try:
            if exc is None:
                self._commit()
            elif isinstance(exc, WetmapError):
                raise WetmapError(self._final_names(str(exc))) from exc
            elif isinstance(exc, Exception):
                failure = self._failure(exc)
                if failure is not None:
                    raise WetmapError(self._final_names(str(failure))) from exc
        finally:
            for tmp in (*self._tmp.values(), *self._work):
                _remove_scratch(tmp)

    def _failure(self, exc: Exception) -> WetmapError | None:
        """The one-line error for a library's exception while the set was written, when it is
        about writing: its words say so, it names a file of the set, the process has a file
        size limit, or the disk is (nearly) full: there libraries fail in all sorts of words
        (SQLite: "no such table"). Else None: a bug, which keeps its traceback."""
        text = " ".join([*messages(exc), str(getattr(exc, "filename", ""))])
        named = next((f for f, tmp in self._tmp.items() if tmp.name in text), None) or next(
            (self.outputs[-1] for tmp in self._work if tmp.name in text), None)
        limited = resource.getrlimit(resource.RLIMIT_FSIZE)[0] != resource.RLIM_INFINITY
        suspect = named or self._current or self.outputs[-1]
        failure = write_failure(suspect, exc)
        if failure is not None:
            return failure
        reason = detail(exc)
        if named is not None:
            return WetmapError(f"was not written completely ({free_space(named)}): {reason}", named)
        if limited:  # past the limit, a write fails wherever it lands (SQLite writes pages far ahead)
            return WetmapError(f"could not be written: file size limit reached ({free_space(suspect)}): {reason}",
                               suspect)
        if nearly_full(suspect):
            return WetmapError(f"could not be written: no space left on the device ({free_space(suspect)}): "
                               f"{reason}", suspect)
        return None

    def _final_names(self, text: str) -> str:
        """A message about a hidden file names the output the user asked for."""
        for final, tmp in self._tmp.items():
            text = text.replace(str(tmp), str(final)).replace(tmp.name, final.name)
        for tmp in self._work:
            text = text.replace(str(tmp), str(self.outputs[-1])).replace(tmp.name, self.outputs[-1].name)
        return text

    def _commit(self) -> None:
        missing = [final for final in self.outputs if not self[final].exists()]
        if missing:
            raise RuntimeError(f"outputs not written: {', '.join(map(str, missing))}")
        for final in self.outputs:
            tmp = self[final]
            verify(tmp, final, self._pixels.get(final))
            try:
                _fsync(tmp)
            except OSError as exc:
                raise (write_failure(final, exc) or exc) from exc
        for old in (*self.family, *self.outputs):
            if old.exists() or old.is_symlink():
                _remove(old)
        for final in self.outputs:
            os.replace(self[final], final)
        for folder in {final.parent for final in self.outputs}:
            _fsync_dir(folder)


@contextlib.contextmanager
def atomic_output(path: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a hidden path beside `path`; it is checked and renamed into place only if the block
    succeeds. A one-file `OutputSet`."""
    final = Path(path)
    with OutputSet([final], overwrite) as outputs:
        yield outputs[final]


def commit_dir(tmp: Path, final: Path, overwrite: bool) -> None:
    """Move a finished folder into place; an existing one goes only with `overwrite` (swapped out
    by a rename, then deleted, so `final` is always either the old folder or the new one)."""
    if final.exists():
        if not overwrite:
            raise WetmapError("output folder exists; pass --overwrite to replace it", final)
        trash = scratch_path(final, ".old")
        os.replace(final, trash)
        os.replace(tmp, final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(tmp, final)
    _fsync_dir(final.parent)


def point_link(link: Path, target: str) -> None:
    """Point the symlink `link` at `target` in one rename, so it always names a complete output."""
    remove_stale(link)
    tmp = scratch_path(link, "")
    os.symlink(target, tmp)
    os.replace(tmp, link)
    _fsync_dir(link.parent)
