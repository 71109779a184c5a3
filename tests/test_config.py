"""Configs: YAML, --set overrides and strict keys, one-line errors."""

from pathlib import Path

import pytest

from wetmap import config
from wetmap.errors import WetmapError

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_shipped_configs_validate() -> None:
    config.load(config.TrainRunConfig, REPO / "configs/train.yaml")
    config.load(config.PredictConfig, REPO / "configs/predict.yaml")
    config.load(config.EvaluateConfig, REPO / "configs/evaluate.yaml")


def test_unknown_key_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, "data: {image: a.tif, labels: b.tif}\ntrain: {epochz: 3}\n")
    with pytest.raises(WetmapError, match=r"c\.yaml: unknown key 'train\.epochz'"):
        config.load(config.TrainRunConfig, path)


def test_bad_value_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, "data: {image: a.tif, labels: b.tif, min_valid: 2}\n")
    with pytest.raises(WetmapError, match=r"bad value for 'data\.min_valid'"):
        config.load(config.TrainRunConfig, path)


def test_overrides_win_and_are_typed(tmp_path: Path) -> None:
    path = write(tmp_path, "data: {image: a.tif, labels: b.tif}\ntrain: {epochs: 3}\n")
    cfg = config.load(config.TrainRunConfig, path, config.parse_overrides(["train.epochs=7", "loss.options.batch=true"]))
    assert cfg.train.epochs == 7
    assert cfg.loss.options.given() == {"batch": True}


def test_override_without_equals_is_an_error() -> None:
    with pytest.raises(WetmapError, match="not KEY=VALUE"):
        config.parse_overrides(["train.epochs"])


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(WetmapError, match="config file not found"):
        config.load(config.PredictConfig, tmp_path / "nope.yaml")


def test_predict_overlap_must_fit_tile() -> None:
    with pytest.raises(WetmapError, match="overlap"):
        config.build(config.PredictConfig, {"tile_size": 64, "overlap": 40})
