"""fp32 vs bf16 autocast (+ channels_last) for sliding-window prediction on this machine's CPU.

Predicts the sample scene with the demo's model both ways, in one run: time of each, the speed-up,
and how far the predictions differ (probability and class agreement on clear pixels).

    .venv/bin/python benchmarks/bench_predict_precision.py [--bundle runs/demo/model.pt]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import rasterio

from wetmap.config import PredictConfig
from wetmap.model.bundle import load_bundle
from wetmap.predict.mosaic import predict_scene
from wetmap.runtime import cpu_has_bf16
from wetmap.sample import make_sample


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", default="runs/demo/model.pt", help="a trained bundle (make demo writes one)")
    parser.add_argument("--size", type=int, default=1024)
    args = parser.parse_args()
    bundle = load_bundle(args.bundle)
    with tempfile.TemporaryDirectory() as tmp:
        files = make_sample(Path(tmp) / "s", size=args.size)
        out, seconds = {}, {}
        for precision in ("fp32", "bf16", "fp32", "bf16"):  # second pass: warm, interleaved
            path = Path(tmp) / f"{precision}.tif"
            res = predict_scene(bundle, files.scene_a, path, clouds=files.scene_a_scl, probabilities=True,
                                overwrite=True, cfg=PredictConfig(device="cpu", precision=precision))
            seconds[precision] = res.seconds
            with rasterio.open(path.with_name(f"{precision}_probability.tif")) as p, rasterio.open(path) as c:
                out[precision] = (p.read(1).astype(np.int16), c.read(1))
    (p32, c32), (p16, c16) = out["fp32"], out["bf16"]
    clear = c32 != 255
    print(f"CPU native bf16: {cpu_has_bf16()}; {args.size}^2 scene, tiles 256 / overlap 64")
    print(f"  fp32 {seconds['fp32']:.2f} s, bf16 + channels_last {seconds['bf16']:.2f} s "
          f"-> speed-up {seconds['fp32'] / seconds['bf16']:.2f}x")
    print(f"  probability (percent): max |diff| {np.abs(p32 - p16)[clear].max()}, "
          f"mean {np.abs(p32 - p16)[clear].mean():.3f}; classes agree on {(c32 == c16)[clear].mean():.4%} of clear pixels")


if __name__ == "__main__":
    main()
