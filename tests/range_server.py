"""A static file server that answers HTTP Range requests, as object stores and CDNs answer GDAL.

Run as its own process (`python range_server.py FOLDER`; it prints its port): GDAL holds the
GIL in parts of a read, so a server thread inside the test process would stall it.
"""

from __future__ import annotations

import http.server
import sys
from functools import partial
from pathlib import Path


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files with HTTP Range requests, as object stores and CDNs do for GDAL's /vsicurl/."""

    def log_message(self, *args) -> None:  # keep the test output quiet
        pass

    def send_head(self):
        path = Path(self.translate_path(self.path))
        header = self.headers.get("Range")
        if not header or not path.is_file():
            return super().send_head()
        size = path.stat().st_size
        start, _, end = header.removeprefix("bytes=").partition("-")
        first, last = int(start), min(int(end) if end else size - 1, size - 1)
        handle = path.open("rb")
        handle.seek(first)
        self.send_response(206)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Range", f"bytes {first}-{last}/{size}")
        self.send_header("Content-Length", str(last - first + 1))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        return _Limited(handle, last - first + 1)


class _Limited:
    """The requested byte range of a file, read like a file."""

    def __init__(self, handle, n: int) -> None:
        self.handle, self.left = handle, n

    def read(self, size: int = -1) -> bytes:
        if self.left <= 0:
            return b""
        data = self.handle.read(self.left if size < 0 else min(size, self.left))
        self.left -= len(data)
        return data

    def close(self) -> None:
        self.handle.close()


if __name__ == "__main__":
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(RangeHandler, directory=sys.argv[1]))
    print(server.server_address[1], flush=True)
    server.serve_forever()
