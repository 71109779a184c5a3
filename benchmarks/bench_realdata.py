"""wetmap against a spectral index and a random forest on real scenes (../shared/realdata).

For each case folder: tile with the case's README settings (regions' `split` field), train with
configs/train.yaml, predict the whole scene, and score the `test` regions with `wetmap evaluate`.
Beside it, on exactly the same clear, labelled test pixels (those wetmap scored): the best NDWI and
MNDWI thresholds and a per-pixel random forest on the bands and indices (scikit-learn, the
practitioner's baseline), each chosen or trained on the train and val regions' pixels, the same
pixels wetmap trains and selects its model on. Target (issue 17): wetmap >= best baseline + 0.05
where that best is below 0.90, else within 0.01 of it.

    .venv/bin/python benchmarks/bench_realdata.py [--cases tucurui-landsat5,...] [--epochs 40]
        [--set KEY=VALUE ...] [--ablation [--variants A,B]] [--tta] [--windows 32:8,128:32]
        [--json FILE] [--keep DIR]

`--ablation` trains each variant of `ablation()` on each case (index inputs, augmentation, loss,
sampling), one setting changed at a time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import rasterio
import yaml
from rasterio.features import rasterize

from wetmap.evaluate.baseline import apply_threshold, best_threshold, normalized_difference

ROOT = Path(__file__).resolve().parents[1]
REALDATA = ROOT.parent / "shared" / "realdata"
WETMAP = [sys.executable, "-m", "wetmap"]

# `wetmap tile` settings of each case's README; a case folder not named here gets DEFAULT_TILE.
TILE = {
    "havelland-s2l1c": {"size": 64, "min_valid": 0.05},
    "ireland-s2l2a": {"size": 64, "min_valid": 0.1},
    "juruti-s2l2a": {"size": 32, "min_valid": 0.01},
    "tucurui-landsat5": {"size": 32, "min_valid": 0.01},
}
DEFAULT_TILE = {"size": 32, "min_valid": 0.01}

ALL_INDICES = ["NDWI", "MNDWI", "NDVI", "NDMI"]


def ablation(base: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Small-data ablation: one setting of configs/train.yaml changed at a time."""
    has_indices = bool(base.get("model", {}).get("indices"))
    variants: dict[str, dict[str, Any]] = {
        "default": {},
        ("no index inputs" if has_indices else "index inputs"): {"model": {"indices": [] if has_indices else ALL_INDICES}},
        ("no clear channel" if base.get("model", {}).get("clear_channel") else "clear channel"):
            {"model": {"clear_channel": not base.get("model", {}).get("clear_channel", False)}},
        "augment none": {"train": {"augment": "none"}},
        "augment dihedral": {"train": {"augment": "dihedral"}},
        "augment full": {"train": {"augment": "full"}},
        "loss dice": {"loss": {"name": "dice", "options": {"batch": True}}},
        "loss bce": {"loss": {"name": "bce", "options": {}}},
        "sampling balanced": {"train": {"sampling": "balanced"}},
        "threshold 0.5": {"train": {"calibrate_threshold": False}},
        "pretrain 20 epochs": {"train": {"pretrain_epochs": 20}},
    }
    current = base.get("train", {}).get("augment", "dihedral")
    return {k: v for k, v in variants.items() if k != f"augment {current}"}


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    tp = int(np.count_nonzero(pred & truth))
    denom = int(np.count_nonzero(pred)) + int(np.count_nonzero(truth))
    return 2 * tp / denom if denom else float("nan")


def features(image: np.ndarray) -> np.ndarray:
    """(pixels, 9): the six bands (reflectance) and NDWI, MNDWI, NDVI."""
    blue, green, red, nir, swir1, swir2 = image.astype(np.float32) / 10000
    nd = normalized_difference
    return np.stack([blue, green, red, nir, swir1, swir2, nd(green, nir), nd(green, swir1), nd(nir, red)], -1)


