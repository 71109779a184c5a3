"""The `wetmap` commands: each parses its flags into a config and calls one stage function.

Stage modules are imported inside the commands, so `wetmap --help` and a bad flag answer at once.
"""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import click
from rich.table import Table

from wetmap import __version__, config
from wetmap.cli.options import (
    CLOUDS_HELP,
    SCENE_HELP,
    bands_option,
    console,
    crs_option,
    given,
    label_map,
    label_map_option,
    level_option,
    names,
    overrides_option,
    quiet_libraries,
    quiet_option,
    scale_options,
)
from wetmap.errors import JobBusy, JobFailed, WetmapError
from wetmap.progress import show as show_progress


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="wetmap")
def cli() -> None:
    """Map wetlands from Sentinel-2 / Landsat scenes, clouds masked end to end."""
    quiet_libraries()


@cli.command()
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--size", default=1024, show_default=True, type=click.IntRange(128, 16384),
              help="Scene width and height in pixels.")
@click.option("--seed", default=0, show_default=True, type=int, help="Same seed, same bytes.")
@click.option("--overwrite", is_flag=True, help="Replace sample files already in OUT_DIR.")
def sample(out_dir: Path, size: int, seed: int, overwrite: bool) -> None:
    """Write a synthetic Sentinel-2 L2A-like sample area with known truth to OUT_DIR."""
    from wetmap.sample import make_sample

    files = make_sample(out_dir, size=size, seed=seed, overwrite=overwrite)
    console.print(f"sample scene ({size}x{size}, seed {seed}) written to {out_dir}:")
    for name, path in vars(files).items():
        console.print(f"  {name:<12} {path}")


@cli.command()
@click.option("--image", help=SCENE_HELP)
@click.option("--labels", help="Label raster (any grid / CRS) or wetland polygons.")
@click.option("--clouds", help=CLOUDS_HELP)
@level_option
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False, path_type=Path), help="Chip store folder.")
@click.option("--size", type=int, help="Chip size in pixels (default 256).")
@click.option("--overlap", type=int, help="Overlap between neighbouring chips in pixels (default 32).")
@click.option("--min-valid", type=float, help="Skip chips with a smaller clear, labelled fraction (default 0.5).")
@click.option("--split-regions", type=click.Path(path_type=Path),
              help="Split by the regions of this file instead of by block.")
@click.option("--compress/--no-compress", default=None,
              help="LZ4-compress the chips: a store about half the size, slower tiling (default: no).")
@click.option("--unlabelled/--no-unlabelled", default=None,
              help="Also store clear chips without labels, for pretraining (default: no).")
@click.option("--config", "config_path", type=click.Path(path_type=Path), help="Tiling YAML (see configs/tile.yaml).")
@click.option("--overwrite", is_flag=True, help="Replace an existing chip store.")
@bands_option
@label_map_option
@scale_options
@quiet_option
@overrides_option
def tile(image: str | None, labels: str | None, clouds: str | None, level: str | None, output: Path, size: int | None,
         overlap: int | None, min_valid: float | None, split_regions: Path | None, compress: bool | None,
         unlabelled: bool | None, config_path: Path | None, overwrite: bool, band_names: str | None,
         label_map_text: str | None,
         workers: int | None, scheduler: str | None, quiet: bool, overrides: tuple[str, ...]) -> None:
    """Cut training chips (image, label, valid mask) from a scene into a Zarr chip store, with Dask."""
    show_progress(quiet)
    extra = given(image=image, labels=labels, clouds=clouds, size=size, overlap=overlap, min_valid=min_valid,
                  compress=compress, unlabelled=unlabelled, band_names=names(band_names),
                  label_values=label_map(label_map_text),
                  split=given(regions=str(split_regions) if split_regions else None) or None,
                  cloud=given(level=level) or None)
    cfg = config.load(config.TileConfig, config_path, extra, overrides)
    from wetmap.chips.build import build_chip_store
    from wetmap.runtime import dask_client

    with dask_client(workers, scheduler) as client:
        summary = build_chip_store(cfg, output, overwrite=overwrite, client=client)
    scene = summary.inputs.scene
    console.print(f"scene: {scene.source} ({', '.join(x for x in (scene.form, scene.level) if x)}); clouds: "
                  f"{summary.inputs.mask.describe() if summary.inputs.mask else 'none'}")
    for note in scene.notes:
        console.print(f"  {note}")
    kept = ", ".join(f"{n} {split}" for split, n in summary.chips.items())
    console.print(f"{sum(summary.chips.values())} chips kept of {summary.tiles} tiles ({kept}) in {summary.path}")
    for split, reason in summary.empty.items():
        console.print(f"  {split} split empty: {reason}")
    console.print("band means: " + ", ".join(f"{b} {m:.0f}" for b, m in zip(cfg.bands, summary.mean)))


