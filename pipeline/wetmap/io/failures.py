"""Why a write failed, in the words a user needs: the full disk, the quota, the file size limit,
the permission, with the free space where it happened.

Libraries report these conditions in different ways (an OSError with its errno, GDAL's logged
message, torch's RuntimeError text), so the cause chain is read for both numbers and words.
"""

from __future__ import annotations

import errno
import math
import resource
import shutil
from pathlib import Path

from wetmap.errors import WetmapError, first_line

NEARLY_FULL = 1 << 20

# errno values that mean "this place cannot take the output", each with the words a user needs.
WRITE_ERRNOS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file size limit reached",
    errno.EACCES: "not writable (permission denied)",
    errno.EPERM: "not writable (operation not permitted)",
    errno.EROFS: "not writable (read-only file system)",
    errno.ENOTDIR: "a path component is a file, not a folder",
}
# The same conditions as libraries word them when they do not raise OSError (GDAL, libtiff, torch).
_WRITE_WORDS = {"No space left on device": errno.ENOSPC, "Disk quota exceeded": errno.EDQUOT,
                "File too large": errno.EFBIG, "file write failed": errno.EIO, "Write failed": errno.EIO,
                "Write error": errno.EIO, "IO error writing": errno.EIO, "Permission denied": errno.EACCES,
                "Read-only file system": errno.EROFS}


def free_space(path: str | Path) -> str:
    """Free space on the file system holding `path` (or its nearest existing folder), in words,
    with the process's file size limit when it has one (`ulimit -f`)."""
    place = Path(path).absolute()
    while not place.exists() and place != place.parent:
        place = place.parent
    try:
        free = shutil.disk_usage(place).free
    except OSError:
        text = "free space unknown"
    else:
        exponent = min(4, int(math.log(free, 1024))) if free >= 1024 else 0
        text = (f"{free} bytes free" if exponent == 0
                else f"{free / 1024 ** exponent:.1f} {('KiB', 'MiB', 'GiB', 'TiB')[exponent - 1]} free")
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    return text if limit == resource.RLIM_INFINITY else f"{text}; file size limit {limit} bytes"


def _chain(exc: BaseException) -> list[BaseException]:
    """`exc` and the exceptions that caused it, innermost last (rasterio's "Write failed. See
    previous exception" is raised from GDAL's own message)."""
    found = [exc]
    while len(found) < 8 and (inner := found[-1].__cause__ or found[-1].__context__) is not None:
        found.append(inner)
    return found


def messages(exc: BaseException) -> list[str]:
    return [str(e) for e in _chain(exc)]


def detail(exc: BaseException) -> str:
    return first_line(_chain(exc)[-1])


def write_failure(path: str | Path, exc: BaseException) -> WetmapError | None:
    """The one-line error for a failed write of `path`, or None when `exc` is not about writing
    (then it is a bug and keeps its traceback)."""
    code = exc.errno if isinstance(exc, OSError) else None  # rasterio's CPLE errors carry GDAL's numbers there
    texts = messages(exc)
    if code not in WRITE_ERRNOS:
        code = next((c for text in texts for words, c in _WRITE_WORDS.items() if words in text), None)
        if code is None:
            return None
    reason = WRITE_ERRNOS.get(code) or detail(exc)
    if code in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR):  # a place problem, not a space one
        return WetmapError(f"could not be written: {reason}", getattr(exc, "filename", None) or path)
    return WetmapError(f"could not be written: {reason} ({free_space(path)})", path)


def nearly_full(path: Path) -> bool:
    """Less than 1 MiB free where `path` goes: a failed write there is the full disk's doing."""
    place = path.absolute()
    while not place.exists() and place != place.parent:
        place = place.parent
    try:
        return shutil.disk_usage(place).free < NEARLY_FULL
    except OSError:
        return False
