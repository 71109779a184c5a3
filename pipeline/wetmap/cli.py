"""The `wetmap` command: parse, build a config, call one stage function, print a summary.

Bad input (a WetmapError, or GDAL refusing a file) is one line on stderr and exit code 2.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from wetmap import __version__, config
from wetmap.errors import EXIT_BAD_INPUT, WetmapError, WetmapWarning
from wetmap.progress import show as show_progress

console = Console(stderr=False, highlight=False, soft_wrap=True)  # long paths stay on one line in logs


def _quiet_libraries() -> None:
    """Keep library chatter (tips, deprecations) out of a scheduler's log; our summary remains."""
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*deterministic.*")
    warnings.filterwarnings("ignore", message=".*overridden `on_after_batch_transfer`.*")
    # train --overwrite replaces its run folder's logs and checkpoints on purpose
    warnings.filterwarnings("ignore", message=".*directory .* exists and is not empty.*")


quiet_option = click.option("-q", "--quiet", is_flag=True,
                            help="No progress: neither the bar (on a terminal) nor the once-a-minute line (in a log).")
overrides_option = click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                                 help="Override a config value, e.g. --set train.epochs=5 (repeatable).")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="wetmap")
def cli() -> None:
    """Map wetlands from Sentinel-2 / Landsat scenes, clouds masked end to end."""
    _quiet_libraries()


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


def _scale_options(fn):
    fn = click.option("--scheduler", metavar="ADDRESS", help="Join a running Dask cluster (tcp://host:8786).")(fn)
    return click.option("--workers", type=click.IntRange(1, 512), help="Run on a local Dask cluster of N processes.")(fn)


SCENE_HELP = ("A scene: GeoTIFF / COG / VRT, Sentinel-2 SAFE folder or .zip, Landsat C2 folder or MTL, "
              "STAC item (file or URL), folder of band files; local, s3:// or https://.")
CLOUDS_HELP = ("Cloud mask: 'auto' (the default: the product's own SCL / QA_PIXEL, else the cloud detector), "
               "'detect' (the detector even where the product has a mask), 'none', or a mask file "
               "(SCL, QA_PIXEL, 0/1 raster, or a `wetmap clouds` map).")
level_option = click.option("--level", type=click.Choice(["L1C", "L2A"]),
                            help="Processing level for the cloud detector where the scene does not say "
                                 "(a plain GeoTIFF): top of atmosphere (L1C) or surface reflectance (L2A).")
bands_option = click.option("--bands", "band_names", metavar="B02,B03,...",
                            help="Name a stacked raster's bands, in order (for files without band descriptions).")


label_map_option = click.option("--label-map", metavar='"wetland=2;other=1;unknown=0"',
                                help="How the label raster's values map to classes (default: they are the class "
                                     "indexes, 0 other, 1 wetland, 255 unknown).")


def _label_map(text: str | None) -> dict[str, list[float]] | None:
    from wetmap.labels import parse_label_map

    return parse_label_map(text) if text else None