def baselines(case: Path, pred: np.ndarray, seed: int) -> dict[str, float]:
    """Test Dice of NDWI / MNDWI thresholds and a random forest, fitted on train + val pixels."""
    from sklearn.ensemble import RandomForestClassifier

    with rasterio.open(case / "image.tif") as src:
        image = src.read()
    labels = labels_of(case)
    split = split_raster(case, *grid_of(case))
    usable = (pred != 255) & (labels != 255)
    fit_px, test_px = usable & np.isin(split, (1, 2)), usable & (split == 3)
    x = features(image.reshape(image.shape[0], -1)).reshape(*labels.shape, -1)
    truth = labels == 1
    out = {}
    for name, col in (("NDWI", 6), ("MNDWI", 7)):
        _, t, sign = best_threshold(x[fit_px][:, col], truth[fit_px], steps=2048)
        out[name] = dice(apply_threshold(x[test_px][:, col], t, sign), truth[test_px])
    rng = np.random.default_rng(seed)
    rows = np.flatnonzero(fit_px.ravel())
    rows = rng.choice(rows, min(len(rows), 200_000), replace=False)
    forest = RandomForestClassifier(n_estimators=200, n_jobs=-1, random_state=seed)
    forest.fit(x.reshape(-1, x.shape[-1])[rows], truth.ravel()[rows])
    out["random forest"] = dice(forest.predict(x[test_px]).astype(bool), truth[test_px])
    out["wetmap (own count)"] = dice(pred[test_px] == 1, truth[test_px])
    return out


def grid_of(case: Path) -> tuple[Any, Any, tuple[int, int]]:
    with rasterio.open(case / "image.tif") as src:
        return src.transform, src.crs, src.shape


def labels_of(case: Path) -> np.ndarray:
    with rasterio.open(case / "labels.tif") as src:
        return src.read(1)


def split_raster(case: Path, transform: Any, crs: Any, shape: tuple[int, int]) -> np.ndarray:
    """1 train, 2 val, 3 test, 0 elsewhere; regions burnt by pixel centre, as `wetmap evaluate` does."""
    regions = gpd.read_file(case / "regions.gpkg").to_crs(crs)
    codes = {"train": 1, "val": 2, "test": 3}
    shapes = [(g, codes[s]) for g, s in zip(regions.geometry, regions["split"]) if s in codes]
    return rasterize(shapes, out_shape=shape, transform=transform, fill=0, dtype="uint8")


def wetmap(*args: str) -> float:
    start = time.perf_counter()
    run = subprocess.run([*WETMAP, *args], capture_output=True, text=True, cwd=ROOT)
    if run.returncode:
        raise SystemExit(f"wetmap {args[0]} failed ({run.returncode}): {run.stderr.strip()[-2000:]}")
    return time.perf_counter() - start


def score(case: Path, work: Path, clouds: list[str], test_regions: Path, *extra: str) -> tuple[float, float, np.ndarray]:
    """Predict the scene with the run's bundle and score the test regions: Dice, predict seconds, map."""
    pred_path = work / "pred.tif"
    seconds = wetmap("predict", str(work / "run" / "model.pt"), str(case / "image.tif"), *clouds,
                     "-o", str(pred_path), "--overwrite", *extra)
    wetmap("evaluate", str(pred_path), str(case / "labels.tif"), "--regions", str(test_regions),
           "-o", str(work / "report"), "--overwrite")
    report = json.loads((work / "report" / "report.json").read_text())
    with rasterio.open(pred_path) as src:
        pred = src.read(1)
    return report["overall"]["micro"]["dice"], seconds, pred


