"""Masked Dice vs unmasked Dice vs BCE on the sample scene: same chips, budget and seed.

The experiment behind the README's loss advice, shared by benchmarks/bench_losses_experiment.py
and notebooks/loss_experiment.ipynb. Chips are split train / val / test by spatial block; each
loss trains the demo's U-Net and is scored on the clear pixels of the test chips.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from wetmap import config
from wetmap.chips.build import build_chip_store
from wetmap.sample import make_sample
from wetmap.train.fit import FitResult, fit

LOSSES: dict[str, dict[str, Any]] = {
    "masked Dice": {"name": "dice", "masked": True, "options": {"batch": True}},
    "unmasked Dice": {"name": "dice", "masked": False, "options": {"batch": True}},
    "BCE": {"name": "bce", "masked": True, "options": {}},
    "masked Dice+BCE": {"name": "composite", "masked": True,
                        "options": {"terms": {"dice": 0.5, "bce": 0.5}, "batch": True}},
}


def prepare(work: Path, size: int, seed: int = 0) -> tuple[Any, Path, int]:
    """The sample scene and its chip store (chips 128 px, blocks of 256; halved for small scenes)."""
    files = make_sample(work / "sample", size=size, seed=seed, overwrite=True)
    chip = 128 if size >= 512 else 64
    tile = config.build(config.TileConfig, {
        "image": str(files.scene_a), "labels": str(files.labels), "clouds": str(files.scene_a_scl),
        "size": chip, "overlap": 0, "min_valid": 0.3, "seed": seed,
        "split": {"block": 2 * chip, "val": 0.2, "test": 0.2}})
    build_chip_store(tile, work / "chips", overwrite=True)
    return files, work / "chips", chip


def train_with(loss: str, chips: Path, chip: int, work: Path, epochs: int, seed: int = 0) -> FitResult:
    """Train the U-Net with one of LOSSES; returns fit's result (val_dice, test_dice, bundle...)."""
    cfg = config.build(config.TrainRunConfig, {
        "seed": seed, "data": {"chips": str(chips)}, "loss": LOSSES[loss],
        "train": {"epochs": epochs, "batch_size": 16}, "output": str(work / loss.replace(" ", "_"))})
    result = fit(cfg)
    assert result is not None, "one process: rank 0 reports"
    return result