def _names(text: str | None) -> list[str] | None:
    return [b.strip() for b in text.split(",") if b.strip()] if text else None


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
@_scale_options
@quiet_option
@overrides_option
def tile(image: str | None, labels: str | None, clouds: str | None, level: str | None, output: Path, size: int | None,
         overlap: int | None, min_valid: float | None, split_regions: Path | None, compress: bool | None,
         unlabelled: bool | None, config_path: Path | None, overwrite: bool, band_names: str | None, label_map: str | None,
         workers: int | None, scheduler: str | None, quiet: bool, overrides: tuple[str, ...]) -> None:
    """Cut training chips (image, label, valid mask) from a scene into a Zarr chip store, with Dask."""
    show_progress(quiet)
    extra: dict = {}
    for key, value in (("image", image), ("labels", labels), ("clouds", clouds), ("size", size),
                       ("overlap", overlap), ("min_valid", min_valid), ("compress", compress), ("unlabelled", unlabelled),
                       ("band_names", _names(band_names)), ("label_values", _label_map(label_map))):
        if value is not None:
            extra[key] = str(value) if isinstance(value, Path) else value
    if split_regions is not None:
        extra.setdefault("split", {})["regions"] = str(split_regions)
    if level is not None:
        extra["cloud"] = {"level": level}
    cfg = config.load(config.TileConfig, config_path, extra, overrides)
    from wetmap.chips import build_chip_store
    from wetmap.cluster import dask_client

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
    extra = {"output": str(output)} if output is not None else {}
    cfg = config.load(config.TrainRunConfig, config_path, extra, overrides)
    from wetmap.train import fit

    _quiet_libraries()  # again: importing Lightning sets its loggers back to INFO

    result = fit(cfg, resume=resume, overwrite=overwrite)
    if not result:  # a non-zero rank of a multi-GPU run: rank 0 reports
        return
    console.print(f"trained {cfg.model.arch}/{cfg.model.backbone} for {result['epochs_run']} epochs on "
                  f"{result['chips_train']} chips ({result['chips_val']} for validation) in "
                  f"{result['train_seconds']:.0f} s: {result['seconds_per_chip_epoch'] * 1000:.1f} ms per chip-epoch")
    if "pretrain" in result:
        pre = result["pretrain"]
        console.print(f"pretrained on {pre['chips']} chips (labelled or not) for {pre['epochs']} epochs in "
                      f"{pre['seconds']:.0f} s: reconstruction loss {pre['loss_first_epoch']:.3f} -> "
                      f"{pre['loss_last_epoch']:.3f}")
    console.print(f"clouds: {result['clouds']}")
    console.print(f"validation Dice (wetland, clear pixels): {result['val_dice']:.3f} at P(wetland) > "
                  f"{result['threshold']:g}")
    console.print(f"model bundle: {result['bundle']}")


@cli.command()
@click.argument("bundle_path", metavar="MODEL_BUNDLE", type=click.Path(path_type=Path))
@click.argument("images", metavar="SCENE...", nargs=-1, required=True)
@click.option("-o", "--output", required=True, help="Class raster (.tif, COG): a path, or a URL (s3://..., any fsspec URL).")
@click.option("--clouds", multiple=True,
              help="Cloud mask per SCENE, in the same order: 'auto' (the default: the product's own, else the "
                   "detector's), 'detect', 'none', or a mask file (SCL, QA_PIXEL, 0/1, a `wetmap clouds` map).")
@level_option
@click.option("--probabilities", is_flag=True, help="Also write OUT_probability.tif (uint8 percent, 255 = no data).")
@click.option("--vectorize", is_flag=True, help="Also write wetland polygons with their area to OUT.gpkg.")
@click.option("--min-area", "min_area", type=click.FloatRange(0), default=0.0, show_default=True,
              help="With --vectorize: leave out polygons smaller than this many hectares.")
