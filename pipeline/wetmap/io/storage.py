"""Outputs in object storage (s3://, gs://, az://, any fsspec URL): made here, verified, then uploaded.

GDAL builds a COG in a seekable file, and every wetmap output is read back before it gets its
final name (wetmap.io.outputs). So an output for a URL is made in a local staging folder exactly
as a local one is, then uploaded by fsspec, main file last. An object store shows an object only
once its upload is complete (the whole body of a PUT, or CompleteMultipartUpload), so a killed
upload leaves nothing under the final key; on a target that is a file system (file://, sftp://...)
each file goes up under a hidden name and is renamed. Staging needs local room for one result:
`$WETMAP_STAGING`, else the system's temporary folder.

Credentials come from each fsspec implementation's usual places (s3fs: the AWS_* variables and
~/.aws, as for GDAL). GDAL's AWS_S3_ENDPOINT (with AWS_HTTPS=NO for plain http) is passed to s3fs
as its endpoint unless AWS_ENDPOINT_URL is set, so one setting serves the inputs GDAL reads and
the outputs wetmap uploads.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from wetmap.errors import WetmapError, first_line
from wetmap.io.outputs import remove_stale, scratch_path

# Protocols whose objects appear only when their upload is complete: uploaded to the final key.
_ATOMIC_OBJECTS = {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "memory"}
_GDAL_PREFIXES = {"/vsis3/": "s3://", "/vsigs/": "gs://", "/vsiaz/": "az://"}
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def output_url(path: str | os.PathLike[str]) -> str | None:
    """The URL an output path names (a /vsis3/-style path as its s3:// URL), or None for a local path."""
    text = os.fspath(path)
    for prefix, scheme in _GDAL_PREFIXES.items():
        if text.startswith(prefix):
            return scheme + text[len(prefix):]
    return text if _URL.match(text) else None


def join(url: str, *names: str) -> str:
    """`url`/`name`/...: URLs joined with slashes whatever the local OS uses."""
    return posixpath.join(url.rstrip("/"), *names)


def _s3_options() -> dict[str, Any]:
    if os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL_S3"):
        return {}   # botocore reads them itself
    endpoint = os.environ.get("AWS_S3_ENDPOINT")
    if not endpoint:
        return {}
    if not _URL.match(endpoint):
        scheme = "http" if os.environ.get("AWS_HTTPS", "YES").upper() in ("NO", "FALSE", "OFF", "0") else "https"
        endpoint = f"{scheme}://{endpoint}"
    options: dict[str, Any] = {"endpoint_url": endpoint}
    if os.environ.get("AWS_VIRTUAL_HOSTING", "TRUE").upper() in ("NO", "FALSE", "OFF", "0"):
        options["config_kwargs"] = {"s3": {"addressing_style": "path"}}
    return options


class Remote:
    """One URL's file system (fsspec), with errors turned into one line naming the URL."""

    def __init__(self, url: str) -> None:
        import fsspec

        self.url = url
        self.protocol = url.split("://", 1)[0].lower()
        options = _s3_options() if self.protocol in ("s3", "s3a") else {}
        try:
            self.fs, self.path = fsspec.core.url_to_fs(url, **options)
        except ImportError as exc:
            raise WetmapError(f"writing to {self.protocol}:// needs a package that is not installed "
                              f"({first_line(exc)})", url) from None
        except ValueError as exc:
            raise WetmapError(f"not a storage URL fsspec knows ({first_line(exc)})", url) from None
        self.atomic = self.protocol in _ATOMIC_OBJECTS

    def _key(self, *names: str) -> str:
        return posixpath.join(self.path, *names) if names else self.path

    def url_of(self, *names: str) -> str:
        return self._url(self._key(*names))

    def _url(self, key: str) -> str:
        return f"{self.protocol}://{key}" if self.protocol not in ("file", "local") else key

    @contextlib.contextmanager
    def _errors(self, key: str, doing: str) -> Iterator[None]:
        try:
            yield
        except WetmapError:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure of the store is one line naming the object
            raise WetmapError(f"could not be {doing}: {first_line(exc)}", self._url(key)) from exc

    def check_place(self) -> None:
        """An object store's bucket (container) must exist before a result is made for it."""
        if not self.atomic or self.protocol == "memory":
            return
        bucket = self.path.split("/", 1)[0]
        with self._errors(bucket, "checked"):
            self.fs.invalidate_cache()
            found = self.fs.exists(bucket)
        if not found:
            raise WetmapError("bucket not found (or not visible with these credentials)", self._url(bucket))

    def exists(self, *names: str) -> bool:
        key = self._key(*names)
        with self._errors(key, "checked"):
            self.fs.invalidate_cache()
            return bool(self.fs.exists(key))

    def names(self, *names: str) -> list[str]:
        """The entries directly under a folder (base names), [] when there is none."""
        key = self._key(*names)
        with self._errors(key, "listed"):
            self.fs.invalidate_cache()
            if not self.fs.exists(key):
                return []
            return sorted(posixpath.basename(p.rstrip("/")) for p in self.fs.ls(key, detail=False))

    def read_text(self, *names: str) -> str | None:
        """A small object's text, or None when there is none."""
        key = self._key(*names)
        with self._errors(key, "read"):
            try:
                with self.fs.open(key, "rb") as fh:
                    return fh.read().decode()
            except FileNotFoundError:
                return None

    def put(self, local: Path, *names: str) -> None:
        """Upload one file so that it is complete whenever it exists under its key."""
        key = self._key(*names)
        with self._errors(key, "uploaded"):
            if self.atomic:
                self.fs.put_file(str(local), key)
                return
            parent, base = posixpath.split(key)
            hidden = posixpath.join(parent, f".{base}.{uuid.uuid4().hex[:8]}.tmp")
            self.fs.makedirs(parent, exist_ok=True)
            self.fs.put_file(str(local), hidden)
            self.fs.mv(hidden, key)

    def put_text(self, text: str, *names: str) -> None:
        with staging_folder() as tmp:
            (tmp / "object").write_text(text)
            self.put(tmp / "object", *names)

    def remove(self, *names: str) -> None:
        key = self._key(*names)
        with self._errors(key, "removed"):
            if self.fs.exists(key):
                self.fs.rm(key, recursive=True)

    def put_folder(self, folder: Path, *names: str, last: str) -> None:
        """Upload every file under `folder` (the file named `last` at its top after all others)."""
        files = sorted(p for p in folder.rglob("*") if p.is_file() and p.relative_to(folder).as_posix() != last)
        for path in (*files, folder / last):
            self.put(path, *names, *path.relative_to(folder).parts)


def staging_root() -> Path:
    root = Path(os.environ.get("WETMAP_STAGING") or tempfile.gettempdir())
    root.mkdir(parents=True, exist_ok=True)
    return root


@contextlib.contextmanager
def staged_output(target: str | os.PathLike[str], overwrite: bool, family: Sequence[str] = ()) -> Iterator[Path]:
    """The local path to write the output file `target` to; a URL's result is uploaded when the
    block succeeds. `family` names (beside `target`) the other files one result may have."""
    url = output_url(target)
    if url is None:
        yield Path(target)
        return
    folder, name = posixpath.split(url.rstrip("/"))
    with _staged(Remote(folder), overwrite, name, family) as tmp:
        yield tmp / name


@contextlib.contextmanager
def staged_folder(target: str | os.PathLike[str], overwrite: bool, names: Sequence[str]) -> Iterator[Path]:
    """The local folder to write the output folder `target` to (its files `names`, the main one
    last); a URL's result is uploaded when the block succeeds."""
    url = output_url(target)
    if url is None:
        yield Path(target)
        return
    with _staged(Remote(url), overwrite, names[-1], names) as tmp:
        yield tmp


@contextlib.contextmanager
def _staged(remote: Remote, overwrite: bool, main: str, family: Sequence[str]) -> Iterator[Path]:
    """Stage one result for `remote`; then upload every file made, `main` last. Files of the
    family that this result does not rewrite, and the old main file, are removed first, as a
    local OutputSet does: a killed upload leaves an incomplete new set, never an old main file
    beside new ones."""
    remote.check_place()
    if not overwrite and remote.exists(main):
        raise WetmapError("output exists; pass --overwrite to replace it", remote.url_of(main))
    with staging_folder() as tmp:
        yield tmp
        made = {p.relative_to(tmp).as_posix() for p in tmp.rglob("*") if p.is_file()}
        for old in (main, *(f for f in family if f not in made)):
            remote.remove(old)
        remote.put_folder(tmp, last=main)


@contextlib.contextmanager
def staging_folder() -> Iterator[Path]:
    """A new hidden folder under the staging root, named for this process (as io.outputs names
    its temporaries), removed afterwards; those of killed processes are removed first."""
    base = staging_root() / "wetmap-stage"
    remove_stale(base)
    folder = scratch_path(base, "")
    folder.mkdir()
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