def run_case(case: Path, work: Path, variants: dict[str, dict[str, Any]], epochs: int | None,
             sets: list[str], seed: int, tta: bool, windows: list[tuple[int, int]]) -> dict[str, Any]:
    tile = TILE.get(case.name, DEFAULT_TILE)
    clouds = ["--clouds", str(case / "clouds.tif")] if (case / "clouds.tif").exists() else ["--clouds", "none"]
    chips = work / "chips"
    seconds = {"tile": wetmap("tile", "--image", str(case / "image.tif"), "--labels", str(case / "labels.tif"),
                              *clouds, "-o", str(chips), "--size", str(tile["size"]), "--overlap", "0",
                              "--min-valid", str(tile["min_valid"]), "--split-regions", str(case / "regions.gpkg"),
                              "--set", "split.region_field=split", "--unlabelled", "--overwrite")}
    regions = gpd.read_file(case / "regions.gpkg")
    test_regions = work / "test_regions.gpkg"
    regions[regions["split"] == "test"].to_file(test_regions, layer="regions")
    result: dict[str, Any] = {"case": case.name, "tile": tile, "variants": {}}
    base_cfg = yaml.safe_load((ROOT / "configs" / "train.yaml").read_text())
    for name, edit in variants.items():
        cfg = merge(base_cfg, {"data": {"chips": str(chips)}, "output": str(work / "run"), "seed": seed, **edit})
        if epochs:
            cfg["train"]["epochs"] = epochs
        cfg_path = work / "train.yaml"
        cfg_path.write_text(yaml.safe_dump(cfg))
        sets_args = [a for s in sets for a in ("--set", s)]
        timing = {"train": wetmap("train", "--config", str(cfg_path), *sets_args, "--overwrite")}
        metrics = json.loads((work / "run" / "metrics.json").read_text())
        test_dice, timing["predict"], pred = score(case, work, clouds, test_regions)
        row = {"wetmap": test_dice, "val_dice": metrics.get("val_dice"), "threshold": metrics.get("threshold"),
               "epochs_run": metrics.get("epochs_run"), "seconds": {**seconds, **timing},
               "seconds_per_chip_epoch": metrics.get("seconds_per_chip_epoch")}
        if name == next(iter(variants)):   # baselines once per case: they do not depend on the variant
            result["baselines"] = baselines(case, pred, seed)
            result["test_pixels"] = int(np.count_nonzero((pred != 255) & (split_raster(case, *grid_of(case)) == 3)
                                                         & (labels_of(case) != 255)))
            if tta:   # the same model, its tiles averaged over the 8 flips and turns
                row["tta_dice"], row["seconds"]["predict_tta"], _ = score(case, work, clouds, test_regions,
                                                                          "--tta", "dihedral")
            for size, overlap in windows:   # the same model in other windows than its chips'
                row.setdefault("windows", {})[f"{size}/{overlap}"] = score(
                    case, work, clouds, test_regions, "--tile-size", str(size), "--overlap", str(overlap))[0]
        result["variants"][name] = row
    base = {k: v for k, v in result["baselines"].items() if not k.startswith("wetmap")}
    best = max(base.values())
    result["best_baseline"] = best
    result["target"] = best + 0.05 if best < 0.90 else best - 0.01
    result["met"] = result["variants"][next(iter(variants))]["wetmap"] >= result["target"]
    return result


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """`extra` over `base`, section by section; a loss's `options` are replaced whole."""
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and key != "options" and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", help="comma-separated case folders (default: every case in realdata)")
    parser.add_argument("--epochs", type=int, help="override train.epochs of configs/train.yaml")
    parser.add_argument("--set", dest="sets", action="append", default=[], help="passed to wetmap train")
    parser.add_argument("--ablation", action="store_true", help="also train the ablation variants")
    parser.add_argument("--variants", help="with --ablation: only these variants (comma-separated names)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tta", action="store_true", help="also predict the default model with --tta dihedral")
    parser.add_argument("--windows", help="also predict the default model in these windows: SIZE:OVERLAP,...")
    parser.add_argument("--json", type=Path, help="write the figures here as JSON")
    parser.add_argument("--keep", type=Path, help="keep each case's chips, model and maps under this folder")
    args = parser.parse_args()
    if not REALDATA.is_dir():
        raise SystemExit(f"no real data at {REALDATA}")
    names = args.cases.split(",") if args.cases else sorted(p.name for p in REALDATA.iterdir()
                                                             if (p / "image.tif").exists())
    base = yaml.safe_load((ROOT / "configs" / "train.yaml").read_text())
    variants = ablation(base) if args.ablation else {"default": {}}
    if args.variants:
        variants = {k: v for k, v in variants.items() if k in args.variants.split(",")}
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            work = (args.keep or Path(tmp)) / name
            work.mkdir(parents=True, exist_ok=True)
            windows = [tuple(int(v) for v in w.split(":")) for w in args.windows.split(",")] if args.windows else []
            r = run_case(REALDATA / name, work, variants, args.epochs, args.sets, args.seed, args.tta, windows)
            results.append(r)
            b = r["baselines"]
            print(f"{name}: {r['test_pixels']} clear labelled test px; NDWI {b['NDWI']:.3f}  MNDWI {b['MNDWI']:.3f}  "
                  f"random forest {b['random forest']:.3f}; target {r['target']:.3f}", flush=True)
            for variant, row in r["variants"].items():
                s = row["seconds"]
                print(f"  {variant:<18} wetmap test Dice {row['wetmap']:.3f} (val {row['val_dice']:.3f} at "
                      f"P > {row['threshold']:g}, {row['epochs_run']} epochs)  train {s['train']:.0f} s  "
                      f"{row['seconds_per_chip_epoch'] * 1000:.1f} ms/chip-epoch  predict {s['predict']:.1f} s", flush=True)
                if "tta_dice" in row:
                    print(f"  {'  with --tta':<18} wetmap test Dice {row['tta_dice']:.3f}  predict "
                          f"{s['predict_tta']:.1f} s", flush=True)
                for window, value in row.get("windows", {}).items():
                    print(f"  {'  in ' + window + ' px':<18} wetmap test Dice {value:.3f}", flush=True)
            print(f"  target {'met' if r['met'] else 'NOT met'}", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"cases": results, "cpu_count": os.cpu_count()}, indent=2))


if __name__ == "__main__":
    main()