@click.option("--crs", help="Output CRS (default: the first scene's), e.g. EPSG:32632.")
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
@_scale_options
@quiet_option
@overrides_option
def predict(bundle_path: Path, images: tuple[str, ...], output: str, clouds: tuple[str, ...], level: str | None,
            probabilities: bool,
            vectorize: bool, min_area: float, crs: str | None, resolution: float | None, device: str | None,
            tile_size: int | None, overlap: int | None, tta: str | None, config_path: Path | None, overwrite: bool,
            force: bool, band_names: str | None, workers: int | None, scheduler: str | None, quiet: bool,
            overrides: tuple[str, ...]) -> None:
    """Predict wetlands over one or several scenes into one QGIS-ready Cloud-Optimized GeoTIFF.

    Several scenes make one cloud-aware mosaic: where one scene is cloudy and another clear, the
    clear one decides; where several are clear, they are blended by confidence.
    """
    show_progress(quiet)
    extra: dict = {}
    for key, value in (("device", device), ("tile_size", tile_size), ("overlap", overlap), ("tta", tta)):
        if value is not None:
            extra[key] = value
    if level is not None:
        extra["cloud"] = {"level": level}
    cfg = config.load(config.PredictConfig, config_path, extra, overrides)
    from wetmap.cluster import dask_client
    from wetmap.io.raster import parse_crs
    from wetmap.predict import predict_mosaic

    _quiet_libraries()
    target_crs = parse_crs(crs) if crs else None
    with dask_client(workers, scheduler) as client:
        result = predict_mosaic(bundle_path, images, output, clouds=list(clouds) if clouds else None, cfg=cfg,
                                probabilities=probabilities, vectorize=vectorize, min_area_ha=min_area,
                                crs=target_crs, resolution=resolution, client=client, overwrite=overwrite,
                                band_names=_names(band_names), force=force)
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
    extra = {k: v for k, v in (("level", level), ("dilate", dilate), ("device", device)) if v is not None}
    cfg = config.load(config.CloudConfig, None, extra, overrides)
    from wetmap.cloudmap import write_cloud_map

    result = write_cloud_map(image, output, clouds=clouds, cloud=cfg, band_names=_names(band_names),
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
             config_path: Path | None, overwrite: bool, label_map: str | None, quiet: bool,
             overrides: tuple[str, ...]) -> None:
    """Score a prediction per region of a vector file: Dice, IoU, precision, recall, areas."""
    show_progress(quiet)
    extra: dict = {}
    if region_field is not None:
        extra["region_field"] = region_field
    if label_map is not None:
        extra["label_values"] = _label_map(label_map)
    cfg = config.load(config.EvaluateConfig, config_path, extra, overrides)
    from wetmap.report import evaluate as run_evaluate

    report = run_evaluate(pred, truth, regions, output, clouds=clouds, cfg=cfg, overwrite=overwrite)
    table = Table(title=f"{report['class']} Dice per region (clear pixels)")
    for col in ("region", "Dice", "IoU", "precision", "recall", "pred ha", "ref ha", "valid"):
        table.add_column(col, justify="left" if col == "region" else "right")
    for r in report["regions"]:
        table.add_row(r["name"], _fmt(r["dice"]), _fmt(r["iou"]), _fmt(r["precision"]), _fmt(r["recall"]),
                      _fmt(r["pred_area_ha"], ".1f"), _fmt(r["ref_area_ha"], ".1f"), _fmt(r["valid_fraction"], ".0%"))
    console.print(table)
    o = report["overall"]
    console.print(f"overall Dice: micro {_fmt(o['micro']['dice'])}, macro {_fmt(o['macro']['dice'])}")
    console.print(f"report: {output.rstrip('/')}/report.html (also report.md, report.json, regions.csv, "
                  f"regions.gpkg styled by Dice for QGIS)")


@cli.command("run")
@click.argument("job", type=click.Path(path_type=Path))
@click.option("--wait", is_flag=True, help="If the job is already running, wait for it instead of exiting.")
@click.option("--force", is_flag=True, help="Run even if the latest results are up to date.")
def run_command(job: Path, wait: bool, force: bool) -> None:
    """Run a regional mapping job (configs/jobs/<region>.yaml): predict, clip, evaluate.

    Exit codes for schedulers: 0 done or up to date, 1 failed or already running, 2 bad input.
    """
    from wetmap.jobs import JobBusy, run_job

    try:
        result = run_job(job, wait=wait, force=force)
    except JobBusy as exc:
        click.echo(f"wetmap: {job}: {exc}", err=True)
        sys.exit(1)
    except WetmapError:
        raise
    except OSError as exc:
        from wetmap.io.outputs import write_failure

        failure = write_failure(getattr(exc, "filename", None) or job, exc)
        if failure is not None:
            raise failure from exc
        click.echo(f"wetmap: {job}: job failed: {type(exc).__name__}: {exc}".splitlines()[0], err=True)
        sys.exit(1)
    except Exception as exc:  # noqa: BLE001 - a scheduler needs exit 1 and one line; the log has the traceback
        click.echo(f"wetmap: {job}: job failed: {type(exc).__name__}: {exc}".splitlines()[0], err=True)
        sys.exit(1)
    if result.status == "up to date":
        console.print(f"up to date: {result.run_dir}")
        return
    metrics = result.manifest["metrics"]
    dice = f", micro Dice {metrics['dice_micro']:.3f}" if metrics.get("dice_micro") is not None else ""
    console.print(f"done: {result.run_dir} ({metrics['valid_fraction']:.0%} clear{dice})")


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    """Every warning as one line on stderr: wetmap's own as they are, other libraries' with their kind."""
    text = " ".join(str(message).split())
    if issubclass(category, WetmapWarning):
        click.echo(f"wetmap: warning: {text}", err=True)
    else:
        click.echo(f"wetmap: warning: {category.__name__}: {text}", err=True)


