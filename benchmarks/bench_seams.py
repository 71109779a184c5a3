"""Seams: how much probabilities jump across tile edges, with and without overlap blending.

Predicts the demo scene with the demo's model on 64-pixel tiles, once with no overlap (hard tile
edges) and once with overlap 16 (raised-cosine blending), and prints the mean absolute difference
(percentage points) between neighbouring pixels across tile edges vs inside tiles.

    .venv/bin/python benchmarks/bench_seams.py [--bundle runs/demo/model.pt]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import rasterio

from wetmap.config import PredictConfig
from wetmap.io.windows import TileGrid
from wetmap.model.bundle import load_bundle
from wetmap.predict.mosaic import predict_scene
from wetmap.sample import make_sample

SIZE = 64


def edge_vs_inside(prob: np.ndarray, overlap: int) -> tuple[float, float]:
    """Mean |Δp| between horizontal neighbours across tile edges, and elsewhere."""
    tiles = TileGrid(prob.shape[1], prob.shape[0], SIZE, overlap)
    ends = {s + SIZE for s in tiles.col_starts[:-1]} | set(tiles.col_starts[1:])
    ok = (prob[:, :-1] != 255) & (prob[:, 1:] != 255)
    diff = np.abs(np.diff(prob.astype(np.float64), axis=1))
    at_edge = np.zeros(diff.shape[1], bool)
    at_edge[[e - 1 for e in ends if 0 < e < prob.shape[1]]] = True
    return diff[:, at_edge][ok[:, at_edge]].mean(), diff[:, ~at_edge][ok[:, ~at_edge]].mean()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", default="runs/demo/model.pt", help="a trained bundle (make demo writes one)")
    args = parser.parse_args()
    bundle = load_bundle(args.bundle)
    with tempfile.TemporaryDirectory() as tmp:
        files = make_sample(Path(tmp) / "s", size=1024)
        for overlap in (0, 16):
            out = Path(tmp) / f"o{overlap}.tif"
            predict_scene(bundle, files.scene_a, out, clouds=files.scene_a_scl, probabilities=True,
                          cfg=PredictConfig(tile_size=SIZE, overlap=overlap, batch_size=16, precision="fp32"))
            with rasterio.open(out.with_name(f"o{overlap}_probability.tif")) as src:
                edge, inside = edge_vs_inside(src.read(1), overlap)
            print(f"overlap {overlap:>2}: mean |Δp| across tile edges {edge:5.2f}, inside tiles {inside:5.2f} "
                  f"-> ratio {edge / inside:.2f}")


if __name__ == "__main__":
    main()