@cli.command()
@click.option("--config", "config_path", required=True, type=click.Path(path_type=Path),
              help="Training YAML (see configs/train.yaml).")
@click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path), help="Run folder (overrides `output`).")
@click.option("--resume", is_flag=True, help="Continue an interrupted run from its last checkpoint.")
@click.option("--overwrite", is_flag=True, help="Replace an existing model bundle in the run folder.")
@overrides_option
def train(config_path: Path, output: Path | None, resume: bool, overwrite: bool, overrides: tuple[str, ...]) -> None:
    """Train a TorchGeo segmentation model under the cloud-masked Dice loss."""
    cfg = config.load(config.TrainRunConfig, config_path, given(output=str(output) if output else None), overrides)
    from wetmap.train.fit import fit

    quiet_libraries()  # again: importing Lightning sets its loggers back to INFO

    result = fit(cfg, resume=resume, overwrite=overwrite)
    if result is None:  # a non-zero rank of a multi-GPU run: rank 0 reports
        return
    console.print(f"trained {cfg.model.arch}/{cfg.model.backbone} for {result.epochs_run} epochs on "
                  f"{result.chips_train} chips ({result.chips_val} for validation) in "
                  f"{result.train_seconds:.0f} s: {result.seconds_per_chip_epoch * 1000:.1f} ms per chip-epoch")
    if result.pretrain is not None:
        pre = result.pretrain
        console.print(f"pretrained on {pre['chips']} chips (labelled or not) for {pre['epochs']} epochs in "
                      f"{pre['seconds']:.0f} s: reconstruction loss {pre['loss_first_epoch']:.3f} -> "
                      f"{pre['loss_last_epoch']:.3f}")
    console.print(f"clouds: {result.clouds}")
    console.print(f"validation Dice (wetland, clear pixels): {result.val_dice:.3f} at P(wetland) > "
                  f"{result.threshold:g}")
    console.print(f"model bundle: {result.bundle}")


@cli.command()
@click.argument("bundle_path", metavar="MODEL_BUNDLE", type=click.Path(path_type=Path))
@click.argument("images", metavar="SCENE...", nargs=-1, required=True)
@click.option("-o", "--output", required=True, help="Class raster (.tif, COG): a path, or a URL (s3://..., any fsspec URL).")
@click.option("--clouds", multiple=True,
              help="Cloud mask per SCENE, in the same order: 'auto' (the default: the product's own, else the "
                   "detector's), 'detect', 'none', or a mask file (SCL, QA_PIXEL, 0/1, a `wetmap clouds` map).")
@level_option
@click.option("--probabilities/--no-probabilities", default=None,
              help="Also write OUT_probability.tif (uint8 percent, 255 = no data).")
@click.option("--vectorize/--no-vectorize", default=None, help="Also write wetland polygons with their area to OUT.gpkg.")
@click.option("--min-area", "min_area", type=click.FloatRange(0),
              help="With --vectorize: leave out polygons smaller than this many hectares (default 0).")
