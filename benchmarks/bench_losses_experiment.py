"""Masked Dice vs unmasked Dice vs BCE on the sample scene: same data, budget and seed.

Trainings of the demo's U-Net on one chip store (train / val / test by spatial block):
  masked Dice   — cloud, shadow and no-data pixels give no loss (wetmap's default);
  unmasked Dice — cloud pixels kept, with their reference labels (what a cloud-blind loss does);
  BCE           — masked binary cross-entropy alone;
and, for reference, masked Dice + BCE (the demo's loss). Prints each model's Dice on the clear
pixels of the test chips. The experiment itself is wetmap.loss_study (also the notebook's).

    .venv/bin/python benchmarks/bench_losses_experiment.py [--size 1024] [--epochs 30]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from wetmap.train.loss_study import LOSSES, prepare, train_with


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        _, chips, chip = prepare(Path(tmp), args.size, args.seed)
        print(f"sample {args.size}^2, seed {args.seed}: chips of {chip} px, {args.epochs} epochs each")
        results = {}
        for name in LOSSES:
            start = time.perf_counter()
            results[name] = train_with(name, chips, chip, Path(tmp), args.epochs, args.seed)
            print(f"  {name:<16} test Dice (clear pixels) {results[name].test_dice:.3f}   "
                  f"val {results[name].val_dice:.3f}   {time.perf_counter() - start:.0f} s", flush=True)
    best = max(results, key=lambda n: results[n].test_dice)
    print(f"best on clear test pixels: {best}")


if __name__ == "__main__":
    main()
