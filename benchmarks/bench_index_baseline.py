"""Best Dice of a single-pixel NDVI / NDWI / MNDWI threshold on the sample scene (clear pixels).

The bar a wetland model must clear; quoted in the README.

    .venv/bin/python benchmarks/bench_index_baseline.py [--size 1024] [--seed 0]
"""

from __future__ import annotations

import argparse
import tempfile

from wetmap.evaluate.baseline import best_index_dice
from wetmap.sample import make_sample


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        files = make_sample(tmp, size=args.size, seed=args.seed)
        scores = best_index_dice(files.scene_a, files.scene_a_scl, files.labels)
    print(f"sample scene {args.size}x{args.size}, seed {args.seed}: best single-threshold Dice on clear pixels")
    for name, dice in scores.items():
        print(f"  {name:<6} {dice:.3f}")


if __name__ == "__main__":
    main()
