"""The scheduling script maps a scene end to end and passes bad input through as exit code 2."""

import os
import subprocess
import sys
from pathlib import Path

import json

SCRIPT = Path(__file__).resolve().parents[1] / "workflows" / "map_scene.sh"


def run(args: list, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "WETMAP": str(Path(sys.executable).with_name("wetmap"))}
    return subprocess.run(["bash", str(SCRIPT), *map(str, args)], capture_output=True, text=True, env=env)


def test_map_scene_writes_map_and_report(bundle_path, sample, tmp_path: Path) -> None:
    out = tmp_path / "maps"
    result = run([bundle_path, sample.scene_a, sample.scene_a_scl, sample.labels, sample.regions, out], tmp_path)
    assert result.returncode == 0, result.stderr
    assert (out / "wetlands.tif").exists() and (out / "wetlands.qml").exists()
    report = json.loads((out / "report" / "report.json").read_text())
    assert len(report["regions"]) >= 4


def test_map_scene_bad_input_exits_2(bundle_path, sample, tmp_path: Path) -> None:
    result = run([bundle_path, tmp_path / "missing.tif", sample.scene_a_scl, sample.labels, sample.regions,
                  tmp_path / "maps"], tmp_path)
    assert result.returncode == 2
    assert "missing.tif: file not found" in result.stderr
