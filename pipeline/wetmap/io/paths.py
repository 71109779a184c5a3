"""Paths as GDAL reads them: local files, archives and object storage alike.

`s3://bucket/key` becomes `/vsis3/bucket/key`, `gs://` `/vsigs/`, `az://` `/vsiaz/`, and
`http(s)://...` `/vsicurl/http(s)://...`; `/vsi...` paths pass through unchanged. Credentials and
endpoints come from GDAL's own environment variables (AWS_*, GS_*, AZURE_*), so a user configures
object storage once for every GDAL tool. A remote path is never turned into a `pathlib.Path`,
which would fold `https://` into `https:/`.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from os import PathLike
from pathlib import Path
from typing import Any

from wetmap.errors import WetmapError

_SCHEMES = {"s3://": "/vsis3/", "gs://": "/vsigs/", "az://": "/vsiaz/", "azure://": "/vsiaz/"}


def gdal_path(path: str | PathLike[str]) -> str:
    """The path GDAL should open for what the user typed."""
    text = str(path) if not isinstance(path, str) else path
    for scheme, prefix in _SCHEMES.items():
        if text.startswith(scheme):
            return prefix + text[len(scheme):]
    if text.startswith(("http://", "https://")):
        return "/vsicurl/" + text
    return text


def is_remote(path: str | PathLike[str]) -> bool:
    """Whether GDAL (not the local file system) must be asked if this path exists."""
    text = gdal_path(path)
    return text.startswith("/vsi") and not text.startswith(("/vsizip//", "/vsimem/")) and not _local_archive(text)


def _local_archive(text: str) -> bool:
    """/vsizip/local.zip/... and /vsitar/...: their archive is a local file."""
    for prefix in ("/vsizip/", "/vsitar/", "/vsigzip/"):
        if text.startswith(prefix):
            return not text[len(prefix):].startswith("/vsi")
    return False


def url_of(path: str) -> str | None:
    """The plain http(s) URL of a /vsicurl/ path (or of a URL), else None."""
    text = path.removeprefix("/vsicurl/")
    return text if text.startswith(("http://", "https://")) else None


def check_local(path: str | PathLike[str]) -> None:
    """A local path that does not exist is one clear line before GDAL is asked anything."""
    text = gdal_path(path)
    if not text.startswith("/vsi") and not Path(text).exists():
        raise WetmapError("file not found", text)


def read_json(path: str | PathLike[str]) -> Any:
    """A JSON document from a local file or an http(s) URL (a STAC item, a Landsat MTL.json)."""
    text = str(path)
    url = url_of(gdal_path(text))
    try:
        if url is not None:
            with urllib.request.urlopen(url, timeout=60) as response:  # noqa: S310 - the user's URL
                raw = response.read()
        else:
            check_local(text)
            raw = Path(text).read_bytes()
    except urllib.error.HTTPError as exc:
        raise WetmapError(f"cannot fetch ({exc.code} {exc.reason})", text) from None
    except (urllib.error.URLError, OSError) as exc:
        raise WetmapError(f"cannot read ({getattr(exc, 'reason', None) or exc})", text) from None
    try:
        return json.loads(raw)
    except ValueError:
        raise WetmapError("not valid JSON", text) from None


def join(base: str, href: str) -> str:
    """`href` of a document at `base` (a STAC asset of an item): absolute as is, else relative."""
    if "://" in href or href.startswith("/"):
        return href
    url = url_of(gdal_path(base))
    if url is not None:
        return urllib.parse.urljoin(url, href)
    return str(Path(base).parent / href)
