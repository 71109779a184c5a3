"""Masked Dice vs unmasked Dice vs BCE on the sample scene: same data, budget and seed.

Three trainings of the demo's U-Net on one chip store (train / val / test by spatial block):
  masked Dice   — cloud, shadow and no-data pixels give no loss (wetmap's default);
  unmasked Dice — cloud pixels kept, with their reference labels (what a cloud-blind loss does);
  BCE           — masked binary cross-entropy alone;
and, for reference, masked Dice + BCE (the demo's loss).
Prints each model's Dice on the clear pixels of the test chips.

    .venv/bin/python benchmarks/bench_losses_experiment.py [--size 1024] [--epochs 30]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from wetmap import config
from wetmap.chips import build_chip_store
from wetmap.sample import make_sample
from wetmap.train import fit

RUNS = {
    "masked Dice": {"name": "dice", "masked": True, "options": {"batch": True}},
    "unmasked Dice": {"name": "dice", "masked": False, "options": {"batch": True}},
    "BCE": {"name": "bce", "masked": True, "options": {}},
    "masked Dice+BCE": {"name": "composite", "masked": True,
                        "options": {"terms": {"dice": 0.5, "bce": 0.5}, "batch": True}},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        files = make_sample(Path(tmp) / "sample", size=args.size, seed=args.seed)
        tile = config.build(config.TileConfig, {
            "image": str(files.scene_a), "labels": str(files.labels), "clouds": str(files.scene_a_scl),
            "size": 128, "overlap": 0, "min_valid": 0.3, "seed": args.seed,
            "split": {"block": 256, "val": 0.2, "test": 0.2}})
        chips = build_chip_store(tile, Path(tmp) / "chips")
        print(f"sample {args.size}^2, seed {args.seed}: chips {chips.chips}, {args.epochs} epochs each")
        results = {}
        for name, loss in RUNS.items():
            cfg = config.build(config.TrainRunConfig, {
                "seed": args.seed, "data": {"chips": str(Path(tmp) / "chips"), "chip_size": 128},
                "loss": loss, "train": {"epochs": args.epochs, "batch_size": 16},
                "output": str(Path(tmp) / name.replace(" ", "_"))})
            start = time.perf_counter()
            results[name] = fit(cfg)
            print(f"  {name:<14} test Dice (clear pixels) {results[name]['test_dice']:.3f}   "
                  f"val {results[name]['val_dice']:.3f}   {time.perf_counter() - start:.0f} s", flush=True)
    best = max(results, key=lambda n: results[n]["test_dice"])
    print(f"best on clear test pixels: {best}")


if __name__ == "__main__":
    main()