@click.option("--crs", callback=crs_option, help="Output CRS (default: the first scene's), e.g. EPSG:32632.")
@click.option("--resolution", type=click.FloatRange(0, min_open=True), help="Output pixel size in CRS units.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), help="Where the model runs (default auto).")
@click.option("--tile-size", type=int, help="Sliding-window tile size in pixels.")
@click.option("--overlap", type=int, help="Overlap between neighbouring tiles in pixels.")
@click.option("--tta", type=click.Choice(["none", "flips", "dihedral"]),
              help="Test-time augmentation: average 4 flipped or all 8 flipped / rotated views (4x / 8x the model's time).")
@click.option("--config", "config_path", type=click.Path(path_type=Path), help="Prediction YAML (see configs/predict.yaml).")
@click.option("--overwrite", is_flag=True, help="Replace existing outputs.")
@click.option("--force", is_flag=True, help="Predict a scene whose values lie far outside the model's training range.")
@bands_option
@scale_options
@quiet_option
@overrides_option
def predict(bundle_path: Path, images: tuple[str, ...], output: str, clouds: tuple[str, ...], level: str | None,
            probabilities: bool | None,
            vectorize: bool | None, min_area: float | None, crs: str | None, resolution: float | None, device: str | None,
            tile_size: int | None, overlap: int | None, tta: str | None, config_path: Path | None, overwrite: bool,
            force: bool, band_names: str | None, workers: int | None, scheduler: str | None, quiet: bool,
            overrides: tuple[str, ...]) -> None:
    """Predict wetlands over one or several scenes into one QGIS-ready Cloud-Optimized GeoTIFF.

    Several scenes make one cloud-aware mosaic: where one scene is cloudy and another clear, the
    clear one decides; where several are clear, they are blended by confidence.
    """
    show_progress(quiet)
    extra = given(device=device, tile_size=tile_size, overlap=overlap, tta=tta, probabilities=probabilities,
                  vectorize=vectorize, min_area_ha=min_area, crs=crs, resolution=resolution,
                  cloud=given(level=level) or None)
    cfg = config.load(config.PredictConfig, config_path, extra, overrides)
    from wetmap.predict.mosaic import predict_mosaic
    from wetmap.runtime import dask_client

    quiet_libraries()
    with dask_client(workers, scheduler) as client:
        result = predict_mosaic(bundle_path, images, output, clouds=list(clouds) if clouds else None, cfg=cfg,
                                client=client, overwrite=overwrite, band_names=names(band_names), force=force)
    where = f"{result.device} ({result.precision})" if client is None else f"Dask workers ({result.precision})"
    console.print(f"predicted {result.scenes} scene(s), {result.pixels:,} output pixels on {where} in "
                  f"{result.seconds:.1f} s ({result.pixels / max(result.seconds, 1e-9) / 1e6:.2f} Mpx/s)")
    console.print(f"clear: {result.valid_fraction:.1%} of the mosaic; "
                  f"wetland: {result.wetland_fraction:.1%} of clear pixels")
    for line in result.scenes_read:
        console.print(f"scene {line}")
    console.print(f"classes: {result.classes}")
    for label, path in (("probability", result.probabilities), ("polygons", result.vectors)):
        if path is not None:
            console.print(f"{label}: {path}")


@cli.command()
@click.argument("image", metavar="SCENE")
@click.option("-o", "--output", required=True,
              help="Cloud map (.tif, COG) with a .qml beside it: a path, or a URL (s3://..., any fsspec URL).")
@click.option("--clouds", default="auto", show_default=True, help=CLOUDS_HELP)
@level_option
@click.option("--dilate", type=click.IntRange(0, 64), help="Grow masked pixels by N pixels, as the other stages would.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), help="Where the detector runs (default auto).")
@click.option("--overwrite", is_flag=True, help="Replace an existing map.")
@bands_option
@quiet_option
@overrides_option
def clouds(image: str, output: str, clouds: str, level: str | None, dilate: int | None, device: str | None,
           overwrite: bool, band_names: str | None, quiet: bool, overrides: tuple[str, ...]) -> None:
    """Write the cloud mask SCENE would be read with (clear, cloud, shadow, grown, no data), to look at in QGIS.

    The map is a mask file too: `--clouds MAP.tif` uses it in tile, train, predict and evaluate.
    """
    show_progress(quiet)
    cfg = config.load(config.CloudConfig, None, given(level=level, dilate=dilate, device=device), overrides)
    from wetmap.masks.cloudmap import write_cloud_map

    result = write_cloud_map(image, output, clouds=clouds, cloud=cfg, band_names=names(band_names),
                             overwrite=overwrite)
    console.print(f"scene: {result.scene.source} ({', '.join(x for x in (result.scene.form, result.scene.level) if x)})")
    console.print(f"clouds: {result.mask.describe()}")
    console.print(", ".join(f"{name} {share:.1%}" for name, share in result.fractions.items()) +
                  f" of {result.pixels:,} pixels")
    console.print(f"map: {result.path}")


def _fmt(value: float | None, spec: str = ".3f") -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


@cli.command()
@click.argument("pred")
@click.argument("truth")
@click.option("--regions", required=True, help="Vector file of regions (any CRS).")
@click.option("-o", "--output", required=True, help="Report folder: a path, or a URL (s3://..., any fsspec URL).")
@click.option("--clouds",
              help="Extra cloud mask (SCL, QA_PIXEL, 0/1, or a `wetmap clouds` map): these pixels are not scored.")
@click.option("--region-field", help="Attribute holding the region name (default: name, region or id).")
@click.option("--config", "config_path", type=click.Path(path_type=Path),
              help="Evaluation YAML (see configs/evaluate.yaml).")
@click.option("--overwrite", is_flag=True, help="Replace an existing report.")
@label_map_option
@quiet_option
@overrides_option
def evaluate(pred: str, truth: str, regions: str, output: str, clouds: str | None, region_field: str | None,
             config_path: Path | None, overwrite: bool, label_map_text: str | None, quiet: bool,
             overrides: tuple[str, ...]) -> None:
    """Score a prediction per region of a vector file: Dice, IoU, precision, recall, areas."""
    show_progress(quiet)
    extra = given(region_field=region_field, label_values=label_map(label_map_text))
    cfg = config.load(config.EvaluateConfig, config_path, extra, overrides)
    from wetmap.evaluate.report import evaluate as run_evaluate

    result = run_evaluate(pred, truth, regions, output, clouds=clouds, cfg=cfg, overwrite=overwrite)
    table = Table(title=f"{result.class_name} Dice per region (clear pixels)")
    for col in ("region", "Dice", "IoU", "precision", "recall", "pred ha", "ref ha", "valid"):
        table.add_column(col, justify="left" if col == "region" else "right")
    for r in result.regions:
        s = r.scores
        table.add_row(r.name, _fmt(s.dice), _fmt(s.iou), _fmt(s.precision), _fmt(s.recall),
                      _fmt(r.pred_area_ha, ".1f"), _fmt(r.ref_area_ha, ".1f"), _fmt(r.valid_fraction, ".0%"))
    console.print(table)
    console.print(f"overall Dice: micro {_fmt(result.micro.dice)}, macro {_fmt(result.macro.dice)}")
    console.print(f"report: {output.rstrip('/')}/report.html (also report.md, report.json, regions.csv, "
                  f"regions.gpkg styled by Dice for QGIS)")


@cli.command("run")
@click.argument("job", type=click.Path(path_type=Path))
@click.option("--wait", is_flag=True, help="If the job is already running, wait for it instead of exiting.")
@click.option("--force", is_flag=True, help="Run even if the latest results are up to date.")
@click.option("--since", type=click.DateTime(["%Y-%m-%d"]),
              help="Compare with the newest complete run of this day or before (default: the latest run).")
def run_command(job: Path, wait: bool, force: bool, since: dt.datetime | None) -> None:
    """Run a regional mapping job (configs/jobs/<region>.yaml): predict, clip, evaluate, and
    compare with an earlier run (wetland gained and lost per region).

    Exit codes for schedulers: 0 done or up to date, 1 failed or already running, 2 bad input.
    """
    from wetmap.io.failures import write_failure
    from wetmap.jobs import run_job

    try:
        result = run_job(job, wait=wait, force=force, since=since.date() if since else None)
    except JobBusy as exc:
        raise JobBusy(f"{job}: {exc}") from None
    except WetmapError:
        raise
    except Exception as exc:  # a scheduler needs exit 1 and one line for any failure; the log has the traceback
        failure = write_failure(getattr(exc, "filename", None) or job, exc) if isinstance(exc, OSError) else None
        if failure is not None:
            raise failure from exc
        raise JobFailed(f"{job}: job failed: {type(exc).__name__}: {exc}".splitlines()[0]) from exc
    if result.status == "up to date":
        console.print(f"up to date: {result.run_dir}")
        return
    metrics = result.manifest["metrics"]
    dice = f", micro Dice {metrics['dice_micro']:.3f}" if metrics.get("dice_micro") is not None else ""
    console.print(f"done: {result.run_dir} ({metrics['valid_fraction']:.0%} clear{dice})")
    change = result.manifest.get("change") or {}
    if change.get("previous"):
        console.print(f"since {change['previous']}: {change['gained_ha']:.1f} ha wetland gained, "
                      f"{change['lost_ha']:.1f} ha lost (pixels clear in both runs; change.csv, change.tif)")


@cli.command()
@click.argument("job", type=click.Path(path_type=Path))
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV (one row per run and region) instead of a table.")
def history(job: Path, as_csv: bool) -> None:
    """Wetland area per region over every complete run of a job, with gains and losses."""
    from wetmap.jobs.history import HistoryRow, job_history

    rows, without = job_history(job)
    if as_csv:
        import csv
        import sys

        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(HistoryRow.FIELDS)
        for row in rows:
            writer.writerow(["" if v is None else v for v in (getattr(row, f) for f in HistoryRow.FIELDS)])
        return
    table = Table(title="wetland per region and run (clear pixels)")
    for col in ("run", "region", "wetland ha", "clear", "gained ha", "lost ha"):   # names folded, never cut
        table.add_column(col, justify="left" if col in ("run", "region") else "right", overflow="fold")
    for r in rows:
        table.add_row(r.run, r.region, _fmt(r.wetland_ha, ".1f"), _fmt(r.clear_fraction, ".0%"),
                      _fmt(r.gained_ha, ".1f"), _fmt(r.lost_ha, ".1f"))
    console.print(table)
    compared = {r.run: r.previous for r in rows if r.previous}
    console.print("gains and losses on pixels clear in both runs; " + (", ".join(
        f"{run} since {before}" for run, before in compared.items()) or "no run compared yet"))
    if without:
        console.print(f"runs without change.json (made by an older wetmap): {', '.join(without)}")


