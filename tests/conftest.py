"""Shared fixtures: one small generated sample area and one tiny trained model per session."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from wetmap import config
from wetmap.sample import SampleFiles, make_sample

SAMPLE_SIZE = 256


@pytest.fixture(scope="session")
def sample(tmp_path_factory: pytest.TempPathFactory) -> SampleFiles:
    return make_sample(tmp_path_factory.mktemp("sample"), size=SAMPLE_SIZE, seed=3)


@pytest.fixture(scope="session")
def bundle_path(sample: SampleFiles, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real (tiny, 2-epoch) TorchGeo U-Net trained on the sample with the masked Dice loss."""
    from wetmap.train import fit

    out = tmp_path_factory.mktemp("run")
    cfg = config.build(config.TrainRunConfig, {
        "seed": 0,
        "data": {"image": str(sample.scene_a), "labels": str(sample.labels), "clouds": str(sample.scene_a_scl),
                 "chip_size": 64, "split_block": 1},
        "train": {"epochs": 2, "batch_size": 8},
        "output": str(out),
    })
    result = fit(cfg)
    return Path(result["bundle"])


def run_cli(args: list[str], monkeypatch: pytest.MonkeyPatch) -> int:
    """Run `wetmap ARGS` in-process through the real entry point; return its exit code."""
    from wetmap.cli import main

    monkeypatch.setattr(sys, "argv", ["wetmap", *map(str, args)])
    with pytest.raises(SystemExit) as exit_info:
        main()
    return int(exit_info.value.code or 0)
