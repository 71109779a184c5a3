"""Progress of long commands: a bar on a terminal, plain lines in a log, nothing with --quiet."""

from __future__ import annotations

import io
import sys

import pytest

from conftest import run_cli
from wetmap import progress


class Terminal(io.StringIO):
    """A stderr that says it is a terminal."""

    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def progress_off():
    yield
    progress._mode = "off"   # library calls show nothing unless a command asked


def predict_args(bundle_path, sample, tmp_path, *extra) -> list:
    return ["predict", bundle_path, sample.scene_a, "--clouds", sample.scene_a_scl, "-o", tmp_path / "m.tif",
            "--tile-size", "64", "--overlap", "16", "--set", "device=cpu", "--set", "batch_size=2", "--overwrite",
            *extra]


def test_a_log_gets_plain_lines_with_counts_rate_and_time_left(bundle_path, sample, tmp_path, monkeypatch,
                                                             capsys) -> None:
    monkeypatch.setattr(progress, "LINE_EVERY_S", 0.0)   # every update, not once a minute
    assert run_cli(predict_args(bundle_path, sample, tmp_path), monkeypatch) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("predict: ")]
    assert lines, "progress lines in the log"
    assert all(" of 256 rows (" in line and "rows/s" in line and "left" in line for line in lines[:-1])
    assert all("\x1b" not in line for line in lines), "no terminal control codes in a log"
    done = [int(line.split()[1].replace(",", "")) for line in lines]
    assert done == sorted(done) and done[-1] == 256 and " (100%), " in lines[-1] and " in 0:00:" in lines[-1]


@pytest.mark.parametrize("command", ["tile", "clouds", "detect", "evaluate"])
def test_every_long_command_reports_its_progress(command, sample, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(progress, "LINE_EVERY_S", 0.0)
    args, what = {
        "tile": (["tile", "--image", sample.scene_a, "--labels", sample.labels, "--clouds", sample.scene_a_scl,
                  "-o", tmp_path / "chips", "--size", "64"], "tile"),
        "clouds": (["clouds", sample.scene_a, "--clouds", sample.scene_a_scl, "-o", tmp_path / "c.tif"], "cloud map"),
        "detect": (["clouds", sample.scene_a, "--clouds", "detect", "--level", "L2A", "-o", tmp_path / "d.tif"],
                   "detect clouds"),
        "evaluate": (["evaluate", sample.labels, sample.labels, "--regions", sample.regions, "-o", tmp_path / "r"],
                     "evaluate"),
    }[command]
    assert run_cli(args, monkeypatch) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith(f"{what}: ")]
    assert lines and " (100%), " in lines[-1], f"{what} reports its progress and its end"


def test_quiet_shows_no_progress_and_once_a_minute_is_the_default(bundle_path, sample, tmp_path, monkeypatch,
                                                                  capsys) -> None:
    monkeypatch.setattr(progress, "LINE_EVERY_S", 0.0)
    assert run_cli(predict_args(bundle_path, sample, tmp_path, "--quiet"), monkeypatch) == 0
    assert "predict: " not in capsys.readouterr().err
    monkeypatch.setattr(progress, "LINE_EVERY_S", 60.0)
    assert run_cli(predict_args(bundle_path, sample, tmp_path), monkeypatch) == 0   # seconds: no line yet
    assert "predict: " not in capsys.readouterr().err


def test_a_terminal_gets_a_bar_and_library_calls_nothing(monkeypatch) -> None:
    with progress.tracker("work", 10, "blocks") as advance:    # not asked by a command: silent
        advance(5)
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    progress.show(quiet=False)
    assert progress._mode == "bar"
    with progress.tracker("work", 10, "blocks") as advance:
        for _ in range(10):
            advance(1)
    assert "work" in terminal.getvalue() and "10/10" in terminal.getvalue()
    progress.show(quiet=True)
    assert progress._mode == "off"