class _Held:
    """What C libraries printed to file descriptor 2, and whether to show it afterwards."""

    show = True


@contextlib.contextmanager
def _native_stderr_held() -> Iterator[_Held]:
    """Hold back what C libraries print straight to file descriptor 2 while a command runs.

    libtiff (inside GDAL) prints "_tiffWriteProc: No space left on device." there and PROJ
    "crs not found", past Python, before wetmap's one-line error says the same with the file's
    name. The held text is shown when the command ends, unless the body clears `show` (a user
    error, whose one line replaces it). Python's own stderr keeps writing live.
    """
    held = _Held()
    try:
        sys.stderr.flush()
        uses_fd2 = sys.stderr.fileno() == 2
    except (AttributeError, OSError, ValueError):  # stderr already captured elsewhere (a test)
        uses_fd2 = False
    saved = os.dup(2)
    python_stderr = sys.stderr
    live = os.fdopen(os.dup(saved), "w", buffering=1, encoding="utf-8", errors="replace") if uses_fd2 else None
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        sys.stderr = live or python_stderr
        try:
            yield held
        except BaseException:
            held.show = True  # a bug: what the libraries printed comes before the traceback
            raise
        finally:
            sys.stderr = python_stderr
            if live is not None:
                live.close()
            os.dup2(saved, 2)
            os.close(saved)
            if held.show:
                sink.seek(0)
                os.write(2, sink.read())


def main() -> None:
    """Entry point: one line and exit code 2 for bad input, a full disk or an unwritable place;
    tracebacks only for bugs."""
    from rasterio._err import CPLE_BaseError
    from rasterio.errors import NotGeoreferencedWarning, RasterioError

    from wetmap.io.outputs import write_failure

    warnings.showwarning = _show_warning
    warnings.filterwarnings("ignore", category=NotGeoreferencedWarning)  # open_raster says "no CRS" itself
    code, error = 0, None
    with _native_stderr_held() as held:
        try:
            code = cli.main(standalone_mode=False) or 0
        except WetmapError as exc:
            code, error = EXIT_BAD_INPUT, f"error: {exc}"
        except (RasterioError, CPLE_BaseError) as exc:  # GDAL refusing a file
            code, error = EXIT_BAD_INPUT, f"error: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        except OSError as exc:
            failure = write_failure(getattr(exc, "filename", None) or "output", exc)
            if failure is None:
                raise
            code, error = EXIT_BAD_INPUT, f"error: {failure}"
        except click.exceptions.Abort:
            code, error = 130, "interrupted"
        except click.UsageError as exc:
            where = f"{exc.ctx.info_name}: " if exc.ctx is not None and exc.ctx.parent is not None else ""
            code, error = EXIT_BAD_INPUT, f"error: {where}{' '.join(exc.format_message().split())} (see --help)"
        except click.ClickException as exc:
            code, error = exc.exit_code, f"error: {' '.join(exc.format_message().split())}"
        held.show = error is None or code == 130
    if error is not None:
        click.echo(f"wetmap: {error}", err=True)
    sys.exit(code)
