"""Run `wetmap` commands in fresh processes without paying the imports each time.

One server process imports wetmap's stages once, then for each request (a JSON line on stdin)
forks a child that runs the real entry point, `wetmap.cli.main`, optionally under a file-size
limit (`ulimit -f`) or on a new tmpfs of a given size (when the server was started in its own
mount namespace, `unshare -m`); afterwards the tmpfs's files are copied out for the test to look
at, and it is unmounted. It answers with the exit code and what the child wrote to stderr.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys


def _child(args: list[str], limit: int | None, err_fd: int) -> None:
    os.dup2(err_fd, 2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115 - the child's own stdout, closed by _exit
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
    if limit:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    from wetmap.cli import main

    sys.argv = ["wetmap", *args]
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # noqa: BLE001 - a traceback is what the test must see
        import traceback

        traceback.print_exc()
        code = 1
    sys.stderr.flush()
    os._exit(code)


def run(request: dict) -> dict:
    disk, keep = request.get("tmpfs_dir"), request.get("keep")
    if disk:
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={request['tmpfs_kib']}k", "tmpfs", disk],
                                 capture_output=True, text=True)
        if mounted.returncode:
            return {"rc": 99, "stderr": mounted.stderr}
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        _child(request["args"], request.get("limit"), write_fd)
    os.close(write_fd)
    with os.fdopen(read_fd) as pipe:
        err = pipe.read()
    _, status = os.waitpid(pid, 0)
    rc = os.waitstatus_to_exitcode(status)
    if disk:
        shutil.copytree(disk, keep, dirs_exist_ok=True)
        subprocess.run(["umount", disk], check=True)
    return {"rc": rc, "stderr": err}


def serve() -> None:
    import wetmap.chips  # noqa: F401 - imported once here, inherited by every child
    import wetmap.cli  # noqa: F401
    import wetmap.evaluate  # noqa: F401
    import wetmap.predict  # noqa: F401
    import wetmap.train  # noqa: F401

    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        print(json.dumps(run(json.loads(line))), flush=True)


if __name__ == "__main__":
    serve()
